"""The stages' shared library: one job per module.

common (one-line errors, atomic outputs), config_schema (the config file against its schema),
registry (the model registry's rules), plan (what the workflow runs, from the config),
job_runtime (threads, pinning, oneDNN), detection_graph (frozen graphs and their interface),
coco_data (COCO records and results), box_scoring (COCO AP), performance (profile, FLOPs,
roofline), residual_bias (a graph rewrite before quantization).
"""
