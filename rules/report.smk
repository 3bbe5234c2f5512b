rule make_report:
    input:
        [path for paths in PLAN.report_inputs().values() for path in paths.values()],
        # its summary.json: how many annotations the conversion dropped
        records="resources/coco_tfrecord",
        gallery="results/report/gallery.png",
    output:
        summary=report(
            "results/report/summary.md",
            caption="captions/summary.rst",
            category="Summary",
        ),
        html=report(
            "results/report/summary.html",
            caption="captions/summary.rst",
            category="Summary",
        ),
        speedup_vs_accuracy=report(
            "results/report/speedup_vs_accuracy.png",
            caption="captions/speedup_vs_accuracy.rst",
            category="Summary",
        ),
        latency_per_step=report(
            "results/report/latency_per_step.png",
            caption="captions/latency_per_step.rst",
            category="Benchmark",
        ),
        latency_histogram=report(
            "results/report/latency_histogram.png",
            caption="captions/latency_histogram.rst",
            category="Benchmark",
        ),
        time_by_model_part=report(
            "results/report/time_by_model_part.png",
            caption="captions/time_by_model_part.rst",
            category="Benchmark",
        ),
        throughput_by_instances=report(
            "results/report/throughput_by_instances.png",
            caption="captions/throughput_by_instances.rst",
            category="Benchmark",
        ),
        average_precision=report(
            "results/report/average_precision.png",
            caption="captions/average_precision.rst",
            category="Accuracy",
        ),
        detection_agreement=report(
            "results/report/detection_agreement.png",
            caption="captions/detection_agreement.rst",
            category="Diagnostics",
        ),
        layer_drift=report(
            "results/report/layer_drift.png",
            caption="captions/layer_drift.rst",
            category="Diagnostics",
        ),
    log:
        log_file("make_report"),
    benchmark:
        benchmark_file("make_report")
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        script=script("make_report.py"),
        models=json.dumps(PLAN.report_models()),
        inputs=PLAN.report_arguments(),
        plots=get_plot_outputs,
    shell:
        "python {params.script} --models {params.models:q} {params.inputs}"
        " --conversion {input.records:q}/summary.json"
        " --gallery {input.gallery:q} --summary {output.summary:q} --html {output.html:q}"
        " --plot {params.plots}"
        " > {log:q} 2>&1"


rule draw_gallery:
    input:
        images="resources/coco/val2017",
        annotations="resources/coco/annotations/instances_val2017.json",
        detections=PLAN.gallery_detections().values(),
    output:
        report(
            "results/report/gallery.png",
            caption="captions/gallery.rst",
            category="Accuracy",
        ),
    log:
        log_file("draw_gallery"),
    benchmark:
        benchmark_file("draw_gallery")
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        # one model's detections at a time: 236 MB of JSON on val2017, as evaluate_accuracy reads
        mem_mb=3000,
        runtime="10m",
    params:
        script=script("draw_gallery.py"),
        options=PLAN.gallery_options(),
    shell:
        "python {params.script} --images {input.images:q} --annotations {input.annotations:q}"
        " {params.options} --output {output:q} > {log:q} 2>&1"
