rule extract_coco_images:
    input:
        downloaded(config["coco"]["images_archive"]),
    output:
        directory("resources/coco/val2017"),
    params:
        member=config["coco"]["images_member"],
    log:
        "logs/extract_coco_images.log",
    threads: 1
    resources:
        mem_mb=1024,
        runtime="1h",
    conda:
        "../envs/download.yaml"
    shell:
        "python {SCRIPTS}/extract_archive.py {input:q} {params.member:q} {output:q} > {log:q} 2>&1"


rule extract_coco_annotations:
    input:
        downloaded(config["coco"]["annotations_archive"]),
    output:
        "resources/coco/annotations/instances_val2017.json",
    params:
        member=config["coco"]["annotations_member"],
    log:
        "logs/extract_coco_annotations.log",
    threads: 1
    resources:
        mem_mb=1024,
        runtime="30m",
    conda:
        "../envs/download.yaml"
    shell:
        "python {SCRIPTS}/extract_archive.py {input:q} {params.member:q} {output:q} > {log:q} 2>&1"


rule write_empty_annotations:
    output:
        annotations="resources/coco/empty/empty.json",
        images=directory("resources/coco/empty/images"),
    log:
        "logs/write_empty_annotations.log",
    threads: 1
    resources:
        mem_mb=256,
        runtime="5m",
    conda:
        "../envs/download.yaml"
    shell:
        "python {SCRIPTS}/write_empty_annotations.py {output.annotations:q} {output.images:q} > {log:q} 2>&1"
