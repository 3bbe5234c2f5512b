#!/usr/bin/env python3
"""Scoring at full scale: time and peak memory of the accuracy scorer (a benchmark, not a test).

Generates a val2017-shaped set (5,000 images, ~36,800 boxes in 80 categories, 300 detections
per image: 1.5 M) and scores it, each in a fresh process, with:
- the workflow's scorer: standard COCO metrics and the legacy ones (evaluate_detections);
- plain pycocotools: loadRes on the same list, COCOeval, standard metrics only.
Prints wall seconds and peak resident memory side by side, and whether the standard numbers
are equal. `evaluate_accuracy`'s mem_mb comes from this figure.

    .venv/bin/python tests/benchmarks/scoring.py [--images 5000] [--detections 300]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from common import run_main  # noqa: E402

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def generate(folder, images, per_image, seed=0):
    """Ground truth as instances_val2017.json and its TFRecord twin (feature dicts, JSON), and
    detections as detect_objects writes them."""
    import numpy as np

    generator = np.random.default_rng(seed)
    ids = sorted(generator.choice(np.arange(139, 581782), images, replace=False).tolist())
    categories = [{"id": i, "name": f"class {i}"} for i in COCO_IDS]
    coco_images, annotations, examples, detections = [], [], [], []
    for image_id in ids:
        height, width = int(generator.choice([480, 640, 427])), int(generator.choice([640, 480, 612]))
        coco_images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id:012d}.jpg"})
        count = int(generator.poisson(7.4))
        boxes = generator.uniform(0, 0.8, (count, 2))
        sizes = generator.uniform(0.02, 0.2, (count, 2))
        labels = generator.choice(COCO_IDS, count)
        for (x, y), (w, h), label in zip(boxes, sizes, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x * width, y * height, w * width, h * height],
                                "area": float(w * width * h * height), "iscrowd": int(generator.random() < 0.012)})  # fmt: skip
        examples.append({
            "image/source_id": [str(image_id)], "image/height": [height], "image/width": [width],
            "image/object/class/label": labels.tolist(),
            "image/object/bbox/xmin": boxes[:, 0].astype(np.float32).tolist(),
            "image/object/bbox/ymin": boxes[:, 1].astype(np.float32).tolist(),
            "image/object/bbox/xmax": (boxes[:, 0] + sizes[:, 0]).astype(np.float32).tolist(),
            "image/object/bbox/ymax": (boxes[:, 1] + sizes[:, 1]).astype(np.float32).tolist(),
        })  # fmt: skip
        low = generator.uniform(0, 0.8, (per_image, 2)).astype(np.float32)
        high = (low + generator.uniform(0.02, 0.2, (per_image, 2))).astype(np.float32)
        scores = np.sort(generator.uniform(0, 1, per_image).astype(np.float32))[::-1]
        classes = generator.choice(COCO_IDS, per_image)
        for (x0, y0), (x1, y1), score, label in zip(low, high, scores, classes):
            detections.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                               "bbox": [float(x0) * width, float(y0) * height, (float(x1) - float(x0)) * width,
                                        (float(y1) - float(y0)) * height]})  # fmt: skip
    (folder / "instances.json").write_text(json.dumps({"images": coco_images, "annotations": annotations,
                                                       "categories": categories}))  # fmt: skip
    (folder / "examples.json").write_text(json.dumps(examples))
    (folder / "detections.json").write_text(json.dumps(detections))
    return len(detections), len(annotations)


WORKFLOW = """
import json, sys
sys.path.insert(0, {scripts!r})
from coco_data import coco_metrics, quiet_coco
from evaluate_detections import legacy_metrics
folder = {folder!r}
detections = json.load(open(folder + "/detections.json"))
examples = [dict(e, **{{"image/source_id": [e["image/source_id"][0].encode()]}}) for e in json.load(open(folder + "/examples.json"))]
ground_truth = quiet_coco(annotation_file=folder + "/instances.json")
image_ids = sorted(ground_truth.getImgIds())
standard, _ = coco_metrics(ground_truth, detections, image_ids)
legacy, _ = legacy_metrics(examples, detections, image_ids, ground_truth.dataset["categories"])
print(json.dumps(list(standard.values())))
"""

PLAIN = """
import contextlib, io, json
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
folder = {folder!r}
with contextlib.redirect_stdout(io.StringIO()):
    ground_truth = COCO(folder + "/instances.json")
    results = ground_truth.loadRes(json.load(open(folder + "/detections.json")))
    evaluation = COCOeval(ground_truth, results, "bbox")
    evaluation.evaluate(); evaluation.accumulate(); evaluation.summarize()
print(json.dumps([float(v) for v in evaluation.stats]))
"""


def measure(code):
    """Wall seconds, peak resident MB and stdout of `code` in a fresh interpreter."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"error: the scorer failed (exit {process.returncode})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=300, help="per image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        count, boxes = generate(Path(scratch), args.images, args.detections)
        print(f"{args.images} images, {boxes} ground-truth boxes, {count} detections; each scorer in a fresh process")
        workflow = measure(WORKFLOW.format(scripts=str(REPO_ROOT / "scripts"), folder=scratch))
        plain = measure(PLAIN.format(folder=scratch))
    print(f"{'scorer':<44} {'seconds':>8} {'peak MB':>8}")
    print(f"{'workflow: standard + legacy':<44} {workflow[0]:>8.1f} {workflow[1]:>8.0f}")
    print(f"{'plain pycocotools: standard only':<44} {plain[0]:>8.1f} {plain[1]:>8.0f}")
    print(f"standard numbers equal: {workflow[2] == plain[2]}")


if __name__ == "__main__":
    run_main(main)
