rule benchmark_graph:
    input:
        graph="resources/models/{precision}/frozen_inference_graph.pb",
        images="resources/coco/val2017",
    output:
        "results/benchmark/{precision}.json",
    log:
        "logs/benchmark_graph/{precision}.log",
    benchmark:
        "benchmarks/benchmark_graph/{precision}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="2h",
    params:
        script=script("benchmark_graph.py"),
        benchmark=get_benchmark_options,
        runtime=get_runtime_options,
    shell:
        "python {params.script} --graph {input.graph:q} --image-dir {input.images:q}"
        " --output {output:q} {params.benchmark} {params.runtime} > {log:q} 2>&1"


rule benchmark_instances:
    input:
        graph="resources/models/{precision}/frozen_inference_graph.pb",
        images="resources/coco/val2017",
    output:
        "results/benchmark/instances/{precision}-{instances}.json",
    log:
        "logs/benchmark_instances/{precision}-{instances}.log",
    benchmark:
        "benchmarks/benchmark_instances/{precision}-{instances}.tsv"
    wildcard_constraints:
        instances=r"[2-9]|[1-9][0-9]+",
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_instances_mem_mb,
        runtime="2h",
    params:
        script=script("benchmark_instances.py"),
        benchmark=get_benchmark_options,
        runtime=get_runtime_options,
    shell:
        "python {params.script} --instances {wildcards.instances} --graph {input.graph:q}"
        " --image-dir {input.images:q} --output {output:q} {params.benchmark} {params.runtime}"
        " > {log:q} 2>&1"


rule detect_objects:
    input:
        graph="resources/models/{precision}/frozen_inference_graph.pb",
        records="resources/coco_tfrecord",
    output:
        "results/accuracy/{precision}/detections-{shard}-of-{shards}.json",
    log:
        "logs/detect_objects/{precision}-{shard}-of-{shards}.log",
    benchmark:
        "benchmarks/detect_objects/{precision}-{shard}-of-{shards}.tsv"
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
        instances=Untracked(get_detection_instances()),
        checkpoint_every=get_checkpoint_interval(),
        runtime=get_runtime_options,
    shell:
        "python {params.script} --graph {input.graph:q} --records {input.records:q}"
        " --output {output:q} --max-images {params.max_images}"
        " --shard {wildcards.shard} --shards {wildcards.shards} --instances {params.instances}"
        " {params.runtime}"
        " --checkpoint-every {params.checkpoint_every} > {log:q} 2>&1"


rule evaluate_accuracy:
    input:
        shards=get_detection_shards,
        annotations="resources/coco/annotations/instances_val2017.json",
        records="resources/coco_tfrecord",
    output:
        metrics="results/accuracy/{precision}.json",
        detections="results/accuracy/{precision}_detections.json",
    log:
        "logs/evaluate_accuracy/{precision}.log",
    benchmark:
        "benchmarks/evaluate_accuracy/{precision}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: 1
    resources:
        # 1.7 GB peak for 5,000 images x 300 detections, standard and legacy
        # (tests/benchmarks/scoring.py); the rest is room for val2017's polygons
        mem_mb=3000,
        runtime="1h",
    params:
        script=script("evaluate_detections.py"),
    shell:
        "python {params.script} {input.shards:q} --annotations {input.annotations:q}"
        " --records {input.records:q} --detections {output.detections:q}"
        " --metrics {output.metrics:q} > {log:q} 2>&1"


rule compare_with_fp32:
    input:
        reference="results/accuracy/fp32_detections.json",
        candidate="results/accuracy/{precision}_detections.json",
    output:
        "results/diagnostics/{precision}_agreement.json",
    log:
        "logs/compare_with_fp32/{precision}.log",
    benchmark:
        "benchmarks/compare_with_fp32/{precision}.tsv"
    wildcard_constraints:
        precision=one_of(COMPARED_MODELS),
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="30m",
    params:
        script=script("compare_detections.py"),
    shell:
        "python {params.script} --reference {input.reference:q} --candidate {input.candidate:q}"
        " --output {output:q} > {log:q} 2>&1"


rule measure_layer_drift:
    input:
        reference="resources/models/fp32/frozen_inference_graph.pb",
        candidate="resources/models/{precision}/frozen_inference_graph.pb",
        images="resources/coco/val2017",
    output:
        "results/diagnostics/{precision}_layer_drift.json",
    log:
        "logs/measure_layer_drift/{precision}.log",
    benchmark:
        "benchmarks/measure_layer_drift/{precision}.tsv"
    wildcard_constraints:
        precision=one_of(COMPARED_MODELS),
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        # both graphs at once: FP32's and the INT8 one's
        mem_mb=get_layer_drift_mem_mb,
        runtime="1h",
    params:
        script=script("measure_layer_drift.py"),
        images=config["diagnostics"]["layer_drift_images"],
    shell:
        "TF_ENABLE_ONEDNN_OPTS=1 python {params.script} --reference {input.reference:q}"
        " --candidate {input.candidate:q} --images {input.images:q} --count {params.images}"
        " --threads {threads} --output {output:q} > {log:q} 2>&1"


rule benchmark_all:
    input:
        get_benchmark_results(),
        get_instance_results(),


rule evaluate_all:
    input:
        get_accuracy_results(),
