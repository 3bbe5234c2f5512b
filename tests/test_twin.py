"""The whole workflow on the full-size R-FCN ResNet101 twin (`make twin`), in one run.

The demo's detectors are tiny and loop-free; this run meets what Intel's real graphs bring:
~7,800 nodes of Object Detection API export, TF1 while loops, TensorArrays, Assert, and
Neural Compressor's INT8 graph with Intel's fused quantized ops.
"""

import csv
import json
import os
import re

import pytest
from conftest import REPO_ROOT, Workflow

from make_demo_data import demo_config
from serve_files import FileServer

TWIN = REPO_ROOT / ".cache" / "twin"
PRECISIONS = ("int8", "fp32", "int8_inc")
CONTROL_FLOW_OPS = {"Enter", "Exit", "Merge", "Switch", "NextIteration", "LoopCond", "TensorArrayV3"}


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory):
    if not (TWIN / "manifest.json").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no twin in {TWIN}: CI must build it (make test runs make twin)")
        pytest.skip(f"no twin in {TWIN}: run `make twin`")
    server = FileServer(TWIN / "files").start()
    workflow = Workflow(tmp_path_factory.mktemp("twin") / "run", demo_config(TWIN, server.url))
    workflow.run()
    yield workflow
    server.stop()


def read_json(workflow, path):
    return json.loads((workflow.workdir / path).read_text())


def test_twin_graphs_have_the_real_structure():
    manifest = json.loads((TWIN / "manifest.json").read_text())
    fp32, int8 = manifest["graphs"]["fp32"], manifest["graphs"]["int8"]
    assert fp32["nodes"] > 7000 and fp32["ops"]["Conv2D"] == 110 and fp32["bytes"] > 200e6
    assert CONTROL_FLOW_OPS | {"Assert"} <= set(fp32["ops"])
    assert "Conv2D" not in int8["ops"] and CONTROL_FLOW_OPS <= set(int8["ops"])
    quantized = sum(count for op, count in int8["ops"].items() if op.startswith("QuantizedConv2DWith"))
    assert quantized == 110


def test_benchmark_runs_every_twin_graph(twin_run):
    for precision in PRECISIONS:
        result = read_json(twin_run, f"results/benchmark/{precision}.json")
        assert result["measured_steps"] == 20 and result["warmup_steps"] == 5
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    for quantized in ("int8", "int8_inc"):
        kernels = read_json(twin_run, f"results/benchmark/{quantized}.json")["executed_kernels"]
        assert {"_MklQuantizedConv2DWithBiasAndReluAndRequantize", "_MklQuantizedConv2DWithBiasSumAndReluAndRequantize"} <= set(kernels)  # fmt: skip
    fp32 = read_json(twin_run, "results/benchmark/fp32.json")["executed_kernels"]
    assert "NextIteration" in fp32 and not any("Quantized" in kernel for kernel in fp32)


def test_accuracy_scores_every_twin_image(twin_run):
    for precision in PRECISIONS:
        accuracy = read_json(twin_run, f"results/accuracy/{precision}.json")
        assert accuracy["images"] == 24
        # Random weights find nothing, but every image gets R-FCN's 300 finite detections.
        assert accuracy["detections"] == 24 * 300
        assert 0.0 <= accuracy["standard"]["AP"] < 0.05
        detections = read_json(twin_run, f"results/accuracy/{precision}_detections.json")
        assert all(0.0 <= d["score"] <= 1.0 and d["bbox"][2] >= 0 for d in detections)


def test_every_job_has_a_benchmark_file_and_the_report_sums_them(twin_run):
    benchmarks = sorted((twin_run.workdir / "benchmarks").rglob("*.tsv"))
    names = {path.relative_to(twin_run.workdir / "benchmarks").as_posix() for path in benchmarks}
    assert {"benchmark_graph/int8.tsv", "detect_objects/fp32-0-of-1.tsv", "convert_coco_to_tfrecord.tsv",
            "make_report.tsv"} <= names  # fmt: skip
    with open(twin_run.workdir / "benchmarks/detect_objects/fp32-0-of-1.tsv") as stream:
        row = next(csv.DictReader(stream, delimiter="\t"))
    assert float(row["s"]) > 1 and float(row["max_rss"]) > 1000  # a full-size graph in memory
    summary = (twin_run.workdir / "results/report/summary.md").read_text()
    assert "## Cost per stage" in summary
    assert "| detect_objects | fp32 | 1 |" in summary and "| download_file | all | 4 |" in summary
    assert "| quantize_graph | int8_inc | 1 |" in summary


