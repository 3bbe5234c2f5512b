"""The benchmark stage on the demo: its JSON, the kernels each precision ran, batch mode, NUMA
binding, TF1 control flow, and one-line errors for graphs and images it cannot run."""

import json
import os
import re
import shutil

import pytest
from helpers import DEMO_MODELS as MODELS
from helpers import (
    error_lines,
    result,
    run_script,
)

from detbench.common import StageError
from detbench.job_runtime import bf16_native, find_tcmalloc
from detbench.timing import summarize

INT8_KERNEL = "_MklQuantizedConv2DWithBiasAndReluAndRequantize"


def test_int8_ran_quantized_kernels_and_fp32_did_not(finished_run):
    for kind in ("accuracy", "benchmark"):
        int8, fp32, int8_inc, bf16 = (result(finished_run, kind, name) for name in MODELS)
        for quantized in (int8, int8_inc):
            assert INT8_KERNEL in quantized["executed_kernels"] and "_MklQuantizeV2" in quantized["executed_kernels"]
            assert quantized["onednn"] is True and quantized["precision"] == "int8"
        for float_graph in (fp32, bf16):
            assert not any("Quantize" in kernel for kernel in float_graph["executed_kernels"])
        assert bf16["graph_sha256"] == fp32["graph_sha256"]  # the same graph, in another precision


def test_bf16_ran_in_bfloat16_and_fp32_did_not(finished_run):
    """The BF16 model is the FP32 graph under oneDNN's automatic mixed precision: its
    convolution ran on bfloat16 inputs through added casts, and it says whether oneDNN
    emulated BF16 on this CPU."""
    bf16, fp32 = (result(finished_run, "benchmark", name) for name in ("bf16", "fp32"))
    assert bf16["precision"] == "bf16" and bf16["runtime"]["precision"] == "bf16"
    share = bf16["bfloat16"]
    assert share["nodes"] >= 1 and share["casts"] >= 2 and 0 < share["op_time_fraction"] < 1
    assert any(kernel.startswith("_MklNative") and "Conv2D" in kernel for kernel in share["kernels"]), share
    assert fp32["bfloat16"] == {
        "nodes": 0,
        "kernels": [],
        "casts": 0,
        "op_time_fraction": 0.0,
        "cast_time_fraction": 0.0,
    }
    assert bf16["emulated"] is (not bf16_native()) and fp32["emulated"] is False
    log = (finished_run.workdir / "logs/benchmark_graph/bf16.log").read_text()
    assert re.search(r"bfloat16: \d+ nodes \(\d+% of op time\) and \d+ casts", log)
    if bf16_native():
        assert "bf16" in bf16["probe"]["gflops_per_second"] and bf16["roofline"]["probe_precision"] == "bf16"


