rule detect_objects:
    input:
        graph=get_graph,
        records="resources/coco_tfrecord",
    output:
        "results/accuracy/{model}/detections-{shard}-of-{shards}.json",
    log:
        log_file("detect_objects"),
    benchmark:
        benchmark_file("detect_objects")
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_detection_mem_mb,
        runtime="12h",
    params:
        script=script("detect_objects.py"),
        max_images=config["accuracy"]["max_images"],
        # The detections do not depend on it: no rerun when it changes.
        instances=Untracked(PLAN.detection_instances()),
        checkpoint_every=get_checkpoint_interval(),
        interface=get_interface_options,
        runtime=get_detection_runtime_options,
        thread_options=get_detection_thread_options,
    shell:
        "python {params.script} --graph {input.graph:q} --records {input.records:q}"
        " --output {output:q} --max-images {params.max_images}"
        " --shard {wildcards.shard} --shards {wildcards.shards} --instances {params.instances}"
        " {params.interface} {params.runtime} {params.thread_options}"
        " --checkpoint-every {params.checkpoint_every} > {log:q} 2>&1"


rule evaluate_accuracy:
    input:
        shards=get_detection_shards,
        annotations="resources/coco/annotations/instances_val2017.json",
        records="resources/coco_tfrecord",
    output:
        metrics="results/accuracy/{model}.json",
        detections="results/accuracy/{model}_detections.json",
    log:
        log_file("evaluate_accuracy"),
    benchmark:
        benchmark_file("evaluate_accuracy")
    conda:
        "../envs/tensorflow.yaml"
    threads: 1
    resources:
        # 1.7 GB peak for 5,000 images x 300 detections, standard and legacy
        # (tools/measure/scoring.py); the rest is room for val2017's polygons
        mem_mb=3000,
        runtime="1h",
    params:
        script=script("evaluate_detections.py"),
        legacy=get_legacy_options,
    shell:
        "python {params.script} {input.shards:q} --annotations {input.annotations:q}"
        " --records {input.records:q} --detections {output.detections:q}"
        " --metrics {output.metrics:q} {params.legacy} > {log:q} 2>&1"


rule evaluate_all:
    input:
        PLAN.report_inputs()["accuracy"].values(),
