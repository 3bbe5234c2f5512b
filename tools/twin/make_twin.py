#!/usr/bin/env python3
"""Build full-size twins of Intel's COCO detection graphs, offline, from PyPI packages only.

The demo's detectors are tiny and loop-free; Intel's graphs are Object Detection API exports
with thousands of nodes, TF1 while loops, TensorArrays and Assert. The twins have their
structure, one per architecture of the family (ARCHITECTURES: R-FCN ResNet101, Faster R-CNN
ResNet50, SSD-MobileNet v1):
- FP32: the model built by the real Object Detection API code (PyPI object-detection 0.0.3,
  run on TensorFlow 2 by odapi_compat.py) from the model section of the upstream sample
  config, with seeded random weights whose BatchNorm statistics are measured on images (so
  activations stay finite through the network), and exported by the upstream exporter
  (`export_inference_graph`, input type `image_tensor`). SSD's post-processing is then
  replaced by combined NMS, as in Intel's `..._combinedNMS` graphs;
- INT8: that graph quantized by Intel Neural Compressor (static post-training quantization,
  calibrated on a few images), which gives Intel's fused quantized op family. Intel's INT8
  SSD-MobileNet starts after the preprocessor (`Preprocessor/subpart2`), fed by a separate
  `ssdmobilenet_preprocess.pb`: the twin's is cut the same way;
- a generated COCO val2017 at real image sizes, and the tensorflow/models stand-in.

The folder has the demo data's layout (files/, tensorflow_models/, manifest.json), so
run_demo.py runs the workflow on it. Each architecture's graphs are rebuilt only when their
inputs change (the manifest records a digest per architecture; graphs whose digest still
matches are kept), and the folder appears under its name only when complete.

Steps run as child processes (`export-fp32`, `quantize-int8`): the Object Detection API
needs TF1 behaviour process-wide, and each step's peak memory is its own.
"""

import argparse
import hashlib
import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detbench.common import StageError, atomic_directory, file_digests, run_main
from detbench.detection_graph import load_graph_def
from tools.demo.make_demo_data import (
    COCO_CATEGORIES,
    DEFAULT_WHEEL,
    FP32_ARCHIVE,
    FP32_MEMBER,
    INT8_GRAPH,
    mini_coco,
    write_coco_archives,
    write_fp32_archive,
    write_manifest,
)
from tools.twin.twin_graphs import export_fp32, graph_facts, quantize_int8, subgraph_to, unpack_object_detection

TWIN_TOOLS = Path(__file__).resolve().parent
REPO_ROOT = TWIN_TOOLS.parents[1]

log = logging.getLogger("make_twin")

DEFAULT_OUTPUT = REPO_ROOT / ".cache" / "twin"
PROTOS_WHEEL = REPO_ROOT / ".cache" / "wheels" / "object_detection_0.1-0.1-py3-none-any.whl"
REQUIREMENTS = REPO_ROOT / "requirements-twin.txt"
QUANTIZE_REQUIREMENTS = REPO_ROOT / "requirements-quantize.txt"
# What a change to should rebuild every architecture's twin.
INPUT_FILES = (
    Path(__file__),
    REPO_ROOT / "tools" / "upstream" / "odapi_compat.py",
    TWIN_TOOLS / "twin_graphs.py",
    REPO_ROOT / "tools" / "demo" / "make_demo_data.py",
    REQUIREMENTS,
    QUANTIZE_REQUIREMENTS,
    REPO_ROOT / "requirements.txt",
    REPO_ROOT / "scripts" / "detbench" / "quantization.py",
    REPO_ROOT / "scripts" / "detbench" / "residual_bias.py",
)
REQUIRED_MODULES = {"tf_slim": "tf-slim", "tf_keras": "tf-keras", "neural_compressor": "neural-compressor-tf"}


