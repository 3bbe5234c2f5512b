"""The quantize stage on the demo: one-line errors for bad inputs, and accuracy-aware tuning
that gives back to FP32 the convolution that lost AP."""

import json
import shutil

import pytest
from helpers import (
    error_lines,
    run_script,
)


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
