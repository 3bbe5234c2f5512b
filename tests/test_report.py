"""The report from keyed results: columns grouped by architecture, each model against its own
reference, plots drawn where they are asked for, costs in the order given."""

import json
import subprocess
import sys

import pytest
from helpers import SCRIPTS
from make_report import make_report

from detbench.coco_data import METRICS
from detbench.common import StageError
from detbench.report.results import Results, column_order
from detbench.report.sections import profile_rows
from detbench.report.tables import matrix_rows, table_rows

REGISTRY = {
    "rfcn_fp32": {"architecture": "rfcn", "precision": "fp32", "reference": None, "published": {"AP": "0.347"}},
    "rfcn_int8": {"architecture": "rfcn", "precision": "int8", "reference": "rfcn_fp32", "published": {}},
    "ssd_fp32": {"architecture": "ssd", "precision": "fp32", "reference": None, "published": {}},
    "ssd_bf16": {"architecture": "ssd", "precision": "bf16", "reference": "ssd_fp32", "published": {}},
    "ssd_int8": {"architecture": "ssd", "precision": "int8", "reference": "ssd_fp32", "published": {}},
}


def benchmark(throughput, precision="fp32", emulated=False):
    """A benchmark result as benchmark_graph.py writes it, with what the report reads."""
    latency = 1000 / throughput
    return {
        "latency_ms": {"p50": latency, "p90": latency, "p99": latency},
        "throughput_images_per_second": throughput,
        "step_seconds": [latency / 1000] * 4,
        "warmup_steps": 1,
        "measured_steps": 3,
        "batch_size": 1,
        "image_size": None,
        "images_resized": False,
        "runtime": {"intra_op_threads": 2, "tcmalloc": None},
        "onednn": True,
        "tensorflow_version": "2.21.0",
        "cpu_model": "a CPU",
        "cpu_flags": ["avx512_bf16"],
        "precision": precision,
        "emulated": emulated,
        "profile": None,
        "roofline": None,
        "probe": None,
        "bfloat16": {"op_time_fraction": 0.5 if precision == "bf16" else 0.0},
    }


RESULTS = {
    "rfcn_fp32": benchmark(1.0),
    "rfcn_int8": benchmark(3.0, "int8"),
    "ssd_fp32": benchmark(20.0),
    "ssd_int8": benchmark(30.0, "int8"),
    "ssd_bf16": benchmark(10.0, "bf16", emulated=True),
}


def test_columns_group_by_architecture_with_each_reference_last():
    assert column_order(REGISTRY) == ["rfcn_int8", "rfcn_fp32", "ssd_bf16", "ssd_int8", "ssd_fp32"]


def test_each_model_is_compared_with_its_own_reference():
    header, rows, details = table_rows(REGISTRY, RESULTS, {})
    table = dict(rows)
    assert header == ["", "rfcn_int8", "rfcn_fp32", "ssd_bf16", "ssd_int8", "ssd_fp32"]
    assert table["Speed-up over reference (throughput)"] == [
        "3.00x over rfcn_fp32",
        "",
        "0.50x over ssd_fp32",
        "1.50x over ssd_fp32",
        "",
    ]
    assert table["Precision"] == ["int8", "fp32", "bf16 (emulated)", "int8", "fp32"]
    assert table["Op time in bfloat16 (traced)"] == ["0%", "0%", "50%", "0%", "0%"]
    assert table["Published (Intel)"] == ["n/a", "AP 0.347", "n/a", "n/a", "n/a"]
    assert any(line.startswith("ssd_bf16: BF16 emulated by oneDNN") for line in details)
    assert any("a CPU (avx512_bf16)" in line for line in details)


def accuracy(ap, images=24, legacy_images=None):
    """An accuracy result as evaluate_detections.py writes it, with what the report reads."""
    return {
        "images": images,
        "detections": 10 * images,
        "legacy_images": legacy_images or images,
        "standard": dict.fromkeys(METRICS, ap),
        "legacy": {**dict.fromkeys(METRICS, ap), "AP": ap - 0.01},
    }


ACCURACIES = {
    "rfcn_fp32": accuracy(0.35),
    "rfcn_int8": accuracy(0.32),
    "ssd_fp32": accuracy(0.23, legacy_images=20),
    "ssd_int8": accuracy(0.17, legacy_images=20),
}


