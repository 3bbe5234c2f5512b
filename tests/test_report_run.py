"""The report of a finished demo run: every model and plot, Snakemake's report with captions,
the tuning history, and what a changed benchmark setting reruns."""

from pathlib import Path

from detbench.job_runtime import bf16_native

REPORT_PLOTS = (
    "speedup_vs_accuracy.png",
    "latency_per_step.png",
    "latency_histogram.png",
    "time_by_model_part.png",
    "average_precision.png",
    "detection_agreement.png",
    "layer_drift.png",
    "gallery.png",
)


def test_report_has_every_model_and_plots(finished_run):
    report = finished_run.workdir / "results/report"
    summary = (report / "summary.md").read_text()
    # Grouped by architecture, the reference last; each model against its reference.
    columns = "| int8 | int8_inc | bf16 | openvino_fp32 | openvino_int8 | openvino_bf16 | fp32 |"
    assert f"|  {columns}" in summary and "| Latency p50 (ms) |" in summary
    assert "| Architecture |" + " rfcn_resnet101 |" * 7 in summary
    assert "| Engine |" + " tensorflow |" * 3 + " openvino |" * 3 + " tensorflow |" in summary
    emulated = "" if bf16_native() else " (emulated)"
    assert f"| Precision | int8 | int8 | bf16{emulated} | fp32 | int8 | bf16{emulated} | fp32 |" in summary
    speedups = next(line for line in summary.splitlines() if line.startswith("| Speed-up over reference (throughput)"))
    assert speedups.count("] over fp32") == 6 and speedups.endswith("|  |")
    assert "| AP |" + " 0.875 |" * 7 in summary
    assert "| Legacy AP (recipe's evaluator) |" + " 0.844 |" * 7 in summary
    assert "| Reference detections reproduced |" + " 1.000 |" * 6 + "  |" in summary
    assert "int8_inc: quantized here with Intel Neural Compressor, 1 of 1 convolutions in INT8" in summary
    assert "drawn from val2017, the evaluation set" in summary
    assert "AP 0.347, AP50 0.532" in summary
    assert "<table>" in (report / "summary.html").read_text()
    for plot in REPORT_PLOTS:
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_snakemake_report_shows_the_results_with_captions(finished_run, tmp_path):
    """`snakemake --report` gives a browsable report: every reported output, with its caption."""
    report = tmp_path / "report.html"
    finished_run.run("--report", str(report))
    text = report.read_text()
    for name in ("summary.md", "summary.html", *REPORT_PLOTS):
        assert name in text, name
    captions = sorted((Path(__file__).parents[1] / "rules" / "captions").glob("*.rst"))
    assert len(captions) == 11
    for caption in captions:
        first_words = " ".join(caption.read_text().split()[:6]).replace("``", "")
        assert first_words in text, caption.name


def test_changing_number_of_steps_reruns_only_benchmarks_and_report(finished_run):
    finished_run.config["benchmark"]["number_of_steps"] = 41
    try:
        assert finished_run.planned_jobs() == {"benchmark_graph": 7, "benchmark_repeat": 7, "make_report": 1, "all": 1}
    finally:
        finished_run.config["benchmark"]["number_of_steps"] = 40


def test_another_core_count_reruns_the_benchmarks_and_no_detection(finished_run):
    """Detections do not depend on the thread count: no detection, scoring or diagnostic reruns
    for another --cores. The benchmarks do, and their JSON and the report say with how many."""
    assert finished_run.planned_jobs("--cores", "1") == {
        "benchmark_graph": 7,
        "benchmark_repeat": 7,
        "run_loadgen": 6,
        "make_report": 1,
        "all": 1,
    }
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    assert "2 intra-op threads" in summary


def test_report_shows_the_tuning_history():
    from detbench.report.sections import tuning_rows

    quantization = {
        "tuning": {
            "fp32_ap": 0.5,
            "chosen_trial": 2,
            "trials": [
                {"trial": 1, "ap": 0.4, "kept_in_fp32": []},
                {"trial": 2, "ap": 0.5, "kept_in_fp32": ["a", "b"]},
            ],
        }
    }
    assert tuning_rows({"int8_inc": quantization, "int8_plain": {"tuning": None}}) == [
        ("FP32", ["int8_inc", "0.5000", "", ""]),
        ("1", ["int8_inc", "0.4000", "0.2000", "none"]),
        ("2 (kept)", ["int8_inc", "0.5000", "0.0000", "a, b"]),
    ]
