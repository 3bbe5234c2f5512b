"""The workflow end to end on the mini COCO, through a real HTTP server, and its caching."""

import copy
import json
import shutil
import subprocess
import sys

import pytest
from helpers import DEMO_LOADGEN_MODELS, DEMO_MODELS, DEMO_OPENVINO_MODELS, Workflow
from prepare_frozen_graph import check_detection_graph

from detbench.coco_data import read_examples
from detbench.common import file_digests
from tools.demo.demo_config import demo_config

# Every job of a run from nothing: four models (two downloaded, one quantized here, one BF16 of
# the FP32 graph), one accuracy shard each; three compared with FP32.
RULES_RUN_ONCE = {
    "download_file": 4,
    "extract_coco_images": 1,
    "extract_coco_annotations": 1,
    "write_empty_annotations": 1,
    "checkout_tensorflow_models": 1,
    "convert_coco_to_tfrecord": 1,
    "prepare_frozen_graph": 2,
    "quantize_graph": 1,
    "benchmark_graph": 4,
    "benchmark_repeat": 4,
    "run_loadgen": 4,
    "detect_objects": 4,
    "evaluate_accuracy": 4,
    "compare_with_reference": 3,
    "measure_layer_drift": 3,
    "draw_gallery": 1,
    "make_report": 1,
    "all": 1,
}


def test_tfrecord_holds_every_image_with_its_boxes(finished_run):
    workflow = finished_run
    annotations = json.loads((workflow.workdir / "resources/coco/annotations/instances_val2017.json").read_text())
    folder = workflow.workdir / "resources/coco_tfrecord"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["coco_val.record", "summary.json"]
    examples = {e["image/source_id"][0].decode(): e for e in read_examples([folder / "coco_val.record"])}
    assert set(examples) == {str(image["id"]) for image in annotations["images"]}
    for image in annotations["images"]:
        example = examples[str(image["id"])]
        assert example["image/height"] == [image["height"]] and example["image/width"] == [image["width"]]
        assert example["image/encoded"][0][:2] == b"\xff\xd8"  # the JPEG itself
        expected = sorted(
            (
                a["category_id"],
                a["bbox"][0] / image["width"],
                a["bbox"][1] / image["height"],
                (a["bbox"][0] + a["bbox"][2]) / image["width"],
                (a["bbox"][1] + a["bbox"][3]) / image["height"],
            )
            for a in annotations["annotations"]
            if a["image_id"] == image["id"]
        )
        written = sorted(
            zip(
                example["image/object/class/label"],
                example["image/object/bbox/xmin"],
                example["image/object/bbox/ymin"],
                example["image/object/bbox/xmax"],
                example["image/object/bbox/ymax"],
            )
        )
        assert [w[0] for w in written] == [e[0] for e in expected]
        for got, want in zip(written, expected):
            assert got[1:] == pytest.approx(want[1:], abs=1e-6)


def test_both_graphs_are_in_place_and_checked(finished_run):
    workflow = finished_run
    int8 = check_detection_graph(workflow.workdir / "resources/models/int8/frozen_inference_graph.pb")
    fp32 = check_detection_graph(workflow.workdir / "resources/models/fp32/frozen_inference_graph.pb")
    assert "QuantizedConv2DWithBiasAndReluAndRequantize" in int8
    assert "Conv2D" in fp32


def test_every_rule_wrote_its_log(finished_run):
    workflow = finished_run
    logs = sorted(str(p.relative_to(workflow.workdir / "logs")) for p in (workflow.workdir / "logs").rglob("*.log"))
    models = sorted(DEMO_MODELS + DEMO_OPENVINO_MODELS)
    compared = [name for name in models if name != "fp32"]
    assert logs == sorted(
        [
            *(f"benchmark_graph/{name}.log" for name in models),
            *(f"benchmark_repeat/{name}-2.log" for name in models),
            "checkout_tensorflow_models.log",
            *(f"compare_with_reference/{name}.log" for name in compared),
            "convert_coco_to_tfrecord.log",
            "convert_to_openvino/fp32.log",
            *(f"detect_objects/{name}-0-of-1.log" for name in models),
            "download_file/annotations_trainval2017.zip.log",
            "download_file/rfcn_resnet101_fp32_coco_pretrained_model.tar.gz.log",
            "download_file/rfcn_resnet101_int8_coco_pretrained_model.pb.log",
            "download_file/val2017.zip.log",
            "draw_gallery.log",
            *(f"evaluate_accuracy/{name}.log" for name in models),
            "extract_coco_annotations.log",
            "extract_coco_images.log",
            "make_report.log",
            # Layer drift reads TensorFlow's activations: the TensorFlow models only.
            "measure_layer_drift/bf16.log",
            "measure_layer_drift/int8.log",
            "measure_layer_drift/int8_inc.log",
            "prepare_frozen_graph/fp32.log",
            "prepare_frozen_graph/int8.log",
            "quantize_graph/int8_inc.log",
            "quantize_openvino/openvino_int8.log",
            *(
                f"run_loadgen/{model}-{scenario}.log"
                for model in DEMO_LOADGEN_MODELS
                for scenario in ("Offline", "SingleStream")
            ),
            "write_empty_annotations.log",
        ]
    )
    assert "sha256" in (workflow.workdir / "logs/download_file/val2017.zip.log").read_text()


