rule prepare_frozen_graph:
    input:
        get_graph_source,
    output:
        "resources/models/{precision}/frozen_inference_graph.pb",
    params:
        member=get_graph_member_option,
    log:
        "logs/prepare_frozen_graph/{precision}.log",
    threads: 1
    resources:
        mem_mb=4096,
        runtime="20m",
    conda:
        "../envs/tensorflow.yaml"
    shell:
        "python {SCRIPTS}/prepare_frozen_graph.py {input:q} {output:q} {params.member} > {log:q} 2>&1"


rule prepare_models:
    input:
        get_graph_targets(),