@pytest.mark.parametrize("precision", MODELS)
def test_benchmark_json_is_sane(finished_run, precision):
    benchmark = result(finished_run, "benchmark", precision)
    steps, warmup = benchmark["number_of_steps"], benchmark["warmup_steps"]
    assert (steps, warmup, benchmark["batch_size"], benchmark["mode"]) == (40, 5, 1, "online")
    assert len(benchmark["step_seconds"]) == steps and benchmark["measured_steps"] == steps - warmup
    latency = benchmark["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    measured = [s * 1000 for s in benchmark["step_seconds"][warmup:]]
    assert latency["mean"] == pytest.approx(sum(measured) / len(measured))
    assert latency["max"] == pytest.approx(max(measured))
    assert benchmark["throughput_images_per_second"] == pytest.approx(1000 / latency["mean"])
    assert benchmark["tensorflow_version"].startswith("2.") and len(benchmark["graph_sha256"]) == 64
    assert benchmark["cpu_model"] and benchmark["runtime"]["intra_op_threads"] == 2
    assert benchmark["memory_policy"] == "default"
    log = (finished_run.workdir / f"logs/benchmark_graph/{precision}.log").read_text()
    assert "Step 0: " in log and "Step 10: " in log and "Step 30: " in log and "Step 5: " not in log
    assert "Avg. Duration per Step:" in log
    # The machine over the timed steps, judged by the schema's noise limits.
    machine = benchmark["machine"]
    assert machine["noise_limits"] == {"max_steal": 0.02, "max_other_cpu": 0.1, "max_step_cv": 0.1}
    shares = (machine["steal_fraction"], machine["other_cpu_fraction"])
    assert all(share is None or 0 <= share <= 1 for share in shares) and machine["kernel"]
    assert isinstance(machine["noisy"], list) and ("noisy run: " in log) == bool(machine["noisy"])
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    assert "## Machine" in summary and f"| {precision} | " in summary.split("## Machine")[1]


def test_tcmalloc_is_preloaded_for_int8_only(finished_run):
    """The demo takes the schema's per-precision defaults: TCMalloc for int8, not for fp32."""
    int8, fp32 = (result(finished_run, "benchmark", name) for name in ("int8", "fp32"))
    if find_tcmalloc() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install libgoogle-perftools4 (see .ci/run)")
        pytest.skip("TCMalloc is not installed here")
    assert int8["runtime"]["tcmalloc"] and int8["tcmalloc_loaded"] is True
    assert fp32["runtime"]["tcmalloc"] is None and fp32["tcmalloc_loaded"] is False


def test_summary_excludes_warmup():
    seconds = [5.0, 4.0, 0.010, 0.020, 0.030, 0.040]
    summary = summarize(seconds, warmup_steps=2, batch_size=2)
    assert summary["latency_ms"]["mean"] == pytest.approx(25.0)
    assert summary["latency_ms"]["max"] == pytest.approx(40.0)
    assert summary["throughput_images_per_second"] == pytest.approx(8 / 0.1)
    assert summary["intel_avg_duration_per_step_seconds"] == pytest.approx(sum(seconds) / 6)
    with pytest.raises(StageError, match="leaves no step"):
        summarize(seconds, warmup_steps=6, batch_size=1)


def test_batch_mode_resizes_and_says_so(finished_run, tmp_path):
    workdir = finished_run.workdir
    output = tmp_path / "batch.json"
    run = run_script(
        "benchmark_graph.py",
        "--graph",
        workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--image-dir",
        workdir / "resources/coco/val2017",
        "--output",
        output,
        "--number-of-steps",
        12,
        "--warmup-steps",
        2,
        "--batch-size",
        4,
        "--image-size",
        "256x320",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    benchmark = json.loads(output.read_text())
    assert benchmark["mode"] == "batch" and benchmark["images_resized"] is True
    assert benchmark["image_size"] == [256, 320]
    assert benchmark["throughput_images_per_second"] == pytest.approx(4 * 10 / sum(benchmark["step_seconds"][2:]))


def test_graph_with_an_op_this_tensorflow_lacks_is_named(finished_run, tmp_path):
    from detbench.detection_graph import load_graph_def

    graph_def = load_graph_def(finished_run.workdir / "resources/models/int8/frozen_inference_graph.pb")
    next(node for node in graph_def.node if node.op == "TopKV2").op = "IntelOnlyFusedTopK"
    graph = tmp_path / "future.pb"
    graph.write_bytes(graph_def.SerializeToString())
    for script, arguments in (
        ("detect_objects.py", ["--records", finished_run.workdir / "resources/coco_tfrecord"]),
        ("benchmark_graph.py", ["--image-dir", finished_run.workdir / "resources/coco/val2017"]),
    ):
        run = run_script(script, "--graph", graph, "--output", tmp_path / "out.json", *arguments)
        assert run.returncode == 1
        assert error_lines(run) == [
            f"error: {graph}: ops unknown to TensorFlow "
            f"{result(finished_run, 'benchmark', 'int8')['tensorflow_version']}: "
            "IntelOnlyFusedTopK"
        ]
        assert not (tmp_path / "out.json").exists()


def test_truncated_graph_and_missing_onednn_are_clear_errors(finished_run, tmp_path):
    whole = (finished_run.workdir / "resources/models/int8/frozen_inference_graph.pb").read_bytes()
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(whole[: len(whole) // 3])
    records = finished_run.workdir / "resources/coco_tfrecord"
    run = run_script("detect_objects.py", "--graph", truncated, "--records", records, "--output", tmp_path / "o.json")
    assert run.returncode == 1 and "not a TensorFlow GraphDef, or truncated" in error_lines(run)[0]
    run = run_script(
        "detect_objects.py",
        "--graph",
        finished_run.workdir / "resources/models/int8/frozen_inference_graph.pb",
        "--records",
        records,
        "--output",
        tmp_path / "o.json",
        "--no-onednn",
    )
    assert run.returncode == 1
    assert "QuantizedConv2DWithBiasAndReluAndRequantize run only with oneDNN" in error_lines(run)[0]


def test_numa_binding_runs_the_job_under_numactl(finished_run, tmp_path):
    if shutil.which("numactl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install numactl (see .ci/run)")
        pytest.skip("numactl is not installed here")
    output = tmp_path / "numa.json"
    run = run_script(
        "benchmark_graph.py",
        "--graph",
        finished_run.workdir / "resources/models/int8/frozen_inference_graph.pb",
        "--image-dir",
        finished_run.workdir / "resources/coco/val2017",
        "--output",
        output,
        "--number-of-steps",
        3,
        "--warmup-steps",
        1,
        "--numa-socket",
        0,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    benchmark = json.loads(output.read_text())
    assert benchmark["runtime"]["numa_socket"] == 0
    assert benchmark["memory_policy"] == "bind:0"  # as the kernel sees it


def test_tf1_control_flow_graph_runs_through_benchmark_and_detection(finished_run, tmp_path):
    """Object Detection API exports (Intel's graphs) loop with TF1 control flow and Assert, whose
    kernels TensorFlow registers for DEFAULT only; they run on CPU, and the check must let them."""
    from tensorflow.python.framework import kernels

    from tools.demo.make_demo_data import build_detector

    graph_def = build_detector("fp32", control_flow=True)
    ops = {node.op for node in graph_def.node}
    assert {"Enter", "Merge", "Switch", "NextIteration", "Exit", "TensorArrayV3", "Assert"} <= ops
    # What a check for CPU-registered kernels alone would have refused:
    cpu_registered = {
        op for op in ops if any(k.device_type == "CPU" for k in kernels.get_registered_kernels_for_op(op).kernel)
    }
    assert {"Assert", "NextIteration"} <= ops - cpu_registered
    graph = tmp_path / "control_flow.pb"
    graph.write_bytes(graph_def.SerializeToString())
    workdir = finished_run.workdir
    run = run_script(
        "benchmark_graph.py",
        "--graph",
        graph,
        "--image-dir",
        workdir / "resources/coco/val2017",
        "--output",
        tmp_path / "benchmark.json",
        "--number-of-steps",
        3,
        "--warmup-steps",
        1,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Assert" in json.loads((tmp_path / "benchmark.json").read_text())["executed_kernels"]
    run = run_script(
        "detect_objects.py",
        "--graph",
        graph,
        "--records",
        workdir / "resources/coco_tfrecord",
        "--output",
        tmp_path / "detections.json",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads((workdir / "results/accuracy/fp32/detections-0-of-1.json").read_text())["detections"]
    assert json.loads((tmp_path / "detections.json").read_text())["detections"] == expected


def test_op_with_kernels_for_other_devices_only_is_named(finished_run):
    from detbench.detection_graph import check_kernels, load_graph_def

    graph_def = load_graph_def(finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb")
    # A real op whose only kernel in this TensorFlow is for GPU.
    next(node for node in graph_def.node if node.op == "TopKV2").op = "ExperimentalMapDataset"
    with pytest.raises(StageError, match=r"^g.pb: ops without a CPU kernel: ExperimentalMapDataset$"):
        check_kernels(graph_def, "g.pb")


def renamed_image_folder(source, folder):
    """The demo's images with suffixes as cameras and Windows write them, beside files that are not images."""
    folder.mkdir()
    for index, image in enumerate(sorted(source.glob("*.jpg"))):
        shutil.copy(image, folder / (image.stem + (".JPG", ".jpeg", ".Jpg", ".jpg")[index % 4]))
    (folder / "notes.txt").write_text("not an image")
    (folder / "thumbs.jpg").mkdir()  # a folder named like an image
    return folder


def test_image_folders_are_listed_whatever_the_suffix_case(finished_run, tmp_path):
    from detbench.detection_graph import list_images
    from detbench.quantization import calibration_images

    source = finished_run.workdir / "resources/coco/val2017"
    folder = renamed_image_folder(source, tmp_path / "camera")
    expected = [path.stem for path in sorted(source.glob("*.jpg"))]
    assert [path.stem for path in list_images(folder)] == expected
    assert {path.suffix for path in list_images(folder)} == {".JPG", ".jpeg", ".Jpg", ".jpg"}
    assert [path.stem for path in calibration_images(folder, 100, seed=0)] == expected
    output = tmp_path / "benchmark.json"
    run = run_script(
        "benchmark_graph.py",
        "--graph",
        finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--image-dir",
        folder,
        "--output",
        output,
        "--number-of-steps",
        10,
        "--warmup-steps",
        2,
        "--no-roofline",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(output.read_text())["distinct_images"] == len(expected)


def test_unreadable_jpegs_are_named_and_stop_or_are_skipped(finished_run, tmp_path):
    images = tmp_path / "val2017"
    shutil.copytree(finished_run.workdir / "resources/coco/val2017", images)
    (images / "000000000285.jpg").write_bytes(b"<html>not found</html>")
    truncated = images / "000000000632.jpg"
    truncated.write_bytes(truncated.read_bytes()[:400])
    graph = finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb"
    common = ["--graph", graph, "--image-dir", images, "--number-of-steps", 12, "--warmup-steps", 2]
    run = run_script("benchmark_graph.py", *common, "--output", tmp_path / "stop.json")
    assert run.returncode == 1 and not (tmp_path / "stop.json").exists()
    assert error_lines(run) == [
        "error: 000000000285.jpg: not a readable image (not a JPEG or another known format)"
        " (benchmark.on_bad_image: skip leaves it out)"
    ]
    run = run_script("benchmark_graph.py", *common, "--output", tmp_path / "skip.json", "--on-bad-image", "skip")
    assert run.returncode == 0, run.stderr[-2000:]
    benchmark = json.loads((tmp_path / "skip.json").read_text())
    assert benchmark["skipped_images"] == ["000000000285.jpg", "000000000632.jpg"]
    assert benchmark["measured_steps"] == 10
    assert "WARNING skipping 000000000632.jpg: not a readable image (a truncated or damaged JPEG)" in run.stderr
