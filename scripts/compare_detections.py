#!/usr/bin/env python3
"""Detection agreement of a model with FP32 on the same images: where INT8 loses accuracy.

The FP32 detections that matter are the confident ones (score >= --min-score); on an image
with none, its --top-k best. A model reproduces one when it has a detection of the same
class with IoU >= --iou on that image (detbench/agreement.py). The JSON gives the share
reproduced, overall and per class, and the score drift of the reproduced ones (model score
minus FP32 score).
"""

import argparse
import json
import logging
from pathlib import Path

from detbench.agreement import agreement, by_image
from detbench.common import StageError, atomic_file, run_main

log = logging.getLogger("compare_detections")


def load_detections(path):
    try:
        return by_image(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as error:
        raise StageError(f"cannot read detections {path}: {error}") from None


def compare(reference_path, candidate_path, min_score=0.5, top_k=100, iou_threshold=0.5):
    figures = agreement(
        load_detections(reference_path), load_detections(candidate_path), min_score, top_k, iou_threshold
    )
    if figures is None:
        raise StageError(f"{reference_path}: no FP32 detections to compare with")
    return {"reference": str(reference_path), "candidate": str(candidate_path), **figures}


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