@pytest.mark.slow
def test_reruns_exactly_what_a_change_touches(finished_run, tmp_path, demo_data, file_server):
    server = file_server
    config = demo_config(demo_data, server.url)
    config["benchmark"] = dict(finished_run.config["benchmark"])
    assert Workflow(tmp_path / "fresh", config).planned_jobs() == RULES_RUN_ONCE
    # From a finished run (a copy of the shared one), with two of its models (the others'
    # jobs are of the same rules, and would only make the reruns below longer): files served
    # from another URL with the same checksums are the same files, so only the report reruns,
    # for the models it lost.
    shutil.copytree(finished_run.workdir, tmp_path / "run", symlinks=True)
    config["models"] = {name: config["models"][name] for name in ("int8", "fp32")}
    workflow = Workflow(tmp_path / "run", config)
    assert workflow.planned_jobs() == {"draw_gallery": 1, "make_report": 1, "all": 1}
    workflow.run()
    assert workflow.planned_jobs() == {}

    # A new conversion pin: checkout and conversion again, no download.
    workflow.config["tensorflow_models"]["commit"] = json.loads((demo_data / "manifest.json").read_text())["commits"][
        "sharded"
    ]
    assert workflow.planned_jobs() == {
        "checkout_tensorflow_models": 1,
        "convert_coco_to_tfrecord": 1,
        "detect_objects": 2,
        "evaluate_accuracy": 2,
        "compare_with_reference": 1,
        "draw_gallery": 1,
        "make_report": 1,
        "all": 1,
    }
    requests_before = len(server.requests)
    workflow.run()
    assert len(server.requests) == requests_before
    summary = json.loads((workflow.workdir / "resources/coco_tfrecord/summary.json").read_text())
    assert len(summary["files"]) == 10 and summary["files"][0] == "coco_val.record-00000-of-00010"
    assert summary["class_key"] == "image/object/class/text" and summary["records"] == 8

    # A mirror with the same files (a new URL, the same checksums): nothing reruns.
    mirror = demo_data / "files" / "mirror"
    mirror.mkdir(exist_ok=True)
    shutil.copy(demo_data / "files" / "rfcn_resnet101_int8_coco_pretrained_model.pb", mirror)
    int8_download = workflow.config["downloads"]["rfcn_resnet101_int8_coco_pretrained_model.pb"]
    int8_download["url"] = f"{server.url}/mirror/rfcn_resnet101_int8_coco_pretrained_model.pb"
    assert workflow.planned_jobs() == {}

    # A new checksum for the INT8 graph (a sha256 beside its md5): that download and that graph only.
    int8_download["sha256"] = file_digests(mirror / "rfcn_resnet101_int8_coco_pretrained_model.pb")["sha256"]
    assert workflow.planned_jobs() == {
        "download_file": 1,
        "prepare_frozen_graph": 1,
        "benchmark_graph": 1,
        "benchmark_repeat": 1,
        "run_loadgen": 2,
        "detect_objects": 1,
        "evaluate_accuracy": 1,
        "compare_with_reference": 1,
        "measure_layer_drift": 1,
        "draw_gallery": 1,
        "make_report": 1,
        "all": 1,
    }
    workflow.run()
    assert server.requests[-1]["path"] == "/mirror/rfcn_resnet101_int8_coco_pretrained_model.pb"
    assert workflow.planned_jobs() == {}

    # Without a checksum the URL is all that says which file it is: a new one reruns.
    annotations = workflow.config["downloads"]["annotations_trainval2017.zip"]
    annotations.pop("md5")
    assert workflow.planned_jobs()["download_file"] == 1
    workflow.run()
    annotations["url"] += "?mirror=2"
    assert workflow.planned_jobs()["download_file"] == 1
    annotations["url"] = annotations["url"].removesuffix("?mirror=2")

    # Accuracy-aware quantization: the self-made INT8 and what stands on it, nothing else.
    # (the model is back, its other jobs as they were; the TFRecord and annotations changed above
    # would rerun its detection and scoring anyway)
    int8_inc = copy.deepcopy(finished_run.config["models"]["int8_inc"])
    int8_inc["quantize"].update(accuracy_tolerance=0.01, tuning_images=4, max_trials=3)
    workflow.config["models"]["int8_inc"] = int8_inc
    assert workflow.planned_jobs() == {
        "quantize_graph": 1,
        "benchmark_graph": 1,
        "benchmark_repeat": 1,
        "detect_objects": 1,
        "evaluate_accuracy": 1,
        "compare_with_reference": 1,
        "measure_layer_drift": 1,
        "draw_gallery": 1,
        "make_report": 1,
        "all": 1,
    }


