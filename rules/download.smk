rule download_file:
    output:
        f"{DOWNLOADS}/{{filename}}",
    log:
        log_file("download_file"),
    benchmark:
        benchmark_file("download_file")
    localrule: True
    conda:
        "../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=512,
        runtime="4h",
    params:
        script=script("download.py"),
        url=get_download_url,
        # what the file is (checksums, or the URL); url and options are how (see Untracked)
        identity=get_download_identity,
        options=get_download_options,
    shell:
        "python {params.script} {params.url:q} {output:q} {params.options} > {log:q} 2>&1"


rule download_inputs:
    input:
        PLAN.download_targets(),
