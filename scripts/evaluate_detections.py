#!/usr/bin/env python3
"""Merge detection shards and score them: standard COCO metrics and the recipe's legacy ones.

Standard: pycocotools COCOeval (bbox) against instances_val2017.json, the 12
numbers of its summary table. Legacy: how the recipe's published numbers were
computed: ground truth read from the TFRecord, crowd boxes scored as ordinary
objects, and areas taken from normalized boxes (so every object counts as
"small": AP small equals AP, medium and large are -1). `--legacy-images N` scores
only the first N records there, as Intel's SSD-MobileNet accuracy loop did: it
stopped after 4,952 of the 5,000 (the count of annotated images), so it scored the
first 4,952 records, unannotated ones among them, not the annotated ones.
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from detbench.coco_data import (
    detection_columns,
    in_record_order,
    quiet_coco,
    read_examples,
    score_columns,
    standard_metrics,
    val_record_files,
)
from detbench.common import StageError, atomic_file, run_main

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
    as upstream, not numeric order. Returns box_scoring's truth columns and, per integer
    image id, its (height, width, key)."""
    wanted = set(image_ids)
    id_by_name = {category["name"]: category["id"] for category in categories}
    sizes, keys, labels, corners = {}, [], [], []
    for features in examples:
        key = features["image/source_id"][0].decode()
        image_id = int(key)
        if image_id not in wanted:
            continue
        sizes[image_id] = (features["image/height"][0], features["image/width"][0], key)
        if "image/object/class/label" in features:
            found = features["image/object/class/label"]
        else:
            found = [id_by_name[name.decode()] for name in features.get("image/object/class/text", [])]
        # Images without objects may lack the box keys (newer converters leave them out).
        boxes = [features.get(f"image/object/bbox/{name}", []) for name in ("xmin", "ymin", "xmax", "ymax")]
        keys += [key] * len(found)
        labels += found
        corners += zip(*boxes)
    # Upstream's arithmetic: float64 over the records' float32 values.
    xmin, ymin, xmax, ymax = np.array(corners, np.float64).reshape(-1, 4).T
    width, height = xmax - xmin, ymax - ymin
    truth = {
        "image": np.array(keys, dtype=str),
        "category": np.array(labels, np.int64),
        "box": np.stack([xmin, ymin, width, height], axis=1),
        "area": height * width,
        "iscrowd": np.zeros(len(keys), bool),
        "id": np.arange(1, len(keys) + 1, dtype=np.float64),
    }
    return truth, sizes


def normalized(detections, sizes):
    """Detection columns as upstream's evaluator read them: keyed by the source_id string, with
    the graph's normalized float32 corners (recovered exactly from the absolute box: rounding
    to float32 undoes the scaling's last-bit error) and width and height taken in float64."""
    known = np.array(sorted(sizes))
    row = np.searchsorted(known, detections["image"])
    height, width, keys = (np.array(column)[row] for column in zip(*(sizes[image_id] for image_id in known)))
    x, y, w, h = detections["box"].T
    xmin = (x / width).astype(np.float32).astype(np.float64)
    ymin = (y / height).astype(np.float32).astype(np.float64)
    xmax = ((x + w) / width).astype(np.float32).astype(np.float64)
    ymax = ((y + h) / height).astype(np.float32).astype(np.float64)
    box = np.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=1)
    return {**detections, "image": keys.astype(str), "box": box}


def legacy_metrics(examples, detections, image_ids, categories):
    """The recipe's 12 legacy numbers and their table, for TFRecord examples and COCO results."""
    return legacy_columns_metrics(examples, detection_columns(detections), image_ids, categories)


def legacy_columns_metrics(examples, detections, image_ids, categories):
    """legacy_metrics for detection columns (coco_data.detection_columns)."""
    truth, sizes = legacy_ground_truth(examples, image_ids, categories)
    keys = [sizes[image_id][2] for image_id in image_ids]
    category_ids = [category["id"] for category in categories]
    return score_columns(truth, normalized(detections, sizes), keys, category_ids)


def first_records(examples, detections, image_ids, count):
    """The examples, detection columns and image ids of the first `count` records only."""
    examples = examples[:count]
    kept = {int(features["image/source_id"][0].decode()) for features in examples}
    rows = np.isin(detections["image"], sorted(kept))
    return examples, {key: column[rows] for key, column in detections.items()}, [i for i in image_ids if i in kept]


def evaluate(shard_paths, annotations_file, record_dir, detections_output, metrics_output, legacy_images=None):
    detections, image_ids, facts = merge_shards(shard_paths)
    with atomic_file(detections_output) as detections_file:
        # The merged list is written, then scored as columns: 1.5 M dicts are freed first.
        detections_file.write_text(json.dumps(detections) + "\n")
        count, detections = len(detections), detection_columns(detections)
        ground_truth = quiet_coco(annotation_file=annotations_file)
        standard, table = standard_metrics(ground_truth, detections, image_ids)
        examples = list(read_examples(val_record_files(record_dir)))
        legacy_scope = (examples, detections, image_ids)
        if legacy_images:
            legacy_scope = first_records(*legacy_scope, legacy_images)
        legacy, legacy_table = legacy_columns_metrics(*legacy_scope, ground_truth.dataset["categories"])
        result = {
            "images": len(image_ids),
            "detections": count,
            "standard": standard,
            "legacy": legacy,
            "legacy_images": len(legacy_scope[2]),
            **facts,
        }
        with atomic_file(metrics_output) as temporary:
            temporary.write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "legacy metrics (TFRecord ground truth, crowds as objects, normalized areas), %d images:\n%s",
        result["legacy_images"],
        legacy_table,
    )
    log.info("standard COCO metrics (pycocotools COCOeval numbers, bbox), %d images:", len(image_ids))
    print(table, flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path, nargs="+", help="detection files from detect_objects.py")
    parser.add_argument("--annotations", type=Path, required=True, help="instances_val2017.json")
    parser.add_argument("--records", type=Path, required=True, help="folder of coco_val.record*")
    parser.add_argument("--detections", type=Path, required=True, help="merged COCO results JSON")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON")
    parser.add_argument("--legacy-images", type=int, help="legacy metrics on the first N TFRecord records only")
    args = parser.parse_args()
    if args.legacy_images is not None and args.legacy_images < 1:
        raise StageError(f"--legacy-images {args.legacy_images}: give at least 1")
    evaluate(args.shards, args.annotations, args.records, args.detections, args.metrics, args.legacy_images)


if __name__ == "__main__":
    run_main(main)