def test_the_matrix_gives_each_model_its_speedup_and_ap_lost_against_its_reference():
    rows = dict(matrix_rows(REGISTRY, RESULTS, ACCURACIES))
    assert list(rows) == ["rfcn_fp32", "rfcn_int8", "ssd_fp32", "ssd_bf16", "ssd_int8"]
    # Without an accuracy gate, its column is empty.
    assert rows["rfcn_fp32"] == [
        "rfcn",
        "fp32",
        "tensorflow",
        "1000.00",
        "1.00",
        "0.350",
        "0.340",
        "0.347",
        "reference",
        "",
        "",
        "",
    ]
    assert rows["rfcn_int8"][8:] == ["3.00x over rfcn_fp32", "", "0.030", ""]
    assert rows["ssd_int8"][6] == "0.160 (first 20)" and rows["ssd_int8"][8:] == [
        "1.50x over ssd_fp32",
        "",
        "0.060",
        "",
    ]
    # No accuracy for ssd_bf16: its speed-up still, its AP not.
    assert rows["ssd_bf16"][1] == "bf16 (emulated)" and rows["ssd_bf16"][5:] == [
        "n/a",
        "n/a",
        "n/a",
        "0.50x over ssd_fp32",
        "",
        "n/a",
        "",
    ]


def test_each_architecture_is_profiled_by_its_own_parts():
    results = {name: dict(result) for name, result in RESULTS.items()}
    rfcn_parts = {"first_stage_feature_extractor": 600.0, "second_stage_feature_extractor": 300.0, "other": 100.0}
    ssd_parts = {"feature_extractor": 30.0, "postprocessing": 15.0, "other": 5.0}
    for name, parts in (("rfcn_fp32", rfcn_parts), ("ssd_fp32", ssd_parts)):
        results[name]["profile"] = {"by_part_ms": parts, "op_time_ms": sum(parts.values())}
    ssd_int8 = {"feature_extractor": 10.0, "postprocessing": 15.0, "other": 5.0}
    results["ssd_int8"]["profile"] = {"by_part_ms": ssd_int8, "op_time_ms": 30.0}
    header, rows = profile_rows(REGISTRY, {name: results[name] for name in ("rfcn_fp32", "ssd_fp32", "ssd_int8")})
    assert header == ["Model part (ms per image)", "rfcn_fp32", "ssd_int8", "ssd_fp32", "ssd_int8 over ssd_fp32"]
    assert [label for label, _ in rows] == [
        "first_stage_feature_extractor",
        "second_stage_feature_extractor",
        "feature_extractor",
        "postprocessing",
        "other",
        "total",
    ]
    table = dict(rows)
    assert table["feature_extractor"] == ["", "10.0", "30.0", "3.00x"]
    assert table["first_stage_feature_extractor"] == ["600.0", "", "", ""]
    assert table["total"] == ["1000.0", "30.0", "50.0", "1.67x"]


def test_plots_are_drawn_where_asked_and_linked_from_the_summary(tmp_path):
    results = Results(REGISTRY, RESULTS, ACCURACIES)
    plots = {
        "latency_per_step": tmp_path / "plots" / "steps.png",
        "average_precision": tmp_path / "ap.png",
        "speedup_vs_accuracy": tmp_path / "speedup.png",
    }
    costs = {
        "download_file:all:a.zip": tmp_path / "a.tsv",
        "download_file:all:b.zip": tmp_path / "b.tsv",
        "benchmark_graph:ssd_int8": tmp_path / "c.tsv",
    }
    for index, path in enumerate(costs.values()):
        path.write_text(f"s\tmax_rss\n{index + 1}.0\t{100 * (index + 1)}\n")
    (tmp_path / "plots").mkdir()
    make_report(results, tmp_path / "summary.md", tmp_path / "summary.html", plots, costs)
    summary = (tmp_path / "summary.md").read_text()
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![latency_per_step](plots/steps.png)" in summary and "![average_precision](ap.png)" in summary
    assert summary.startswith("# Object detection on COCO val2017: rfcn, ssd\n")
    # The matrix and the speed-up plot open the report, before the full table.
    lines = summary.splitlines()
    assert lines[4].startswith("| Model | Architecture | Precision |") and lines[6].startswith("| rfcn_fp32 | rfcn |")
    assert lines.index("![speedup_vs_accuracy](speedup.png)") < lines.index("## Every figure")
    assert "| download_file | all | 2 | 3.0 | 200 |\n| benchmark_graph | ssd_int8 | 1 | 3.0 | 300 |" in summary
    with pytest.raises(Exception, match="no such plot: roc_curve"):
        make_report(results, tmp_path / "s.md", tmp_path / "s.html", {"roc_curve": tmp_path / "r.png"})


