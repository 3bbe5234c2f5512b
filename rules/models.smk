rule prepare_frozen_graph:
    input:
        unpack(get_graph_source),
    output:
        "resources/models/{model}/frozen_inference_graph.pb",
    log:
        log_file("prepare_frozen_graph"),
    benchmark:
        benchmark_file("prepare_frozen_graph")
    wildcard_constraints:
        model=one_of(PLAN.downloaded_models),
    conda:
        "../envs/tensorflow.yaml"
    threads: 1
    resources:
        # 0.9 GB for the twin's 217 MB FP32 graph
        mem_mb=2000,
        runtime="20m",
    params:
        script=script("prepare_frozen_graph.py"),
        member=get_graph_member_option,
        preprocess=get_preprocess_options,
        interface=get_interface_options,
    shell:
        "python {params.script} {input.graph:q} {output:q} {params.member} {params.preprocess}"
        " {params.interface} > {log:q} 2>&1"


rule quantize_graph:
    input:
        unpack(get_quantize_inputs),
    output:
        graph="resources/models/{model}/frozen_inference_graph.pb",
        report="resources/models/{model}/quantization.json",
    log:
        log_file("quantize_graph"),
    benchmark:
        benchmark_file("quantize_graph")
    wildcard_constraints:
        model=one_of(PLAN.quantized_models),
    priority: PLAN.graph_priority()
    conda:
        "../envs/quantize.yaml"
    threads: get_inference_threads()
    resources:
        # 5.5 GB quantizing the full-size twin
        mem_mb=8000,
        runtime="2h",
    params:
        script=script("quantize_graph.py"),
        options=get_quantize_options,
        tuning=get_tuning_inputs_option,
        interface=get_interface_options,
    shell:
        "TF_ENABLE_ONEDNN_OPTS=1 python {params.script} --graph {input.graph:q}"
        " --images {input.images:q} --output {output.graph:q} --report {output.report:q}"
        " {params.options} {params.tuning} {params.interface} > {log:q} 2>&1"


rule prepare_models:
    input:
        PLAN.graph_targets(),
