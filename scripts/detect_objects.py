#!/usr/bin/env python3
"""Run a frozen detection graph on the val TFRecord and write its detections.

Detections are in the COCO results format (absolute [x, y, w, h], category ids,
scores). `--max-images N` keeps the first N records (smoke runs); `--shard I
--shards K` keeps every K-th of those, starting at the I-th, so that K jobs
together cover each image once. The graph's ops are checked for CPU kernels
before anything runs.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from common import StageError, atomic_file, run_main
from convert_coco_to_tfrecord import read_examples, val_record_files
from detection_graph import (
    add_runtime_arguments,
    apply_runtime,
    decode_image,
    detect,
    environment_facts,
    executed_kernels,
    open_checked_session,
    runtime_settings,
)

log = logging.getLogger("detect_objects")


def selected_records(record_dir, max_images=0, shard=0, shards=1):
    """Yield (index in the TFRecord, features) of the records this job handles, in order."""
    for index, features in enumerate(read_examples(val_record_files(record_dir))):
        if max_images and index >= max_images:
            return
        if index % shards == shard:
            yield index, features


def to_coco_results(image_id, height, width, outputs):
    """The graph's valid detections for one image as COCO result dicts."""
    results = []
    count = int(outputs["num_detections"][0])
    for box, score, category in zip(
        outputs["detection_boxes"][0][:count],
        outputs["detection_scores"][0][:count],
        outputs["detection_classes"][0][:count],
    ):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        results.append(
            {
                "image_id": image_id,
                "category_id": int(category),
                "bbox": [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
                "score": float(score),
            }
        )
    return results


def detect_objects(graph_path, record_dir, applied, output, max_images=0, shard=0, shards=1):
    if not 0 <= shard < shards:
        raise StageError(f"shard {shard} is not in 0..{shards - 1}")
    session = open_checked_session(graph_path, applied)
    detections, image_ids, record_indices, kernels = [], [], [], None
    records = selected_records(record_dir, max_images, shard, shards)
    for index, features in tqdm(records, desc="detecting", unit="image", file=sys.stderr, mininterval=10, ascii=True):
        image_id = int(features["image/source_id"][0])
        # A missing image would change the AP: an unreadable one always stops the job.
        name = f"image {image_id} (record {index} of {record_dir})"
        image = decode_image(features["image/encoded"][0], name)[None]
        height, width = image.shape[1:3]
        if kernels is None:
            kernels = executed_kernels(session, image)
        detections.extend(to_coco_results(image_id, height, width, detect(session, image)))
        image_ids.append(image_id)
        record_indices.append(index)
    if not image_ids:
        # More shards than images (a smoke run): an empty shard is still a complete one.
        log.warning("no images for shard %d of %d (max_images %d)", shard, shards, max_images)
    log.info("%d detections in %d images (shard %d of %d)", len(detections), len(image_ids), shard, shards)
    result = {
        "shard": shard,
        "shards": shards,
        "max_images": max_images,
        "image_ids": image_ids,
        "record_indices": record_indices,
        "executed_kernels": kernels,
        **environment_facts(graph_path, applied),
        "detections": detections,
    }
    with atomic_file(output) as temporary:
        temporary.write_text(json.dumps(result) + "\n")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="frozen_inference_graph.pb")
    parser.add_argument("--records", type=Path, required=True, help="folder of coco_val.record*")
    parser.add_argument("--output", type=Path, required=True, help="detections JSON")
    parser.add_argument("--max-images", type=int, default=0, help="first N records only (0: all)")
    parser.add_argument("--shard", type=int, default=0, help="which of --shards this job is")
    parser.add_argument("--shards", type=int, default=1, help="jobs the images are split over")
    add_runtime_arguments(parser)
    args = parser.parse_args()
    applied = apply_runtime(runtime_settings(args))
    detect_objects(args.graph, args.records, applied, args.output, args.max_images, args.shard, args.shards)


if __name__ == "__main__":
    run_main(main)