@dataclass(frozen=True)
class TwinGraphs:
    """One architecture's twin: its upstream config, and the file names of Intel's graphs."""

    architecture: str
    config: Path
    fp32: str  # the file in files/: Intel's FP32 graph, or its tarball (with fp32_member)
    int8: str
    fp32_member: str = None
    # SSD-MobileNet: combined NMS, and an INT8 graph fed by a separate preprocessing graph.
    combined_nms: bool = False
    preprocess: str = None
    cut_at: str = "Preprocessor/sub"
    cut_input: str = "Preprocessor/subpart2"
    extra_inputs: tuple = ()

    def inputs(self):
        return (self.config, *self.extra_inputs)

    def files(self):
        return [name for name in (self.fp32, self.int8, self.preprocess) if name]


ARCHITECTURES = (
    TwinGraphs("rfcn_resnet101", TWIN_TOOLS / "rfcn_resnet101_coco.config", FP32_ARCHIVE, INT8_GRAPH, FP32_MEMBER),
    TwinGraphs(
        "faster_rcnn_resnet50",
        TWIN_TOOLS / "faster_rcnn_resnet50_coco.config",
        "faster_rcnn_fp32_pretrained_model.pb",
        "faster_rcnn_int8_pretrained_model.pb",
    ),
    TwinGraphs(
        "ssd_mobilenet_v1",
        TWIN_TOOLS / "ssd_mobilenet_v1_coco.config",
        "ssdmobilenet_fp32_pretrained_model_combinedNMS.pb",
        "ssdmobilenet_int8_pretrained_model_combinedNMS_s8.pb",
        combined_nms=True,
        preprocess="ssdmobilenet_preprocess.pb",
        extra_inputs=(TWIN_TOOLS / "mobilenet_v1.py",),
    ),
)
ARCHITECTURE_NAMES = tuple(twin.architecture for twin in ARCHITECTURES)
# Image sizes of COCO val2017's most common shapes.
IMAGE_SIZES = ((640, 480), (480, 640), (640, 427), (640, 360), (500, 375), (612, 612))
# The twin's run: a short benchmark (the real config has 500 steps) over all images.
TWIN_BENCHMARK = {"number_of_steps": 25, "warmup_steps": 5, "batch_size": 1}


