rule checkout_tensorflow_models:
    output:
        directory("resources/tensorflow_models"),
    log:
        log_file("checkout_tensorflow_models"),
    benchmark:
        benchmark_file("checkout_tensorflow_models")
    localrule: True
    conda:
        "../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime="30m",
    params:
        script=script("checkout_tensorflow_models.py"),
        repository=config["tensorflow_models"]["repository"],
        commit=config["tensorflow_models"]["commit"],
    shell:
        "python {params.script} {params.repository:q} {params.commit} {output:q}"
        " > {log:q} 2>&1"


rule convert_coco_to_tfrecord:
    input:
        models="resources/tensorflow_models",
        images="resources/coco/val2017",
        annotations="resources/coco/annotations/instances_val2017.json",
        empty_annotations="resources/coco/empty/empty.json",
        empty_images="resources/coco/empty/images",
    output:
        directory("resources/coco_tfrecord"),
    log:
        log_file("convert_coco_to_tfrecord"),
    benchmark:
        benchmark_file("convert_coco_to_tfrecord")
    conda:
        "../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=4096,
        runtime="2h",
    params:
        script=script("convert_coco_to_tfrecord.py"),
    shell:
        "python {params.script} --models-dir {input.models:q}"
        " --image-dir {input.images:q} --annotations {input.annotations:q}"
        " --empty-annotations {input.empty_annotations:q} --empty-image-dir {input.empty_images:q}"
        " --output-dir {output:q} > {log:q} 2>&1"
