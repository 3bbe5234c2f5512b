rule run_loadgen:
    input:
        graph=get_graph,
        images="resources/coco/val2017",
    output:
        result="results/loadgen/{model}/{scenario}.json",
        logs=directory("results/loadgen/{model}/{scenario}"),
    log:
        log_file("run_loadgen"),
    benchmark:
        benchmark_file("run_loadgen")
    wildcard_constraints:
        scenario="SingleStream|MultiStream|Server|Offline",
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="4h",
    params:
        script=script("run_loadgen.py"),
        settings=get_loadgen_options,
        interface=get_interface_options,
        runtime=get_runtime_options,
    shell:
        "python {params.script} --graph {input.graph:q} --image-dir {input.images:q}"
        " --scenario {wildcards.scenario} --output {output.result:q} --log-dir {output.logs:q}"
        " {params.settings} {params.interface} {params.runtime} > {log:q} 2>&1"


rule loadgen_accuracy:
    input:
        graph=get_graph,
        records="resources/coco_tfrecord",
        annotations="resources/coco/annotations/instances_val2017.json",
    output:
        result="results/loadgen/{model}/accuracy.json",
        logs=directory("results/loadgen/{model}/accuracy"),
    log:
        log_file("loadgen_accuracy"),
    benchmark:
        benchmark_file("loadgen_accuracy")
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="12h",
    params:
        script=script("run_loadgen.py"),
        settings=get_loadgen_options,
        max_images=config["accuracy"]["max_images"],
        interface=get_interface_options,
        runtime=get_runtime_options,
    shell:
        "python {params.script} --accuracy --graph {input.graph:q} --records {input.records:q}"
        " --annotations {input.annotations:q} --max-images {params.max_images}"
        " --output {output.result:q} --log-dir {output.logs:q}"
        " {params.settings} {params.interface} {params.runtime} > {log:q} 2>&1"


rule loadgen_all:
    input:
        PLAN.report_inputs()["loadgen"].values(),
        PLAN.report_inputs()["loadgen-accuracy"].values(),
