"""Benchmark, accuracy and report, end to end on the mini COCO and the tiny detectors."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import agreement_with_fp32, error_lines, layer_drift, rfcn_drift_arguments, run_script, scale_weight_range

from detbench.coco_data import to_coco_results
from detbench.common import StageError
from detbench.job_runtime import bf16_native, find_tcmalloc
from detbench.timing import summarize

MODELS = ("int8", "fp32", "int8_inc", "bf16")
# What the mini COCO and the detectors were designed to give (see make_demo_data.py): seven
# palette classes found exactly, the gray banana never (AP 0), the gray crowd ignored.
EXPECTED_STANDARD = {
    "AP": 7 / 8,
    "AP50": 7 / 8,
    "AP75": 7 / 8,
    "AP_small": 1.0,
    "AP_medium": 1.0,
    "AP_large": 4 / 5,
    "AR100": 7 / 8,
}
# The recipe's evaluator counts the crowd as a missed person: recall 3/4, so 76 of the 101
# recall points have precision 1; every area is "small".
PERSON_LEGACY_AP = 76 / 101
EXPECTED_LEGACY = {
    "AP": (6 + PERSON_LEGACY_AP) / 8,
    "AP_small": (6 + PERSON_LEGACY_AP) / 8,
    "AP_medium": -1.0,
    "AP_large": -1.0,
    "AR100": (6 + 3 / 4) / 8,
}
INT8_KERNEL = "_MklQuantizedConv2DWithBiasAndReluAndRequantize"
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


def result(workflow, kind, model):
    return json.loads((workflow.workdir / f"results/{kind}/{model}.json").read_text())


@pytest.mark.parametrize("precision", MODELS)
def test_accuracy_is_what_the_data_was_designed_to_give(finished_run, precision):
    accuracy = result(finished_run, "accuracy", precision)
    assert accuracy["images"] == 8
    for key, value in EXPECTED_STANDARD.items():
        assert accuracy["standard"][key] == pytest.approx(value, abs=1e-9), key
    for key, value in EXPECTED_LEGACY.items():
        assert accuracy["legacy"][key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("precision", MODELS)
def test_metrics_equal_pycocotools_on_our_detections_file(finished_run, precision):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    workdir = finished_run.workdir
    ground_truth = COCO(str(workdir / "resources/coco/annotations/instances_val2017.json"))
    detections = ground_truth.loadRes(str(workdir / f"results/accuracy/{precision}_detections.json"))
    evaluation = COCOeval(ground_truth, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    ours = result(finished_run, "accuracy", precision)["standard"]
    assert list(ours.values()) == [float(v) for v in evaluation.stats]
    log = (workdir / f"logs/evaluate_accuracy/{precision}.log").read_text().rstrip().splitlines()
    assert len(log) > 12
    assert all(line.lstrip().startswith("Average") for line in log[-12:])
    assert log[-12].endswith(f"= {evaluation.stats[0]:0.3f}")


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


def test_tcmalloc_is_preloaded_for_int8_only(finished_run):
    """The demo takes the schema's per-precision defaults: TCMalloc for int8, not for fp32."""
    int8, fp32 = (result(finished_run, "benchmark", name) for name in ("int8", "fp32"))
    if find_tcmalloc() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install libgoogle-perftools4 (see .ci/run)")
        pytest.skip("TCMalloc is not installed here")
    assert int8["runtime"]["tcmalloc"] and int8["tcmalloc_loaded"] is True
    assert fp32["runtime"]["tcmalloc"] is None and fp32["tcmalloc_loaded"] is False


def test_report_has_every_model_and_plots(finished_run):
    report = finished_run.workdir / "results/report"
    summary = (report / "summary.md").read_text()
    # Grouped by architecture, the reference last; each model against its reference.
    assert "|  | int8 | int8_inc | bf16 | fp32 |" in summary and "| Latency p50 (ms) |" in summary
    assert "| Architecture | rfcn_resnet101 | rfcn_resnet101 | rfcn_resnet101 | rfcn_resnet101 |" in summary
    emulated = "" if bf16_native() else " (emulated)"
    assert f"| Precision | int8 | int8 | bf16{emulated} | fp32 |" in summary
    speedups = next(line for line in summary.splitlines() if line.startswith("| Speed-up over reference (throughput)"))
    assert speedups.count("x over fp32 |") == 3 and speedups.endswith("|  |")
    assert "| AP | 0.875 | 0.875 | 0.875 | 0.875 |" in summary
    assert "| Legacy AP (recipe's evaluator) | 0.844 | 0.844 | 0.844 | 0.844 |" in summary
    assert "| Reference detections reproduced | 1.000 | 1.000 | 1.000 |  |" in summary
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
        assert finished_run.planned_jobs() == {"benchmark_graph": 4, "make_report": 1, "all": 1}
    finally:
        finished_run.config["benchmark"]["number_of_steps"] = 40


