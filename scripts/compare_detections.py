#!/usr/bin/env python3
"""Detection agreement of a model with FP32 on the same images: where INT8 loses accuracy.

The FP32 detections that matter are the confident ones (score >= --min-score); on an image
with none, its --top-k best. A model reproduces one when it has a detection of the same
class with IoU >= --iou on that image (matched greedily, most confident first, each
detection used once). The JSON gives the share reproduced, overall and per class, and the
score drift of the reproduced ones (model score minus FP32 score).
"""

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from detbench.common import StageError, atomic_file, run_main

log = logging.getLogger("compare_detections")


def load_detections(path):
    try:
        detections = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise StageError(f"cannot read detections {path}: {error}") from None
    by_image = defaultdict(list)
    for detection in detections:
        by_image[detection["image_id"]].append(detection)
    return by_image


def iou(box, boxes):
    """IoU of one COCO [x, y, w, h] box with an array of them."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def reference_detections(detections, min_score, top_k):
    ranked = sorted(detections, key=lambda d: -d["score"])
    confident = [d for d in ranked if d["score"] >= min_score]
    return confident or ranked[:top_k]


def match_image(reference, candidates, iou_threshold):
    """(reference detection, matched candidate or None) pairs for one image."""
    used = np.zeros(len(candidates), dtype=bool)
    pairs = []
    for detection in reference:
        same_class = np.array([c["category_id"] == detection["category_id"] for c in candidates], dtype=bool)
        overlaps = iou(detection["bbox"], [c["bbox"] for c in candidates]) if candidates else np.zeros(0)
        eligible = same_class & ~used & (overlaps >= iou_threshold)
        if eligible.any():
            best = int(np.argmax(np.where(eligible, overlaps, -1.0)))
            used[best] = True
            pairs.append((detection, candidates[best]))
        else:
            pairs.append((detection, None))
    return pairs


def compare(reference_path, candidate_path, min_score=0.5, top_k=100, iou_threshold=0.5):
    reference, candidate = load_detections(reference_path), load_detections(candidate_path)
    images = sorted(set(reference) | set(candidate))
    pairs = []
    for image_id in images:
        chosen = reference_detections(reference.get(image_id, []), min_score, top_k)
        pairs += match_image(chosen, candidate.get(image_id, []), iou_threshold)
    if not pairs:
        raise StageError(f"{reference_path}: no FP32 detections to compare with")
    per_class = defaultdict(lambda: [0, 0])
    drifts = []
    for detection, match in pairs:
        per_class[detection["category_id"]][0] += 1
        if match is not None:
            per_class[detection["category_id"]][1] += 1
            drifts.append(match["score"] - detection["score"])
    drifts = np.array(drifts)
    # Images without a confident reference detection fall back to the top ones, noise on a
    # model that sees: the confident ones alone are what a user of a real model compares.
    confident = [match for detection, match in pairs if detection["score"] >= min_score]
    return {
        "reference": str(reference_path),
        "candidate": str(candidate_path),
        "images": len(images),
        "min_score": min_score,
        "top_k": top_k,
        "iou_threshold": iou_threshold,
        "reference_detections": len(pairs),
        "reproduced": int(len(drifts)),
        "agreement": len(drifts) / len(pairs),
        "confident_detections": len(confident),
        "confident_agreement": sum(match is not None for match in confident) / len(confident) if confident else None,
        "mean_score_drift": float(drifts.mean()) if drifts.size else None,
        "mean_absolute_score_drift": float(np.abs(drifts).mean()) if drifts.size else None,
        "agreement_by_class": {str(k): found / total for k, (total, found) in sorted(per_class.items())},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="FP32 detections (COCO results JSON)")
    parser.add_argument("--candidate", type=Path, required=True, help="the model's detections, same images")
    parser.add_argument("--output", type=Path, required=True, help="agreement JSON")
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--top-k", type=int, default=100, help="per image without a confident detection")
    parser.add_argument("--iou", type=float, default=0.5)
    args = parser.parse_args()
    result = compare(args.reference, args.candidate, args.min_score, args.top_k, args.iou)
    log.info(
        "%s reproduces %d of %d FP32 detections (%.4f); mean score drift %s",
        args.candidate,
        result["reproduced"],
        result["reference_detections"],
        result["agreement"],
        result["mean_score_drift"],
    )
    with atomic_file(args.output) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
