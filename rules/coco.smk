rule extract_coco_images:
    input:
        downloaded(config["coco"]["images_archive"]),
    output:
        directory("resources/coco/val2017"),
    log:
        log_file("extract_coco_images"),
    benchmark:
        benchmark_file("extract_coco_images")
    conda:
        "../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime="1h",
    params:
        script=script("extract_archive.py"),
        member=config["coco"]["images_member"],
    shell:
        "python {params.script} {input:q} {params.member:q} {output:q} > {log:q} 2>&1"


rule extract_coco_annotations:
    input:
        downloaded(config["coco"]["annotations_archive"]),
    output:
        "resources/coco/annotations/instances_val2017.json",
    log:
        log_file("extract_coco_annotations"),
    benchmark:
        benchmark_file("extract_coco_annotations")
    conda:
        "../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime="30m",
    params:
        script=script("extract_archive.py"),
        member=config["coco"]["annotations_member"],
    shell:
        "python {params.script} {input:q} {params.member:q} {output:q} > {log:q} 2>&1"


rule write_empty_annotations:
    output:
        annotations="resources/coco/empty/empty.json",
        images=directory("resources/coco/empty/images"),
    log:
        log_file("write_empty_annotations"),
    benchmark:
        benchmark_file("write_empty_annotations")
    localrule: True
    conda:
        "../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=256,
        runtime="5m",
    params:
        script=script("write_empty_annotations.py"),
    shell:
        "python {params.script} {output.annotations:q} {output.images:q} > {log:q} 2>&1"