def test_summary_excludes_warmup():
    seconds = [5.0, 4.0, 0.010, 0.020, 0.030, 0.040]
    summary = summarize(seconds, warmup_steps=2, batch_size=2)
    assert summary["latency_ms"]["mean"] == pytest.approx(25.0)
    assert summary["latency_ms"]["max"] == pytest.approx(40.0)
    assert summary["throughput_images_per_second"] == pytest.approx(8 / 0.1)
    assert summary["intel_avg_duration_per_step_seconds"] == pytest.approx(sum(seconds) / 6)
    with pytest.raises(StageError, match="leaves no step"):
        summarize(seconds, warmup_steps=6, batch_size=1)


def test_detections_become_absolute_coco_boxes():
    import numpy as np

    outputs = {
        "num_detections": np.array([1.0]),
        "detection_boxes": np.array([[[0.25, 0.5, 0.75, 1.0], [0, 0, 0, 0]]]),
        "detection_scores": np.array([[0.9, 0.0]]),
        "detection_classes": np.array([[18.0, 1.0]]),
    }
    assert to_coco_results(139, 200, 400, outputs) == [
        {"image_id": 139, "category_id": 18, "bbox": [200.0, 50.0, 200.0, 100.0], "score": 0.9}
    ]


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


def test_unreadable_image_in_the_tfrecord_stops_detection_naming_it(finished_run, tmp_path):
    import tensorflow as tf

    source = finished_run.workdir / "resources/coco_tfrecord/coco_val.record"
    records = tmp_path / "records"
    records.mkdir()
    with tf.io.TFRecordWriter(str(records / "coco_val.record")) as writer:
        for index, serialized in enumerate(tf.data.TFRecordDataset(str(source)).as_numpy_iterator()):
            example = tf.train.Example.FromString(serialized)
            if index == 2:
                example.features.feature["image/encoded"].bytes_list.value[0] = b"\xff\xd8 garbage"
                image_id = example.features.feature["image/source_id"].bytes_list.value[0].decode()
            writer.write(example.SerializeToString())
    run = run_script(
        "detect_objects.py",
        "--graph",
        finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--records",
        records,
        "--output",
        tmp_path / "detections.json",
    )
    assert run.returncode == 1 and not (tmp_path / "detections.json").exists()
    assert len(error_lines(run)) == 1
    assert error_lines(run)[0].startswith(f"error: image {image_id} (record 2 of {records}): not a readable image")


