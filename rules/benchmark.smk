rule benchmark_graph:
    input:
        graph=get_graph,
        images="resources/coco/val2017",
    output:
        "results/benchmark/{model}.json",
    log:
        log_file("benchmark_graph"),
    benchmark:
        benchmark_file("benchmark_graph")
    priority: PLAN.repeat_priority(1)
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="2h",
    params:
        script=script("benchmark_graph.py"),
        benchmark=get_benchmark_options,
        interface=get_interface_options,
        runtime=get_runtime_options,
    shell:
        "python {params.script} --graph {input.graph:q} --image-dir {input.images:q}"
        " --output {output:q} {params.benchmark} {params.interface} {params.runtime}"
        " > {log:q} 2>&1"


rule benchmark_repeat:
    input:
        graph=get_graph,
        images="resources/coco/val2017",
    output:
        "results/benchmark/repeats/{model}-{repeat}.json",
    log:
        log_file("benchmark_repeat"),
    benchmark:
        benchmark_file("benchmark_repeat")
    wildcard_constraints:
        repeat=r"[2-9]|[1-9][0-9]+",
    priority: get_repeat_priority
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="2h",
    params:
        script=script("benchmark_graph.py"),
        benchmark=get_benchmark_options,
        interface=get_interface_options,
        runtime=get_runtime_options,
    shell:
        # Timing only: the first round has the profile and the roofline.
        "python {params.script} --graph {input.graph:q} --image-dir {input.images:q}"
        " --output {output:q} --repeat {wildcards.repeat} {params.benchmark}"
        " --profile-steps 0 --no-roofline {params.interface} {params.runtime} > {log:q} 2>&1"


rule benchmark_instances:
    input:
        graph=get_graph,
        images="resources/coco/val2017",
    output:
        "results/benchmark/instances/{model}-{instances}.json",
    log:
        log_file("benchmark_instances"),
    benchmark:
        benchmark_file("benchmark_instances")
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
        interface=get_interface_options,
        runtime=get_runtime_options,
    shell:
        "python {params.script} --instances {wildcards.instances} --graph {input.graph:q}"
        " --image-dir {input.images:q} --output {output:q} {params.benchmark}"
        " {params.interface} {params.runtime} > {log:q} 2>&1"


rule benchmark_all:
    input:
        PLAN.report_inputs()["benchmark"].values(),
        PLAN.report_inputs()["repeat"].values(),
        PLAN.report_inputs()["instances"].values(),