def test_a_model_is_one_registry_entry(finished_run, tmp_path):
    """Adding an entry to models: plans that model's jobs and the report, and nothing else;
    changing one model's runtime reruns that model's inference jobs only."""
    shutil.copytree(finished_run.workdir, tmp_path / "run", symlinks=True)
    config = copy.deepcopy(finished_run.config)
    workflow = Workflow(tmp_path / "run", config)
    config["models"]["int8_per_channel"] = {
        "architecture": "rfcn_resnet101",
        "precision": "int8",
        "quantize": {"from": "fp32", "calibration_images": 4, "weight_granularity": "per_channel"},
    }
    assert workflow.planned_jobs() == {
        "quantize_graph": 1,
        "benchmark_graph": 1,
        "benchmark_repeat": 1,
        "detect_objects": 1,
        "evaluate_accuracy": 1,
        "compare_with_reference": 1,
        "measure_layer_drift": 1,
        "draw_gallery": 1,
        "make_report": 1,
        "all": 1,
    }
    del config["models"]["int8_per_channel"]
    config["models"]["bf16"]["runtime"] = {"kmp_blocktime": 0}
    assert workflow.planned_jobs() == {
        "benchmark_graph": 1,
        "benchmark_repeat": 1,
        "detect_objects": 1,
        "evaluate_accuracy": 1,
        "compare_with_reference": 1,
        "draw_gallery": 1,
        "make_report": 1,
        "all": 1,
    }
    assert "--kmp-blocktime=0" in workflow.run("-n", "-p", "results/benchmark/bf16.json").stdout


def test_stage_targets_run_alone(tmp_path, demo_data, file_server):
    workflow = Workflow(tmp_path, demo_config(demo_data, file_server.url))
    assert workflow.planned_jobs("checkout_tensorflow_models") == {"checkout_tensorflow_models": 1}
    # The self-made INT8 graph is calibrated on val2017 images: that download too.
    assert workflow.planned_jobs("prepare_models") == {
        "download_file": 3,
        "extract_coco_images": 1,
        "prepare_frozen_graph": 2,
        "quantize_graph": 1,
        "prepare_models": 1,
    }
    assert workflow.planned_jobs("download_inputs") == {"download_file": 4, "download_inputs": 1}


def test_failed_download_stops_the_run_and_leaves_no_output(tmp_path, demo_data, file_server):
    config = demo_config(demo_data, file_server.url)
    config["downloads"]["val2017.zip"]["md5"] = "0" * 32
    workflow = Workflow(tmp_path, config)
    result = workflow.run("download_inputs", "--keep-going", check=False)
    assert result.returncode != 0
    log = (tmp_path / "logs/download_file/val2017.zip.log").read_text()
    assert "error: http://127.0.0.1:" in log and "checksum mismatch" in log
    assert not (tmp_path / "resources/downloads/val2017.zip").exists()
    assert (tmp_path / "resources/downloads/annotations_trainval2017.zip").exists()


def test_finished_folder_moved_to_another_depth_reruns_nothing(finished_run, tmp_path):
    """A script's path relative to the work folder is not what a job computes."""
    moved = tmp_path / "a" / "b" / "c" / "run"
    shutil.copytree(finished_run.workdir, moved, symlinks=True)
    workflow = Workflow(moved, finished_run.config)
    assert workflow.planned_jobs() == {}


@pytest.mark.parametrize("kind", ["symlink", "mount point"])
def test_failed_download_into_a_linked_folder_is_one_line(tmp_path, demo_data, small_tmpfs, kind):
    """Snakemake removes the empty folder of a missing output; a link or a mount point can't be."""
    config = demo_config(demo_data, "http://127.0.0.1:9")
    config["downloads"]["val2017.zip"].update(url=str(demo_data / "files" / "val2017.zip"), md5="0" * 32)
    workdir = tmp_path / "run"
    (workdir / "resources").mkdir(parents=True)
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir()
        (workdir / "resources" / "downloads").symlink_to(tmp_path / "elsewhere")
    else:
        disk = small_tmpfs("64m")  # unmounted after the test
        (workdir / "resources" / "downloads").mkdir()
        subprocess.run(["mount", "--bind", str(disk), str(workdir / "resources" / "downloads")], check=True)
    try:
        result = Workflow(workdir, config).run("resources/downloads/val2017.zip", check=False)
    finally:
        if kind != "symlink":
            subprocess.run(["umount", str(workdir / "resources" / "downloads")], check=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.rstrip().endswith("At least one job did not complete successfully.")
    assert "checksum mismatch" in (workdir / "logs/download_file/val2017.zip.log").read_text()


def test_local_runs_never_wait_for_a_slurm_controller(tmp_path, demo_data):
    """The SLURM plugin runs `scontrol show config` at every start; a local run gives it a
    SLURM_CONF that answers at once, whatever the host's configuration says."""
    import os

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$SLURM_CONF $*" >> {tmp_path}/scontrol.calls\nexit 1\n')
    (fake / "scontrol").chmod(0o755)
    host = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_CONF": "/etc/slurm/unreachable.conf"}
    from tools.demo.run_demo import local_run_environment

    environment = local_run_environment(host)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--version"], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "scontrol.calls").read_text().splitlines()
    assert calls and all(call == "/dev/null show config" for call in calls), calls
