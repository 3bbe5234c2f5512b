# Where a model loses accuracy against its reference (INT8 and BF16 against FP32).


rule compare_with_reference:
    input:
        reference=get_reference_detections,
        candidate="results/accuracy/{model}_detections.json",
    output:
        "results/diagnostics/{model}_agreement.json",
    log:
        log_file("compare_with_reference"),
    benchmark:
        benchmark_file("compare_with_reference")
    wildcard_constraints:
        model=one_of(PLAN.compared_models),
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
        reference=get_reference_graph,
        candidate=get_graph,
        images="resources/coco/val2017",
    output:
        "results/diagnostics/{model}_layer_drift.json",
    log:
        log_file("measure_layer_drift"),
    benchmark:
        benchmark_file("measure_layer_drift")
    wildcard_constraints:
        model=one_of(PLAN.drift_models),
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        # both graphs at once: the reference's and the model's
        mem_mb=get_layer_drift_mem_mb,
        runtime="1h",
    params:
        script=script("measure_layer_drift.py"),
        images=config["diagnostics"]["layer_drift_images"],
        interface=get_interface_options,
        precision=get_drift_options,
    shell:
        "TF_ENABLE_ONEDNN_OPTS=1 python {params.script} --reference {input.reference:q}"
        " --candidate {input.candidate:q} --images {input.images:q} --count {params.images}"
        " --threads {threads} {params.interface} {params.precision} --output {output:q}"
        " > {log:q} 2>&1"
