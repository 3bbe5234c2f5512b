"""The summary's one document: which tables, notes and pictures, in what order. Rendered to
Markdown and HTML by document.py."""

from detbench.intervals import METHOD
from detbench.report.document import Bullets, Document, Heading, Image, Paragraph, Table
from detbench.report.sections import (
    COST_HEADER,
    LOADGEN_ACCURACY_HEADER,
    LOADGEN_HEADER,
    MACHINE_HEADER,
    TUNING_HEADER,
    cost_rows,
    drift_rows,
    instance_rows,
    loadgen_accuracy_rows,
    loadgen_rows,
    machine_rows,
    profile_rows,
    tuning_rows,
)
from detbench.report.tables import MATRIX_HEADER, conversion_detail, matrix_rows, table_rows

GALLERY = "gallery"
OPENING_PLOT = "speedup_vs_accuracy"
GALLERY_NOTE = (
    "The first scored images with ground truth, in image id order: the ground truth, then each model's "
    "detections at score 0.5 or more, with class and score."
)
MATRIX_NOTE = (
    "Each model beside its reference (its architecture's FP32): speed-up is throughput over the "
    "reference's, AP lost the reference's standard AP minus the model's. Legacy AP is the recipe's "
    "evaluator; published AP is Intel's, from its zoo's sample logs. The accuracy gate is MLPerf's kind of "
    "target: a share of the reference's figure (accuracy_gate in the config). Latency, throughput and speed-up: "
    f"the {METHOD}, in brackets; a speed-up whose interval holds 1.0 reads no difference measured."
)
PROFILE_NOTE = (
    "Op time summed over traced steps run after the timed ones, by the name scope of each node "
    "(fused oneDNN kernels keep their scope), per image. Ops overlap little with one inter-op thread, "
    "so the total is close to a step's latency."
)
INSTANCES_NOTE = (
    "N copies of the graph on disjoint core sets of the node, each over its own images, started "
    "together; throughput summed over the window in which all ran, warm-up excluded in each."
)
DRIFT_NOTE = (
    "Cosine similarity of each model's activations with its reference's on the same images, at the end of "
    "each ResNet block (each MobileNet layer or MobileNetV2 block) and at the heads (the JSON and the plot have "
    "every unit). It accumulates: the largest drop from the layer upstream is where the error comes in."
)
LOADGEN_NOTE = (
    "MLPerf LoadGen driving the benchmark's session, images and settings (loadgen in the config): SingleStream's "
    "latency percentile, MultiStream's per-query percentile, Server's highest Poisson rate whose latency "
    "percentile stays within the bound (a bisection of LoadGen runs), Offline's throughput. Figures and validity "
    "are LoadGen's own, from its detail log; a run too short for MLPerf's rules reads INVALID, with the reason."
)
LOADGEN_ACCURACY_NOTE = (
    "LoadGen's accuracy mode over the accuracy images: its mlperf_log_accuracy.json scored as evaluate_accuracy "
    "scores, beside the accuracy stage's AP."
)
MACHINE_NOTE = (
    "The machine while each benchmark's steps were timed: steal time (other guests of a hypervisor) and "
    "other processes' busy time as shares of the CPU, the load, the free memory and how much the step "
    "times varied. A run above benchmark.noise's limits is marked NOISY: compare its figures with care, "
    "or rerun it on a quiet machine."
)
TUNING_NOTE = (
    "Neural Compressor's accuracy-aware tuning: each trial's COCO AP on the tuning images and the "
    "convolutions it kept in FP32. In layer drift's order (fallback_order: largest_drift), trial 1 "
    "quantizes everything, and each next trial keeps one more unit in FP32, the one whose cosine with "
    "FP32 fell most in trial 1."
)
COST_NOTE = (
    "From Snakemake's benchmark files (benchmarks/): wall time summed over a stage's jobs, "
    "peak resident memory the largest of them."
)
FOOTER = (
    "AP figures are pycocotools COCOeval (bbox) against instances_val2017.json. The legacy rows "
    "reproduce how the published numbers were computed: ground truth from the TFRecord, crowd "
    "boxes scored as ordinary objects, areas from normalized boxes (every object 'small')."
)


def title(models):
    architectures = ", ".join(dict.fromkeys(model["architecture"] for model in models.values()))
    return f"Object detection on COCO val2017: {architectures}"


def summary_document(results, links, cost_paths=None, conversion=None):
    """The whole summary. `links`: {plot or gallery name: path relative to the summary};
    `conversion`: the TFRecord's summary.json (annotations the conversion dropped)."""
    models = results.models
    header, rows, details = table_rows(
        models, results.benchmarks, results.accuracies, results.quantizations, results.agreements
    )
    if conversion is not None and (detail := conversion_detail(conversion)):
        details.append(detail)
    document = Document(title(models))
    matrix = matrix_rows(models, results.benchmarks, results.accuracies, results.quantizations, results.gate)
    document.blocks += [Paragraph(MATRIX_NOTE), Table(MATRIX_HEADER, matrix)]
    if OPENING_PLOT in links:
        document.blocks.append(Image(OPENING_PLOT, links[OPENING_PLOT]))
    if GALLERY in links:
        document.blocks += [Heading("Detections by model"), Paragraph(GALLERY_NOTE), Image(GALLERY, links[GALLERY])]
    document.blocks += [Heading("Every figure"), Table(header, rows)]
    if details:
        document.blocks.append(Bullets(details))
    document.section("Where the time goes", PROFILE_NOTE, Table(*profile_rows(models, results.benchmarks)))
    instances = Table(*instance_rows(models, results.benchmarks, results.instances))
    document.section("Throughput by instances", INSTANCES_NOTE, instances)
    document.section(
        "MLPerf LoadGen scenarios", LOADGEN_NOTE, Table(LOADGEN_HEADER, loadgen_rows(models, results.loadgen))
    )
    accuracy_rows = loadgen_accuracy_rows(models, results.loadgen_accuracies, results.accuracies)
    document.section("LoadGen accuracy mode", LOADGEN_ACCURACY_NOTE, Table(LOADGEN_ACCURACY_HEADER, accuracy_rows))
    document.section("Layer drift", DRIFT_NOTE, Table(*drift_rows(models, results.drifts)))
    machine = Table(MACHINE_HEADER, machine_rows(models, results.benchmarks))
    document.section("Machine", MACHINE_NOTE, machine)
    document.section("Tuning history", TUNING_NOTE, Table(TUNING_HEADER, tuning_rows(results.quantizations)))
    document.section("Cost per stage", COST_NOTE, Table(COST_HEADER, cost_rows(cost_paths or {})))
    document.blocks.append(Paragraph(FOOTER))
    document.blocks += [Image(name, path) for name, path in links.items() if name not in (GALLERY, OPENING_PLOT)]
    return document
