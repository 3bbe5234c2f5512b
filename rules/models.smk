rule prepare_frozen_graph:
    input:
        get_graph_source,
    output:
        "resources/models/{precision}/frozen_inference_graph.pb",
    log:
        "logs/prepare_frozen_graph/{precision}.log",
    benchmark:
        "benchmarks/prepare_frozen_graph/{precision}.tsv"
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
    shell:
        "python {params.script} {input:q} {output:q} {params.member} > {log:q} 2>&1"


rule prepare_models:
    input:
        get_graph_targets(),