def test_an_unchanged_twin_is_not_rebuilt():
    import time

    import make_twin

    manifest = json.loads((TWIN / "manifest.json").read_text())
    # Checked first, so that a stale twin fails here instead of being rebuilt by the test.
    assert manifest["inputs_sha256"] == make_twin.inputs_digest(24, 0, 4), f"{TWIN} is older than its inputs: make twin"
    assert make_twin.inputs_digest(24, 1, 4) != manifest["inputs_sha256"]
    before = (TWIN / "manifest.json").stat().st_mtime_ns
    started = time.perf_counter()
    make_twin.make_twin(TWIN)
    assert time.perf_counter() - started < 10
    assert (TWIN / "manifest.json").stat().st_mtime_ns == before


def test_a_failing_step_names_itself_and_leaves_no_twin(tmp_path, monkeypatch):
    import make_twin
    from common import StageError

    broken = tmp_path / "broken.config"
    broken.write_text("model { faster_rcnn { num_classes: 'ninety' } }\n")
    monkeypatch.setattr(make_twin, "MODEL_CONFIG", broken)
    output = tmp_path / "twin"
    with pytest.raises(StageError) as failure:
        make_twin.make_twin(output, count=2)
    message = str(failure.value)
    assert message.startswith("twin step export-fp32 failed (exit 1): ") and "\n" not in message
    assert "num_classes" in message and f"log: {tmp_path / 'twin-logs' / 'export-fp32.log'}" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.config", "twin-logs"]


def test_a_missing_package_is_named(monkeypatch):
    import make_twin
    from common import StageError

    monkeypatch.setitem(make_twin.REQUIRED_MODULES, "no_such_module_here", "no-such-package")
    with pytest.raises(StageError, match=r"^twin step check_packages: no-such-package not installed: run `make twin`$"):
        make_twin.check_packages()


def test_self_made_int8_runs_through_the_whole_workflow(twin_run):
    quantization = read_json(twin_run, "resources/models/int8_inc/quantization.json")
    assert quantization["quantized_convolutions"] == quantization["convolutions"] == 110
    assert quantization["from_evaluation_set"] is True and len(quantization["calibration_images"]) == 4
    summary = (twin_run.workdir / "results/report/summary.md").read_text()
    assert "|  | int8 | int8_inc | fp32 |" in summary
    speedups = next(line for line in summary.splitlines() if line.startswith("| Speed-up over FP32"))
    assert speedups.count("x |") == 2


def test_a_killed_detection_job_resumes_through_snakemake(twin_run, tmp_path):
    import copy
    import shutil
    import signal
    import time

    import psutil

    workdir = tmp_path / "run"
    shutil.copytree(twin_run.workdir, workdir, symlinks=True)
    for path in ("int8/detections-0-of-1.json", "int8.json", "int8_detections.json"):
        (workdir / "results/accuracy" / path).unlink()
    config = copy.deepcopy(twin_run.config)
    config["accuracy"]["checkpoint_every"] = 4
    workflow = Workflow(workdir, config)
    target = "results/accuracy/int8.json"
    assert workflow.planned_jobs(target) == {"detect_objects": 1, "evaluate_accuracy": 1}

    first = workflow.start(target)
    checkpoint = workdir / "results/accuracy/int8/.detections-0-of-1.json.checkpoint"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), first.communicate()[1][-3000:]
    jobs = [p for p in psutil.Process(first.pid).children(recursive=True) if "detect_objects.py" in " ".join(p.cmdline())]
    for job in jobs:
        job.send_signal(signal.SIGKILL)
    first.communicate(timeout=120)
    assert jobs and first.returncode != 0
    assert not (workdir / "results/accuracy/int8/detections-0-of-1.json").exists()

    workflow.run(target)
    log = (workdir / "logs/detect_objects/int8-0-of-1.log").read_text()
    assert "resuming from checkpoint" in log
    ran, taken = (int(n) for n in re.search(r"(\d+) images run in this job, (\d+) taken from a checkpoint", log).groups())
    assert taken >= 4 and ran + taken == 24 and ran < 24
    assert not checkpoint.exists()
    final = (workdir / "results/accuracy/int8_detections.json").read_bytes()
    assert final == (twin_run.workdir / "results/accuracy/int8_detections.json").read_bytes()
