#!/usr/bin/env python3
"""Scoring at full scale: time and peak memory of the accuracy scorer (a benchmark, not a test).

Generates a val2017-shaped set (5,000 images, ~36,800 boxes in 80 categories, 300 detections
per image: 1.5 M) as the accuracy stage gets it: instances JSON, the conversion's TFRecord
(without pixels) and a detections file. Then scores it, each in a fresh process, with:
- the workflow's stage, scripts/evaluate_detections.py: merge, standard COCO metrics and the
  legacy ones (scripts/box_scoring.py: numba-compiled matching);
- plain pycocotools: loadRes on the same list, COCOeval, standard metrics only.
Prints wall seconds and peak resident memory side by side, and whether the standard numbers
are equal. `evaluate_accuracy`'s mem_mb comes from this figure.

    .venv/bin/python tools/measure/scoring.py [--images 5000] [--detections 300]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from detbench.common import run_main

REPO_ROOT = Path(__file__).resolve().parents[2]

COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def generate(folder, images, per_image, seed=0):
    """Ground truth as instances_val2017.json and as the conversion's TFRecord, and detections
    as one detect_objects file."""
    import numpy as np
    import tensorflow as tf

    def feature(kind, values):
        lists = {"bytes": tf.train.BytesList, "int64": tf.train.Int64List, "float": tf.train.FloatList}
        return tf.train.Feature(**{f"{kind}_list": lists[kind](value=values)})

    generator = np.random.default_rng(seed)
    ids = sorted(generator.choice(np.arange(139, 581782), images, replace=False).tolist())
    categories = [{"id": i, "name": f"class {i}"} for i in COCO_IDS]
    coco_images, annotations, detections = [], [], []
    (folder / "records").mkdir()
    with tf.io.TFRecordWriter(str(folder / "records" / "coco_val.record")) as writer:
        for image_id in ids:
            height, width = int(generator.choice([480, 640, 427])), int(generator.choice([640, 480, 612]))
            coco_images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id:012d}.jpg"})
            count = int(generator.poisson(7.4))
            boxes = generator.uniform(0, 0.8, (count, 2))
            sizes = generator.uniform(0.02, 0.2, (count, 2))
            labels = generator.choice(COCO_IDS, count)
            for (x, y), (w, h), label in zip(boxes, sizes, labels):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": [x * width, y * height, w * width, h * height],
                        "area": float(w * width * h * height),
                        "iscrowd": int(generator.random() < 0.012),
                    }
                )
            example = {
                "image/source_id": feature("bytes", [str(image_id).encode()]),
                "image/height": feature("int64", [height]),
                "image/width": feature("int64", [width]),
                "image/object/class/label": feature("int64", labels.tolist()),
                "image/object/bbox/xmin": feature("float", boxes[:, 0].tolist()),
                "image/object/bbox/ymin": feature("float", boxes[:, 1].tolist()),
                "image/object/bbox/xmax": feature("float", (boxes[:, 0] + sizes[:, 0]).tolist()),
                "image/object/bbox/ymax": feature("float", (boxes[:, 1] + sizes[:, 1]).tolist()),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=example)).SerializeToString())
            low = generator.uniform(0, 0.8, (per_image, 2)).astype(np.float32)
            high = (low + generator.uniform(0.02, 0.2, (per_image, 2))).astype(np.float32)
            scores = np.sort(generator.uniform(0, 1, per_image).astype(np.float32))[::-1]
            classes = generator.choice(COCO_IDS, per_image)
            for (x0, y0), (x1, y1), score, label in zip(low, high, scores, classes):
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": int(label),
                        "score": float(score),
                        "bbox": [
                            float(x0) * width,
                            float(y0) * height,
                            (float(x1) - float(x0)) * width,
                            (float(y1) - float(y0)) * height,
                        ],
                    }
                )
    (folder / "instances.json").write_text(
        json.dumps({"images": coco_images, "annotations": annotations, "categories": categories})
    )
    (folder / "detections.json").write_text(json.dumps(detections))
    shard = {
        "shard": 0,
        "shards": 1,
        "max_images": 0,
        "image_ids": ids,
        "record_indices": list(range(len(ids))),
        "executed_kernels": [],
        "identity": {},
        "detections": detections,
    }
    (folder / "shard.json").write_text(json.dumps(shard))
    return len(detections), len(annotations)


def workflow_command(folder):
    """The accuracy stage as the workflow runs it."""
    return [
        sys.executable,
        str(REPO_ROOT / "scripts" / "evaluate_detections.py"),
        str(folder / "shard.json"),
        "--annotations",
        str(folder / "instances.json"),
        "--records",
        str(folder / "records"),
        "--detections",
        str(folder / "merged.json"),
        "--metrics",
        str(folder / "metrics.json"),
    ]


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


def measure(command):
    """Wall seconds, peak resident MB and stdout of a command in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {Path(command[1]).name} failed (exit {os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=300, help="per image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        count, boxes = generate(folder, args.images, args.detections)
        print(f"{args.images} images, {boxes} ground-truth boxes, {count} detections; each scorer in a fresh process")
        workflow = measure(workflow_command(folder))
        standard = list(json.loads((folder / "metrics.json").read_text())["standard"].values())
        plain = measure([sys.executable, "-c", PLAIN.format(folder=scratch)])
    print(f"{'scorer':<52} {'seconds':>8} {'peak MB':>8}")
    print(f"{'workflow (evaluate_detections.py): standard + legacy':<52} {workflow[0]:>8.1f} {workflow[1]:>8.0f}")
    print(f"{'plain pycocotools: standard only':<52} {plain[0]:>8.1f} {plain[1]:>8.0f}")
    print(f"standard numbers equal: {standard == json.loads(plain[2].strip().splitlines()[-1])}")


if __name__ == "__main__":
    run_main(main)
