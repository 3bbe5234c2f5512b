"""Detection agreement of a model with its reference on the same images, the matching rule of
compare_detections.py (and of the OpenVINO conversion's check).

The reference's detections that matter are the confident ones (score >= min_score); on an image
with none, its top_k best. A candidate reproduces one when it has a detection of the same class
with IoU >= iou_threshold on that image (matched greedily, most confident first, each detection
used once).
"""

from collections import defaultdict

import numpy as np


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


def by_image(detections):
    """COCO results grouped by image id."""
    grouped = defaultdict(list)
    for detection in detections:
        grouped[detection["image_id"]].append(detection)
    return grouped


def agreement(reference, candidate, min_score=0.5, top_k=100, iou_threshold=0.5):
    """The share of the reference's detections the candidate reproduces, overall, among the
    confident ones and per class, and the score drift of those reproduced (candidate minus
    reference). `reference`, `candidate`: COCO results by image id. None if the reference has
    no detection at all."""
    images = sorted(set(reference) | set(candidate))
    pairs = []
    for image_id in images:
        chosen = reference_detections(reference.get(image_id, []), min_score, top_k)
        pairs += match_image(chosen, candidate.get(image_id, []), iou_threshold)
    if not pairs:
        return None
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
