# The second engine: a TensorFlow model's frozen graph converted to OpenVINO IR, checked against
# TensorFlow on one image; INT8 IRs quantized from it by NNCF. The benchmark, accuracy and
# LoadGen rules run an openvino model's IR as they run a graph (its engine in its runtime flags).


rule convert_to_openvino:
    input:
        graph="resources/models/{model}/frozen_inference_graph.pb",
        images="resources/coco/val2017",
    output:
        model="resources/openvino/{model}/model.xml",
        weights="resources/openvino/{model}/model.bin",
        report="resources/openvino/{model}/conversion.json",
    log:
        log_file("convert_to_openvino"),
    benchmark:
        benchmark_file("convert_to_openvino")
    wildcard_constraints:
        model=one_of(PLAN.openvino_converted),
    priority: PLAN.graph_priority()
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="1h",
    params:
        script=script("convert_to_openvino.py"),
        # Another OpenVINO converts anew (Snakemake reruns a job whose params changed).
        openvino=OPENVINO_VERSION,
        min_agreement=config["openvino"]["min_agreement"],
        interface=get_interface_options,
        # As a detection's: the check's detections do not depend on the thread count.
        runtime=get_detection_runtime_options,
        thread_options=get_detection_thread_options,
    shell:
        "python {params.script} --graph {input.graph:q} --check-images {input.images:q}"
        " --output-dir resources/openvino/{wildcards.model} --min-agreement {params.min_agreement}"
        " {params.interface} {params.runtime} {params.thread_options} > {log:q} 2>&1"


rule quantize_openvino:
    input:
        unpack(get_openvino_quantize_inputs),
    output:
        model="resources/openvino/{model}/model.xml",
        weights="resources/openvino/{model}/model.bin",
        report="resources/openvino/{model}/quantization.json",
    log:
        log_file("quantize_openvino"),
    benchmark:
        benchmark_file("quantize_openvino")
    wildcard_constraints:
        model=one_of(PLAN.openvino_quantized),
    priority: PLAN.graph_priority()
    conda:
        "../envs/tensorflow.yaml"
    threads: get_inference_threads()
    resources:
        mem_mb=get_inference_mem_mb,
        runtime="2h",
    params:
        script=script("quantize_openvino.py"),
        openvino=OPENVINO_VERSION,
        options=get_openvino_quantize_options,
    shell:
        "python {params.script} --model {input.model:q} --images {input.images:q}"
        " --output-dir resources/openvino/{wildcards.model} {params.options} > {log:q} 2>&1"
