rule download_file:
    output:
        f"{DOWNLOADS}/{{filename}}",
    params:
        url=get_download_url,
        options=get_download_options,
    log:
        "logs/download_file/{filename}.log",
    threads: 1
    resources:
        mem_mb=512,
        runtime="4h",
    localrule: True
    conda:
        "../envs/download.yaml"
    shell:
        "python {SCRIPTS}/download.py {params.url:q} {output:q} {params.options} > {log:q} 2>&1"


rule download_inputs:
    input:
        get_download_targets(),