def test_the_script_takes_keyed_inputs_and_names_bad_ones(tmp_path):
    path = tmp_path / "rfcn_fp32.json"
    path.write_text(json.dumps(RESULTS["rfcn_fp32"]))
    models = json.dumps({"rfcn_fp32": REGISTRY["rfcn_fp32"]})
    common = [
        sys.executable,
        str(SCRIPTS / "make_report.py"),
        "--models",
        models,
        "--summary",
        tmp_path / "s.md",
        "--html",
        tmp_path / "s.html",
    ]
    run = subprocess.run([*map(str, common), "--benchmark", f"rfcn_fp32={path}"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "| rfcn_fp32 |" in (tmp_path / "s.md").read_text()
    run = subprocess.run([*map(str, common), "--benchmark", str(path)], capture_output=True, text=True)
    assert (
        run.returncode == 1
        and run.stderr.strip().splitlines()[-1] == f"error: --benchmark {str(path)!r}: give KEY=PATH"
    )
    run = subprocess.run([*map(str, common), "--benchmark", f"other={path}"], capture_output=True, text=True)
    assert run.stderr.strip().splitlines()[-1] == "error: results of models not in --models: other"


def test_a_tuning_that_missed_its_tolerance_is_marked_in_the_matrix_and_its_units_named():
    from detbench.report.sections import tuning_rows
    from detbench.report.tables import matrix_rows

    tuning = {
        "tolerance": 0.05,
        "fp32_ap": 1.0,
        "chosen_trial": 2,
        "tuning_images": 15,
        "met_tolerance": False,
        "drift_ranking": [{"unit": "expanded_conv_2", "cosine": 0.53, "loss": 0.46}],
        "trials": [
            {"trial": 1, "ap": 0.0002, "kept_in_fp32": []},
            {"trial": 2, "ap": 0.0004, "kept_in_fp32": ["a", "b", "c"], "units_in_fp32": ["expanded_conv_2"]},
        ],
    }
    rows = dict(matrix_rows(REGISTRY, {}, {}, {"ssd_int8": {"tuning": tuning}}))
    assert rows["ssd_int8"][1] == (
        "int8 (MISSED its accuracy tolerance 0.05: best of 2 trials AP 0.0004 vs FP32 1.0000 on 15 images)"
    )
    assert rows["rfcn_int8"][1] == "int8"
    assert tuning_rows({"ssd_int8": {"tuning": tuning}})[-1] == (
        "2 (kept)",
        ["ssd_int8", "0.0004", "0.9996", "units expanded_conv_2 (cosine loss 0.4600): 3 convolutions"],
    )
    tuning["met_tolerance"] = True
    assert dict(matrix_rows(REGISTRY, {}, {}, {"ssd_int8": {"tuning": tuning}}))["ssd_int8"][1] == "int8"


def test_markdown_and_html_say_the_same_things_from_one_document(tmp_path):
    """Every heading, note, table cell, detail and picture of the document is in both renderings,
    the footer included, and in the same order."""
    import html

    from detbench.report.document import Heading, Paragraph
    from detbench.report.summary import FOOTER

    results = {name: dict(result) for name, result in RESULTS.items()}
    results["rfcn_fp32"]["profile"] = {"by_part_ms": {"first_stage": 2.0, "other": 1.0}, "op_time_ms": 3.0}
    tuning = {"tolerance": 0.05, "fp32_ap": 1.0, "chosen_trial": 1, "tuning_images": 2, "met_tolerance": True}
    tuning["trials"] = [{"trial": 1, "ap": 0.99, "kept_in_fp32": []}]
    cost = tmp_path / "cost.tsv"
    cost.write_text("s\tmax_rss\n2.0\t100\n")
    quantization = {"calibration_images": ["a.jpg"], "from_evaluation_set": True, "kept_in_fp32": [], "seed": 0}
    quantization.update(quantized_convolutions=3, convolutions=3, weight_granularity="per_tensor", tuning=tuning)
    document = make_report(
        Results(REGISTRY, results, ACCURACIES, quantizations={"ssd_int8": quantization}),
        tmp_path / "summary.md",
        tmp_path / "summary.html",
        {"average_precision": tmp_path / "ap.png", "speedup_vs_accuracy": tmp_path / "speedup.png"},
        {"benchmark_graph:rfcn_fp32": cost},
        gallery=tmp_path / "gallery.png",
    )
    markdown = (tmp_path / "summary.md").read_text()
    page = html.unescape((tmp_path / "summary.html").read_text())
    headings = [block.text for block in document.blocks if isinstance(block, Heading)]
    assert headings == [
        "Detections by model",
        "Every figure",
        "Where the time goes",
        "Tuning history",
        "Cost per stage",
    ]
    assert FOOTER in [block.text for block in document.blocks if isinstance(block, Paragraph)]
    texts = document.texts()
    for rendering in (markdown, page):
        missing = [text for text in texts if text not in rendering]
        assert not missing, missing
        positions = [rendering.index(text) for text in headings + [FOOTER]]
        assert positions == sorted(positions)


def test_reports_compare_by_sections_and_non_timing_figures():
    from tools.compare_reports import differences

    old = (
        "# t\n\n| Model | Precision | Latency p50 (ms) | AP |\n|---|---|---|---|\n| fp32 | fp32 | 10.0 | 0.875 |\n\n"
        "## Every figure\n\n|  | fp32 |\n|---|---|\n| Throughput (images/s) | 100 |\n| AP | 0.875 |\n\n"
        "## Cost per stage\n\n| Stage | Wall time (s) |\n|---|---|\n| detect_objects | 3.0 |\n"
    )
    assert differences(old, old.replace("10.0", "12.5").replace("| 100 |", "| 80 |").replace("3.0", "4.0")) == []
    changed = differences(old, old.replace("| 0.875 |\n\n## Cost", "| 0.870 |\n\n## Cost"))
    assert changed == ["Every figure: ['AP', '0.875'] -> ['AP', '0.870']"]
    assert differences(old, old.split("## Cost")[0]) == ["section 'Cost per stage' only in the old report"]


def test_int8_on_a_cpu_without_int8_instructions_says_so():
    results = {name: dict(result) for name, result in RESULTS.items()}
    results["rfcn_int8"]["cpu_flags"] = ["avx2", "avx512f"]
    results["ssd_int8"]["cpu_flags"] = ["avx2", "avx512f", "avx512_vnni"]
    _, rows, details = table_rows(REGISTRY, results, ACCURACIES)
    lines = [line for line in details if "no INT8 instructions" in line]
    assert len(lines) == 1 and lines[0].startswith("rfcn_int8: this CPU has no INT8 instructions")
    assert dict(rows)["Share of a matmul's rate (same threads, precision)"] == ["n/a"] * 5


def test_the_accuracy_gate_passes_or_fails_each_model_against_its_reference(tmp_path):
    from detbench.report.tables import MATRIX_HEADER, accuracy_gate

    gate = {"ratio": 0.99, "metric": "AP", "reference": "measured", "on_fail": "warn"}
    figures = (("rfcn_fp32", 0.35), ("rfcn_int8", 0.347), ("ssd_fp32", 0.2), ("ssd_int8", 0.19))
    accuracies = {name: accuracy(ap) for name, ap in figures}
    assert accuracy_gate(REGISTRY, accuracies, gate, "rfcn_int8") == (
        "PASS",
        "AP 0.347, target 0.346 (99% of rfcn_fp32's 0.350)",
    )
    assert accuracy_gate(REGISTRY, accuracies, gate, "ssd_int8")[0] == "FAIL"
    assert accuracy_gate(REGISTRY, accuracies, gate, "rfcn_fp32") is None  # a reference has none
    assert accuracy_gate(REGISTRY, accuracies, gate, "ssd_bf16") is None  # not scored
    published = accuracy_gate(REGISTRY, accuracies, {**gate, "reference": "published"}, "rfcn_int8")
    assert published == ("PASS", "AP 0.347, target 0.344 (99% of rfcn_fp32's published 0.347)")
    rows = dict(matrix_rows(REGISTRY, {}, accuracies, gate=gate))
    assert MATRIX_HEADER[-1] == "Accuracy gate" and rows["ssd_int8"][-1].startswith("FAIL: AP 0.190, target 0.198")
    assert rows["ssd_fp32"][-1] == "" and rows["ssd_bf16"][-1] == "n/a"
    # With on_fail: fail the report stops in one line naming the model and both figures, writing nothing.
    results = Results(REGISTRY, RESULTS, accuracies, gate={**gate, "on_fail": "fail"})
    with pytest.raises(StageError, match=r"^accuracy gate: ssd_int8 AP 0.190, target 0.198 \(99% of ssd_fp32's"):
        make_report(
            results, tmp_path / "summary.md", tmp_path / "summary.html", {"average_precision": tmp_path / "a.png"}
        )
    assert not list(tmp_path.iterdir())
    make_report(Results(REGISTRY, RESULTS, accuracies, gate=gate), tmp_path / "summary.md", tmp_path / "s.html", {})
    assert "| ssd_int8 | ssd | int8 |" in (tmp_path / "summary.md").read_text()