def twin_layout(count, seed):
    """`count` images in make_demo_data's layout format: COCO sizes, 1-6 objects each."""
    generator = np.random.default_rng(seed)
    categories = sorted(COCO_CATEGORIES)
    layout = []
    for index in range(count):
        width, height = IMAGE_SIZES[index % len(IMAGE_SIZES)]
        objects = []
        for _ in range(int(generator.integers(1, 7))):
            w, h = (int(generator.integers(16, size // 2)) for size in (width, height))
            x, y = int(generator.integers(0, width - w)), int(generator.integers(0, height - h))
            colour = tuple(int(c) for c in generator.integers(0, 256, 3))
            objects.append((int(generator.choice(categories)), x, y, w, h, colour, 0))
        layout.append((100000 + index, width, height, False, objects))
    return layout


def twin_painter(seed):
    """Draws images with textured backgrounds, so that calibration sees varied statistics."""
    generator = np.random.default_rng(seed)

    def draw(width, height, grayscale, objects):
        rows, columns = np.mgrid[0:height, 0:width] / max(width, height)
        slopes = generator.uniform(-200, 200, (2, 3))
        pixels = generator.uniform(40, 215, 3) + rows[..., None] * slopes[0] + columns[..., None] * slopes[1]
        pixels += generator.normal(0, 20, (height, width, 3))
        for _, x, y, w, h, colour, _ in objects:
            pixels[y : y + h, x : x + w] = colour
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")

    return draw


def architecture_digest(twin, count, seed, calibration_images):
    """sha256 over everything one architecture's twin graphs (and the images) are made from."""
    digest = hashlib.sha256(json.dumps([twin.architecture, count, seed, calibration_images]).encode())
    for path in (*INPUT_FILES, *twin.inputs(), DEFAULT_WHEEL, PROTOS_WHEEL):
        digest.update(path.name.encode())
        digest.update(file_digests(path, ("sha256",))["sha256"].encode())
    return digest.hexdigest()


def architecture_digests(count, seed, calibration_images, architectures=ARCHITECTURE_NAMES):
    return {
        twin.architecture: architecture_digest(twin, count, seed, calibration_images)
        for twin in ARCHITECTURES
        if twin.architecture in architectures
    }


def inputs_digest(count, seed, calibration_images, architectures=ARCHITECTURE_NAMES):
    """sha256 over everything the whole twin is made from: its architectures' digests."""
    digests = architecture_digests(count, seed, calibration_images, architectures)
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def check_packages():
    import importlib.util

    missing = [package for module, package in REQUIRED_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise StageError(f"twin step check_packages: {', '.join(missing)} not installed: run `make twin`")
    for wheel in (DEFAULT_WHEEL, PROTOS_WHEEL):
        if not wheel.is_file():
            raise StageError(f"twin step check_packages: no {wheel}: run `make wheels`")


def run_step(name, arguments, logs):
    """Run one step of this script in a child process; its log goes to `logs`/<name>.log."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), name, *map(str, arguments)]
    log.info("step %s: %s (log: %s)", name, " ".join(command[2:]), log_path)
    started = time.perf_counter()
    with open(log_path, "w") as log_file:
        status = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    text = log_path.read_text(errors="replace")
    if status != 0:
        lines = [line for line in text.splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else "")
        raise StageError(f"twin step {name} failed (exit {status}): {cause.removeprefix('error: ')} (log: {log_path})")
    peak = json.loads(text.rsplit("PEAK_RSS_MB ", 1)[1].split()[0]) if "PEAK_RSS_MB " in text else None
    log.info("step %s: %.0f s, peak %s MB", name, seconds, peak)
    return {"seconds": round(seconds, 1), "peak_rss_mb": peak}


def make_twin(output=DEFAULT_OUTPUT, count=24, seed=0, calibration_images=4, force=False, reuse_from=()):
    """Build the twin under `output` unless it is there with the same inputs; returns the manifest.

    An architecture whose graphs are current (same digest) in `output`, or in a folder of
    `reuse_from` (another twin, say the machine cache's), is copied rather than built.
    """
    output = Path(output)
    check_packages()
    digests = architecture_digests(count, seed, calibration_images)
    digest = inputs_digest(count, seed, calibration_images)
    manifest_path = output / "manifest.json"
    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("inputs_sha256") == digest:
            log.info("twin in %s is up to date", output)
            return manifest
    logs = output.parent / f"{output.name}-logs"
    with atomic_directory(output) as work:
        files = work / "files"
        files.mkdir()
        instances, jpegs = mini_coco(
            twin_layout(count, seed), twin_painter(seed), "COCO val2017 twin at real image sizes"
        )
        write_coco_archives(files, instances, jpegs)
        source_root = work / "object_detection_api"
        unpack_object_detection(DEFAULT_WHEEL, PROTOS_WHEEL, source_root)
        built = {}
        for twin in ARCHITECTURES:
            sources = () if force else (output, *reuse_from)
            built[twin.architecture] = reused_graphs(twin, digests[twin.architecture], sources, files)
            if built[twin.architecture] is None:
                built[twin.architecture] = build_graphs(twin, work, files, logs, seed, calibration_images)
            built[twin.architecture]["inputs_sha256"] = digests[twin.architecture]
        shutil.rmtree(source_root)
        manifest = write_manifest(
            work,
            files,
            DEFAULT_WHEEL,
            inputs_sha256=digest,
            benchmark=TWIN_BENCHMARK,
            images=count,
            architectures=built,
        )
    for architecture, facts in built.items():
        for precision, graph in facts["graphs"].items():
            log.info("%s %s graph: %d bytes, %d nodes", architecture, precision, graph["bytes"], graph["nodes"])
    log.info("twin in %s", output)
    return manifest


def reused_graphs(twin, digest, sources, files):
    """Copy an architecture's graphs from the first twin folder where they are current;
    returns their manifest entry, or None."""
    for source in sources:
        try:
            entry = json.loads((Path(source) / "manifest.json").read_text())["architectures"][twin.architecture]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        paths = [Path(source) / "files" / name for name in twin.files()]
        if entry.get("inputs_sha256") == digest and all(path.is_file() for path in paths):
            for path in paths:
                shutil.copyfile(path, files / path.name)
            log.info("%s twin graphs are current in %s: copied", twin.architecture, source)
            return entry
    return None


def build_graphs(twin, work, files, logs, seed, calibration_images):
    """Export, quantize (and for SSD cut) one architecture's graphs into `files`; returns
    their manifest entry: build steps (seconds, peak memory) and graph facts."""
    source_root, export_dir = work / "object_detection_api", work / f"export-{twin.architecture}"
    export_arguments = [source_root, twin.config, files / "val2017.zip", export_dir, "--seed", seed]
    if twin.combined_nms:
        export_arguments.append("--combined-nms")
    steps = {"export_fp32": run_step("export-fp32", export_arguments, logs / twin.architecture)}
    fp32_graph = export_dir / "frozen_inference_graph.pb"
    quantize_arguments = [
        fp32_graph,
        files / "val2017.zip",
        files / twin.int8,
        "--calibration-images",
        calibration_images,
    ]
    if twin.preprocess:
        quantize_arguments += ["--cut-at", twin.cut_at, "--cut-input", twin.cut_input]
        (files / twin.preprocess).write_bytes(subgraph_to(load_graph_def(fp32_graph), twin.cut_at).SerializeToString())
    steps["quantize_int8"] = run_step("quantize-int8", quantize_arguments, logs / twin.architecture)
    graphs = {"fp32": graph_facts(fp32_graph), "int8": graph_facts(files / twin.int8)}
    if twin.preprocess:
        graphs["preprocess"] = graph_facts(files / twin.preprocess)
    if twin.fp32_member:
        write_fp32_archive(files, fp32_graph, twin.fp32, twin.fp32_member)
    else:
        shutil.copyfile(fp32_graph, files / twin.fp32)
    shutil.rmtree(export_dir)
    return {"build": steps, "graphs": graphs}


def report_peak_memory():
    print(f"PEAK_RSS_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step")
    build = steps.add_parser("build", help="the whole twin (the default)")
    build.add_argument("output", type=Path, nargs="?", default=DEFAULT_OUTPUT)
    build.add_argument("--images", type=int, default=24, help="generated COCO images")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--calibration-images", type=int, default=4, help="images Neural Compressor calibrates on")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    export = steps.add_parser("export-fp32", help="step: build, weight and export the FP32 graph")
    export.add_argument("source_root", type=Path, help="folder holding object_detection/")
    export.add_argument("model_config", type=Path, help="a pipeline config with the model section")
    export.add_argument("images_zip", type=Path, help="val2017.zip (BatchNorm statistics)")
    export.add_argument("output_dir", type=Path)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--combined-nms", action="store_true", help="SSD: post-processing by combined NMS")
    quantize = steps.add_parser("quantize-int8", help="step: quantize the FP32 graph with Neural Compressor")
    quantize.add_argument("fp32_graph", type=Path)
    quantize.add_argument("images_zip", type=Path, help="val2017.zip (calibration)")
    quantize.add_argument("output", type=Path)
    quantize.add_argument("--calibration-images", type=int, default=4)
    quantize.add_argument("--cut-at", help="start the quantized graph after this tensor...")
    quantize.add_argument("--cut-input", help="...at a placeholder of this name")
    args = parser.parse_args(sys.argv[1:] or ["build"])
    if args.step == "export-fp32":
        export_fp32(args.source_root, args.model_config, args.images_zip, args.output_dir, args.seed, args.combined_nms)
        report_peak_memory()
    elif args.step == "quantize-int8":
        quantize_int8(
            args.fp32_graph, args.images_zip, args.output, args.calibration_images, args.cut_at, args.cut_input
        )
        report_peak_memory()
    else:
        make_twin(args.output, args.images, args.seed, args.calibration_images, args.force)


if __name__ == "__main__":
    run_main(main)
