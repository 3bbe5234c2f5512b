"""Helpers the tests share: running a stage script or the workflow as the rules do, and reading
what a run left (one-line errors, layer drift, agreement, the recipe's own inference)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.demo.run_demo import local_run_environment, snakemake_command

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
# The full-size twins `make twin` builds.
TWIN = REPO_ROOT / ".cache" / "twin"


def run_script(name, *arguments, environment=None, onednn=False):
    """Run one stage's script as a rule would; returns the CompletedProcess. `onednn` sets
    TF_ENABLE_ONEDNN_OPTS=1, as the rules running INT8 graphs do."""
    environment = environment or tool_environment()
    if onednn:
        environment = dict(environment, TF_ENABLE_ONEDNN_OPTS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, arguments)], capture_output=True, text=True, env=environment
    )


def rfcn_drift_arguments():
    """--units and --heads of R-FCN, as config/config.yaml gives them."""
    drift = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["architectures"]["rfcn_resnet101"][
        "layer_drift"
    ]
    return ["--units", drift["units"], "--heads", json.dumps(drift["heads"])]


def layer_drift(workdir, candidate, output):
    """measure_layer_drift.py of `candidate` against a finished run's FP32 graph, on 2 images."""
    run = run_script(
        "measure_layer_drift.py",
        "--reference",
        workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--candidate",
        candidate,
        "--images",
        workdir / "resources/coco/val2017",
        "--count",
        2,
        "--output",
        output,
        *rfcn_drift_arguments(),
        onednn=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(output.read_text())


def agreement_with_fp32(workdir, graph, folder):
    """compare_detections of `graph`'s detections on a finished run's TFRecord with its FP32 ones."""
    from compare_detections import compare

    run = run_script(
        "detect_objects.py",
        "--graph",
        graph,
        "--records",
        workdir / "resources/coco_tfrecord",
        "--output",
        folder / "shard.json",
        onednn=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    detections = folder / "detections.json"
    detections.write_text(json.dumps(json.loads((folder / "shard.json").read_text())["detections"]))
    return compare(workdir / "results/accuracy/fp32_detections.json", detections)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def scale_weight_range(graph_path, output, convolution, factor):
    """A copy of an INT8 graph with one quantized convolution's weight range scaled: a
    wrong scale in one layer, as a broken quantization would leave it."""
    import numpy as np

    from detbench.detection_graph import load_graph_def

    graph_def = load_graph_def(graph_path)
    nodes = {node.name: node for node in graph_def.node}
    # Inputs 5 and 6 of Intel's fused quantized convolutions are the weights' range.
    for index in (5, 6):
        tensor = nodes[nodes[convolution].input[index].split(":")[0]].attr["value"].tensor
        if tensor.float_val:
            tensor.float_val[:] = [value * factor for value in tensor.float_val]
        else:
            values = np.frombuffer(tensor.tensor_content, np.float32) * factor
            tensor.tensor_content = values.astype(np.float32).tobytes()
    output.write_bytes(graph_def.SerializeToString())
    return output


def tool_environment(base=None):
    """A local run's environment (run_demo's); a cluster test's `base` keeps its SLURM_CONF."""
    environment = local_run_environment(base)
    if base is not None and "SLURM_CONF" in base:
        environment["SLURM_CONF"] = base["SLURM_CONF"]
    return environment


class Workflow:
    """One working directory of the workflow with its own config file."""

    def __init__(self, workdir, config):
        self.workdir = Path(workdir)
        self.config = config

    def write_config(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return path

    def command(self, *arguments):
        return snakemake_command(self.workdir, self.write_config(), 2, arguments)

    def start(self, *arguments):
        """Snakemake in the background: the Popen, its output to pipes."""
        return subprocess.Popen(
            self.command(*arguments),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tool_environment(),
            cwd=REPO_ROOT,
        )

    def run(self, *arguments, check=True, environment=None):
        result = subprocess.run(
            self.command(*arguments), capture_output=True, text=True, env=tool_environment(environment), cwd=REPO_ROOT
        )
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        return result

    def planned_jobs(self, *arguments):
        """Jobs a dry run would execute, by rule name (the 'Job stats' table)."""
        output = self.run("-n", *arguments).stdout
        jobs = {}
        table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
        for line in table.splitlines()[3:]:
            match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
            if not match:
                break
            jobs[match.group(1)] = int(match.group(2))
        jobs.pop("total", None)
        return jobs


def require_built(folder, target):
    """A data folder `make <target>` builds: under CI it must be there, elsewhere its tests skip."""
    if not (folder / "manifest.json").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no data in {folder}: CI must build it (make test runs make {target})")
        pytest.skip(f"no data in {folder}: run `make {target}`")


def copy_first_records(files, count, output):
    """The first `count` records of TFRecord files, copied byte for byte into `output`."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(output)) as writer:
        for raw in tf.data.TFRecordDataset([str(path) for path in files]).take(count).as_numpy_iterator():
            writer.write(raw)
    return [output]


def upstream_inference_differences(workdir, precision, folder, max_images=0):
    """A finished run's detections of one model against the recipe's own infer_detections on
    the same TFRecord (its first `max_images` records, as the run's accuracy.max_images; 0: all)
    and graph (tools/upstream/upstream_infer.py): images compared, class mismatches, and the
    largest score and normalized box differences, position by position."""
    import numpy as np

    from detbench.coco_data import read_examples

    output = folder / f"upstream-{precision}.record"
    records = sorted((workdir / "resources/coco_tfrecord").glob("coco_val.record*"))
    if max_images:
        records = copy_first_records(records, max_images, folder / "first.record")
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools/upstream/upstream_infer.py"),
            workdir / f"resources/models/{precision}/frozen_inference_graph.pb",
            output,
            *records,
        ],
        capture_output=True,
        text=True,
        env=dict(tool_environment(), TF_ENABLE_ONEDNN_OPTS="1"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ours = {}
    for detection in json.loads((workdir / f"results/accuracy/{precision}_detections.json").read_text()):
        ours.setdefault(detection["image_id"], []).append(detection)
    mismatches, worst_score, worst_box, images = 0, 0.0, 0.0, 0
    for features in read_examples([output]):
        image_id, height, width = (
            int(features["image/source_id"][0]),
            features["image/height"][0],
            features["image/width"][0],
        )
        corners = np.array([features[f"image/detection/bbox/{c}"] for c in ("ymin", "xmin", "ymax", "xmax")]).T
        mine = ours.get(image_id, [])
        assert len(mine) == len(features["image/detection/label"]), image_id
        for detection, box, score, label in zip(
            mine, corners, features["image/detection/score"], features["image/detection/label"]
        ):
            x, y, w, h = detection["bbox"]
            normalized = np.array([y / height, x / width, (y + h) / height, (x + w) / width])
            mismatches += detection["category_id"] != label
            worst_score = max(worst_score, abs(detection["score"] - score))
            worst_box = max(worst_box, float(np.abs(normalized - box).max()))
        images += 1
    return images, mismatches, worst_score, worst_box


# The demo registry's models (tools/demo/demo_config.py): on TensorFlow, then on OpenVINO (the
# finished run has both; runs about the workflow itself, the first only).
DEMO_MODELS = ("int8", "fp32", "int8_inc", "bf16")
DEMO_OPENVINO_MODELS = ("openvino_fp32", "openvino_int8", "openvino_bf16")
# The models the finished demo run runs LoadGen on (tools/demo/demo_config.py's DEMO_LOADGEN).
DEMO_LOADGEN_MODELS = ("int8", "fp32", "openvino_fp32")


def result(workflow, kind, model):
    """A finished run's results/<kind>/<model>.json."""
    return json.loads((workflow.workdir / f"results/{kind}/{model}.json").read_text())


# The twin run (conftest.twin_run).
# The twin run's models. Self-made INT8s are not among them: each twin's INT8 graph is already
# quantize_graph's work on its FP32 twin (make_twin, cached), and the real-weights run
# (test_real_weights.py) quantizes an SSD graph that sees, with its BF16 beside it. R-FCN has
# BF16 too; Faster R-CNN, the slowest graph (2.7 s per image), and SSD-MobileNet Intel's two, as
# the zoo shipped them.
RFCN_MODELS = ("int8", "fp32", "bf16")
FAMILY_MODELS = ("frcnn_int8", "frcnn_fp32", "ssd_int8", "ssd_fp32")
# SSD-MobileNet on OpenVINO, FP32 and NNCF's INT8. R-FCN's and Faster R-CNN's are make
# twin-demo's: Faster R-CNN's two added 338 s to this run (3.5-4.4 s an image on OpenVINO).
OPENVINO_TWIN_MODELS = ("ssd_openvino_fp32", "ssd_openvino_int8")
# LoadGen on SSD-MobileNet's FP32 on each engine (make twin-demo adds R-FCN's FP32).
TWIN_RUN_LOADGEN_MODELS = ["ssd_fp32", "ssd_openvino_fp32"]
MODELS = RFCN_MODELS + FAMILY_MODELS + OPENVINO_TWIN_MODELS
# Detections per image: the configs' max_total_detections (R-FCN, Faster R-CNN 300; SSD 100).
DETECTIONS_PER_IMAGE = {"rfcn": 300, "frcnn": 300, "ssd": 100}
# A shorter benchmark than make twin-demo's (20 steps after 5, 3 traced), in one round (the
# demo's run has rounds): every model is timed, profiled and probed all the same.
TWIN_RUN_BENCHMARK = {"number_of_steps": 10, "warmup_steps": 2, "profile_steps": 1, "repeats": 1}
# The twin run detects on the first 12 of the twin's 24 images (make twin-demo on all): each
# model's detections cost its per-image time again, Faster R-CNN's 3-4 s. The SSD twin's legacy
# metrics score the first 10 of those, as Intel's SSD loop scored the first 4,952 of val2017's 5,000.
TWIN_ACCURACY_IMAGES = 12
TWIN_LEGACY_IMAGES = 10


def read_json(workflow, path):
    return json.loads((workflow.workdir / path).read_text())


def family(model):
    """rfcn, frcnn or ssd: a twin run model's architecture, by its prefix."""
    return model.split("_")[0] if model.startswith(("frcnn_", "ssd_")) else "rfcn"
