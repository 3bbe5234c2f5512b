rule make_report:
    input:
        benchmarks=get_benchmark_results(),
        instances=get_instance_results(),
        accuracies=get_accuracy_results(),
        costs=get_stage_benchmarks(),
        quantization=get_quantization_reports(),
        agreements=get_agreement_results(),
        layer_drift=get_layer_drift_results(),
        # its summary.json: how many annotations the conversion dropped
        records="resources/coco_tfrecord",
    output:
        summary=report("results/report/summary.md", category="Summary"),
        html=report("results/report/summary.html", category="Summary"),
        latency=report("results/report/latency_per_step.png", category="Benchmark"),
        histogram=report("results/report/latency_histogram.png", category="Benchmark"),
        profile=report("results/report/time_by_model_part.png", category="Benchmark"),
        instances=report(
            "results/report/throughput_by_instances.png", category="Benchmark"
        ),
        precision=report("results/report/average_precision.png", category="Accuracy"),
        agreement=report(
            "results/report/detection_agreement.png", category="Diagnostics"
        ),
        drift=report("results/report/layer_drift.png", category="Diagnostics"),
    log:
        "logs/make_report.log",
    benchmark:
        "benchmarks/make_report.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        script=script("make_report.py"),
        references=get_published_reference(),
        output_dir=get_report_dir,
    shell:
        "python {params.script} --benchmarks {input.benchmarks:q} --accuracies {input.accuracies:q}"
        " --instances {input.instances:q}"
        " --costs {input.costs:q} --quantization {input.quantization:q}"
        " --agreements {input.agreements:q} --layer-drift {input.layer_drift:q}"
        " --references {params.references:q} --conversion {input.records:q}/summary.json"
        " --output-dir {params.output_dir:q} > {log:q} 2>&1"