def detect_with_checkpoint(finished_run, tmp_path, lines):
    """detect_objects.py on the demo FP32 graph with a checkpoint of these text lines in place."""
    from detect_objects import checkpoint_path

    output = tmp_path / "detections-0-of-1.json"
    checkpoint_path(output).write_text("".join(lines))
    run = run_script(
        "detect_objects.py",
        "--graph",
        finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--records",
        finished_run.workdir / "resources/coco_tfrecord",
        "--output",
        output,
        "--checkpoint-every",
        2,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert not checkpoint_path(output).exists()
    return json.loads(output.read_text()), run.stderr


def fp32_identity(workdir):
    from detect_objects import job_identity

    return job_identity(
        workdir / "resources/models/fp32/frozen_inference_graph.pb", workdir / "resources/coco_tfrecord", 0, 0, 1
    )


def test_detection_resumes_from_its_checkpoint_with_the_same_result(finished_run, tmp_path):
    """A checkpoint as a killed job leaves it: the identity, three whole image lines, and a
    fourth cut short mid-write, which is dropped."""
    workdir = finished_run.workdir
    whole = json.loads((workdir / "results/accuracy/fp32/detections-0-of-1.json").read_text())
    lines = [json.dumps({"identity": fp32_identity(workdir)}) + "\n"]
    for position, (image_id, index) in enumerate(zip(whole["image_ids"][:4], whole["record_indices"])):
        image = {
            "image_id": image_id,
            "record_index": index,
            "detections": [d for d in whole["detections"] if d["image_id"] == image_id],
        }
        if position == 0:
            image["executed_kernels"] = whole["executed_kernels"]
        lines.append(json.dumps(image) + "\n")
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    resumed, log = detect_with_checkpoint(finished_run, tmp_path, lines)
    assert "3 images already done" in log
    assert "5 images run in this job, 3 taken from a checkpoint" in log
    for key in ("detections", "image_ids", "record_indices", "executed_kernels"):
        assert resumed[key] == whole[key], key


def test_checkpoint_of_another_job_is_ignored(finished_run, tmp_path):
    workdir = finished_run.workdir
    identity = fp32_identity(workdir)
    stale = [
        json.dumps({"identity": dict(identity, graph_sha256="0" * 64, max_images=3)}) + "\n",
        json.dumps({"image_id": 139, "record_index": 0, "detections": []}) + "\n",
    ]
    result, log = detect_with_checkpoint(finished_run, tmp_path, stale)
    assert "it is of another job (graph_sha256, max_images differ)" in log
    assert "8 images run in this job, 0 taken from a checkpoint" in log
    whole = json.loads((workdir / "results/accuracy/fp32/detections-0-of-1.json").read_text())
    assert result["detections"] == whole["detections"]


def test_a_checkpoint_save_costs_what_its_images_cost(tmp_path):
    """Saves append: the bytes written per save do not grow with the images done before."""
    from detect_objects import Checkpoint, load_checkpoint

    path = tmp_path / ".detections.json.checkpoint"
    identity = {"graph_sha256": "0" * 64, "shard": 0}
    checkpoint = Checkpoint(path, identity, load_checkpoint(path, identity))

    def bytes_written():  # by this process's write calls, whatever the file
        return int(re.search(r"^wchar: (\d+)$", Path("/proc/self/io").read_text(), re.M).group(1))

    written = []
    for image_id in range(1, 31):
        detections = [{"image_id": image_id, "category_id": 1, "bbox": [1.5, 2.5, 3.5, 4.5], "score": 0.5}] * 100
        checkpoint.add(image_id, image_id - 1, detections, ["Conv2D"] if image_id == 1 else ["ignored"])
        if image_id % 10 == 0:
            before = bytes_written()
            checkpoint.save()
            written.append(bytes_written() - before)
    assert max(written) < 1.1 * min(written)  # the third save writes no more than the first
    saved = load_checkpoint(path, identity)
    assert saved["image_ids"] == list(range(1, 31)) and len(saved["detections"]) == 3000
    assert saved["executed_kernels"] == ["Conv2D"]
    resumed = Checkpoint(path, identity, saved)  # a rerun carries on appending
    resumed.add(31, 30, [], ["Conv2D"])
    resumed.save()
    assert load_checkpoint(path, identity)["image_ids"] == list(range(1, 32))


@pytest.mark.parametrize("model", ("int8", "int8_inc", "bf16"))
def test_every_model_reproduces_every_fp32_detection_on_the_demo(finished_run, model):
    agreement = json.loads((finished_run.workdir / f"results/diagnostics/{model}_agreement.json").read_text())
    assert agreement["reference_detections"] == 13 and agreement["agreement"] == 1.0
    # BF16 keeps 8 bits of mantissa: the scores move a little, the detections do not.
    assert agreement["mean_score_drift"] == 0.0 if model != "bf16" else agreement["mean_score_drift"] < 0.01
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    assert "| Reference detections reproduced | 1.000 | 1.000 | 1.000 |  |" in summary
    # The demo names its one activation as an export names the RPN objectness: Intel's INT8
    # keeps that name on a Dequantize, Neural Compressor's fused it into the convolution, and
    # BF16 runs the FP32 graph itself.
    drift = json.loads((finished_run.workdir / f"results/diagnostics/{model}_layer_drift.json").read_text())
    (layer,) = drift["layers"]
    assert layer["layer"] == "rpn_objectness" and layer["images"] == 2 and layer["cosine"] > 0.9999
    assert layer["dequantized_here"] is (model == "int8_inc") and drift["unmatched"] == []
    assert drift["candidate_precision"] == finished_run.config["models"][model]["precision"]
    assert "| rpn_objectness | 1.0000 | 1.0000 | 1.0000 |" in summary


def test_a_perturbed_int8_graph_agrees_less(finished_run, tmp_path):
    """A wrong weight scale in the one quantized convolution: fewer FP32 detections reproduced."""
    from detbench.detection_graph import load_graph_def

    workdir = finished_run.workdir
    int8_inc = workdir / "resources/models/int8_inc/frozen_inference_graph.pb"
    convolution = next(
        node.name for node in load_graph_def(int8_inc).node if node.op == "QuantizedConv2DWithBiasAndReluAndRequantize"
    )
    # Shrinking the weights' range shrinks every output of the layer.
    graph = scale_weight_range(int8_inc, tmp_path / "perturbed.pb", convolution, 0.3)
    assert agreement_with_fp32(workdir, graph, tmp_path)["agreement"] < 1.0
    drift = layer_drift(workdir, graph, tmp_path / "drift.json")
    assert drift["lowest_cosine"] == "rpn_objectness" and drift["layers"][0]["cosine"] < 0.99


def run_quantize(graph, images, output_dir, *options):
    return run_script(
        "quantize_graph.py",
        "--graph",
        graph,
        "--images",
        images,
        "--output",
        output_dir / "int8.pb",
        "--report",
        output_dir / "quantization.json",
        "--calibration-images",
        8,
        *options,
        onednn=True,
    )


def test_quantize_graph_bad_inputs_are_one_line_and_leave_nothing(finished_run, tmp_path):
    from tools.demo.make_demo_data import build_detector

    images = tmp_path / "images"
    shutil.copytree(finished_run.workdir / "resources/coco/val2017", images)
    (images / "000000000285.jpg").write_bytes(b"garbage")
    fp32 = finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb"
    outputs = tmp_path / "out"
    outputs.mkdir()
    run = run_quantize(fp32, images, outputs)
    assert run.returncode == 1
    assert error_lines(run) == [
        "error: quantize_graph: calibration image 000000000285.jpg: not a readable image"
        " (not a JPEG or another known format)"
    ]
    (tmp_path / "empty").mkdir()
    run = run_quantize(fp32, tmp_path / "empty", outputs)
    assert error_lines(run) == [f"error: {tmp_path / 'empty'}: no .jpg or .jpeg calibration images in it"]
    graph_def = build_detector("int8")  # already quantized: no FP32 convolution left
    int8 = tmp_path / "int8.pb"
    int8.write_bytes(graph_def.SerializeToString())
    run = run_quantize(int8, finished_run.workdir / "resources/coco/val2017", outputs)
    assert error_lines(run) == [f"error: quantize_graph: {int8} has no Conv2D or MatMul: nothing to quantize"]
    run = run_quantize(fp32, finished_run.workdir / "resources/coco/val2017", outputs, "--accuracy-tolerance", 0.01)
    assert error_lines(run) == [
        "error: quantize_graph: --accuracy-tolerance needs --tuning-records and --tuning-annotations"
    ]
    run = run_quantize(fp32, finished_run.workdir / "resources/coco/val2017", outputs, "--accuracy-tolerance", 1.5)
    assert error_lines(run) == ["error: quantize_graph: --accuracy-tolerance must be in [0, 1)"]
    assert list(outputs.iterdir()) == []


def test_layer_drift_bad_inputs_are_one_line(finished_run, tmp_path):
    models = finished_run.workdir / "resources/models"
    arguments = [
        "--reference",
        models / "fp32/frozen_inference_graph.pb",
        "--output",
        tmp_path / "drift.json",
        *rfcn_drift_arguments(),
    ]
    run = run_script("measure_layer_drift.py", *arguments, "--candidate", tmp_path / "none.pb", "--images", tmp_path)
    assert error_lines(run) == [f"error: measure_layer_drift: no such graph: {tmp_path / 'none.pb'}"]
    run = run_script(
        "measure_layer_drift.py",
        *arguments,
        "--candidate",
        models / "int8/frozen_inference_graph.pb",
        "--images",
        tmp_path,
    )
    assert error_lines(run) == [f"error: {tmp_path}: no .jpg or .jpeg images in it"]
    run = run_script(
        "measure_layer_drift.py",
        *arguments,
        "--candidate",
        models / "int8/frozen_inference_graph.pb",
        "--images",
        tmp_path,
        "--units",
        "(block",
    )
    assert error_lines(run) == [
        "error: measure_layer_drift: --units '(block' is not a regular expression "
        "(missing ), unterminated subpattern at position 0)"
    ]
    assert not (tmp_path / "drift.json").exists()


def dark_images(folder, count=2):
    """Calibration images far darker than the COCO ones: activation ranges too small for them."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for index in range(count):
        Image.fromarray(np.full((64, 64, 3), 20, np.uint8)).save(folder / f"dark_{index}.jpg")
    return folder


def tune_quantization(finished_run, tmp_path, max_trials, on_miss="keep"):
    """Accuracy-aware quantization of a detector with two convolutions beside its scoring one,
    in Neural Compressor's fallback order."""
    from tools.demo.make_demo_data import build_detector

    graph = tmp_path / "fp32.pb"
    graph.write_bytes(build_detector("fp32", extra_conv_layers=2, extra_channels=4).SerializeToString())
    output = tmp_path / f"tuned-{max_trials}-{on_miss}"
    output.mkdir()
    workdir = finished_run.workdir
    images = tmp_path / "dark" if (tmp_path / "dark").is_dir() else dark_images(tmp_path / "dark")
    run = run_script(
        "quantize_graph.py",
        "--graph",
        graph,
        "--images",
        images,
        "--output",
        output / "int8.pb",
        "--report",
        output / "quantization.json",
        "--accuracy-tolerance",
        0.01,
        "--max-trials",
        max_trials,
        "--tuning-records",
        workdir / "resources/coco_tfrecord",
        "--tuning-images",
        8,
        "--tuning-annotations",
        workdir / "resources/coco/annotations/instances_val2017.json",
        "--fallback-order",
        "nearest_outputs",
        "--on-tolerance-miss",
        on_miss,
        onednn=True,
    )
    if on_miss == "fail":
        return run, output
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((output / "quantization.json").read_text()), run.stderr


@pytest.mark.slow
def test_accuracy_aware_quantization_gives_back_to_fp32_the_convolution_that_lost_ap(finished_run, tmp_path):
    """Calibrated on dark images, the scoring convolution clips every COCO activation: AP 0 in
    INT8. Tuning tries each convolution alone in FP32, nearest the outputs first, and stops at
    the scoring one, which restores FP32's AP; the other two stay INT8."""
    report, log = tune_quantization(finished_run, tmp_path, max_trials=7)
    tuning = report["tuning"]
    assert tuning["fp32_ap"] == pytest.approx(7 / 8)
    scoring, tower = "FirstStageFeatureExtractor/Conv2D", "SecondStageFeatureExtractor/Conv2D"
    assert [(t["kept_in_fp32"], t["ap"]) for t in tuning["trials"]] == [
        ([], 0.0),
        ([f"{tower}_1"], 0.0),
        ([tower], 0.0),
        ([scoring], pytest.approx(7 / 8)),
    ]
    assert tuning["chosen_trial"] == 4 and tuning["met_tolerance"] is True
    assert report["kept_in_fp32"] == [scoring] and report["quantized_convolutions"] == 2
    assert f"trial 4: AP 0.8750 with 1 convolutions in FP32: {scoring}" in log
    assert "TensorFlow is not fully verified" in log  # Neural Compressor's own warning, kept
    # With fewer trials, the best single fallbacks go back together; none is enough here.
    report, log = tune_quantization(finished_run, tmp_path, max_trials=5)
    trials = report["tuning"]["trials"]
    assert [t["kept_in_fp32"] for t in trials] == [[], [f"{tower}_1"], [tower], [f"{tower}_1", tower]]
    assert report["tuning"]["met_tolerance"] is False and report["tuning"]["chosen_trial"] == 1
    assert (
        "no trial within 0.01 of FP32's AP 0.8750: the best of 4, trial 1, reached AP 0.0000; kept, as "
        "on_tolerance_miss: keep asks"
    ) in log
    # By default a miss fails the stage in one line, and writes nothing.
    run, output = tune_quantization(finished_run, tmp_path, max_trials=5, on_miss="fail")
    assert error_lines(run) == [
        "error: quantize_graph: no trial within 0.01 of FP32's AP 0.8750: the best of 4, trial 1, reached AP 0.0000;"
        " allow more max_trials or a larger accuracy_tolerance, or set on_tolerance_miss: keep to keep it (marked in"
        " the report)"
    ]
    assert list(output.iterdir()) == []


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
