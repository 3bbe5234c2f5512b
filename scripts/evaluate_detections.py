#!/usr/bin/env python3
"""Merge detection shards and score them: standard COCO metrics and the recipe's legacy ones.

Standard: pycocotools COCOeval (bbox) against instances_val2017.json, the 12
numbers of its summary table. Legacy: how the recipe's published numbers were
computed: ground truth read from the TFRecord, crowd boxes scored as ordinary
objects, and areas taken from normalized boxes (so every object counts as
"small": AP small equals AP, medium and large are -1).
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from common import StageError, atomic_file, run_main
from coco_data import coco_metrics, in_record_order, quiet_coco, read_examples, val_record_files

log = logging.getLogger("evaluate_detections")

def merge_shards(paths):
    """One detection list from the shard files, checking they form one complete set.

    Detections come out in TFRecord order, whatever the number of shards, so that a
    sharded run writes the same file as an unsharded one.
    """
    shards = [json.loads(Path(path).read_text()) for path in paths]
    counts = {shard["shards"] for shard in shards}
    indices = sorted(shard["shard"] for shard in shards)
    if len(counts) != 1 or indices != list(range(counts.pop())):
        raise StageError(f"detection shards do not form a complete set: {indices}")
    image_ids = [image_id for shard in shards for image_id in shard["image_ids"]]
    if not image_ids:
        raise StageError("the detection shards hold no images")
    if len(set(image_ids)) != len(image_ids):
        raise StageError("an image was detected in more than one shard")
    _, _, detections = in_record_order(shards)
    per_shard = ("detections", "image_ids", "record_indices", "shard", "identity")
    first = next(shard for shard in shards if shard["image_ids"])  # kernels are known where images ran
    facts = {key: value for key, value in first.items() if key not in per_shard}
    return detections, sorted(image_ids), facts


def legacy_ground_truth(examples, image_ids, categories):
    """Ground truth as the recipe's evaluator (Object Detection API `offline_eval_map_corloc`)
    saw it, from TFRecord examples (feature dicts): normalized boxes, crowds as objects, each
    image keyed by its `image/source_id` string. COCOeval breaks score ties across images in
    the order of its sorted image ids: text order with string keys ("1000" before "139"),
    as upstream, not numeric order. Returns the dataset and, per integer image id, its
    (height, width, key)."""
    wanted = set(image_ids)
    id_by_name = {category["name"]: category["id"] for category in categories}
    images, annotations, sizes = [], [], {}
    for features in examples:
        key = features["image/source_id"][0].decode()
        image_id = int(key)
        if image_id not in wanted:
            continue
        sizes[image_id] = (features["image/height"][0], features["image/width"][0], key)
        images.append({"id": key})
        if "image/object/class/label" in features:
            labels = features["image/object/class/label"]
        else:
            labels = [id_by_name[name.decode()] for name in features["image/object/class/text"]]
        boxes = zip(
            features["image/object/bbox/xmin"], features["image/object/bbox/ymin"],
            features["image/object/bbox/xmax"], features["image/object/bbox/ymax"], labels,
        )  # fmt: skip
        for xmin, ymin, xmax, ymax, label in boxes:
            # Upstream's arithmetic: float64 over the records' float32 values.
            width, height = xmax - xmin, ymax - ymin
            annotations.append(
                {"id": len(annotations) + 1, "image_id": key, "category_id": int(label),
                 "bbox": [xmin, ymin, width, height], "area": height * width, "iscrowd": 0}
            )  # fmt: skip
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    return dataset, sizes


def normalized(detections, sizes):
    """Detections as upstream's evaluator read them: keyed by the source_id string, with the
    graph's normalized float32 corners (recovered exactly from the absolute box: rounding
    to float32 undoes the scaling's last-bit error) and width and height taken in float64."""
    result = []
    for detection in detections:
        height, width, key = sizes[detection["image_id"]]
        x, y, w, h = detection["bbox"]
        xmin, ymin = float(np.float32(x / width)), float(np.float32(y / height))
        xmax, ymax = float(np.float32((x + w) / width)), float(np.float32((y + h) / height))
        result.append({**detection, "image_id": key, "bbox": [xmin, ymin, xmax - xmin, ymax - ymin]})
    return result


def legacy_metrics(examples, detections, image_ids, categories):
    """The recipe's 12 legacy numbers and their table, for TFRecord examples and COCO results."""
    dataset, sizes = legacy_ground_truth(examples, image_ids, categories)
    keys = [sizes[image_id][2] for image_id in image_ids]
    return coco_metrics(quiet_coco(dataset), normalized(detections, sizes), keys)


def evaluate(shard_paths, annotations_file, record_dir, detections_output, metrics_output):
    detections, image_ids, facts = merge_shards(shard_paths)
    ground_truth = quiet_coco(annotation_file=annotations_file)
    standard, table = coco_metrics(ground_truth, detections, image_ids)
    examples = read_examples(val_record_files(record_dir))
    legacy, legacy_table = legacy_metrics(examples, detections, image_ids, ground_truth.dataset["categories"])
    result = {
        "images": len(image_ids),
        "detections": len(detections),
        "standard": standard,
        "legacy": legacy,
        **facts,
    }
    with atomic_file(detections_output) as temporary:
        temporary.write_text(json.dumps(detections) + "\n")
    with atomic_file(metrics_output) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")
    log.info("legacy metrics (TFRecord ground truth, crowds as objects, normalized areas):\n%s", legacy_table)
    log.info("standard COCO metrics (pycocotools COCOeval, bbox), %d images:", len(image_ids))
    print(table, flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path, nargs="+", help="detection files from detect_objects.py")
    parser.add_argument("--annotations", type=Path, required=True, help="instances_val2017.json")
    parser.add_argument("--records", type=Path, required=True, help="folder of coco_val.record*")
    parser.add_argument("--detections", type=Path, required=True, help="merged COCO results JSON")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON")
    args = parser.parse_args()
    evaluate(args.shards, args.annotations, args.records, args.detections, args.metrics)


if __name__ == "__main__":
    run_main(main)
