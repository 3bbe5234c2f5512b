#!/usr/bin/env python3
"""Score detection TFRecords with the recipe's own evaluator: the Object Detection API's
`metrics/offline_eval_map_corloc.read_data_and_evaluate` with `coco_detection_metrics`.

The code is object-detection 0.0.3 from its PyPI wheel, run on TensorFlow 2 through
odapi_compat (as the twin builder runs the exporter), with one change: the fix of
tensorflow/models#5412, without which its StringParser cannot read a `source_id` on
Python 3 (`"".join` over bytes); the key stays the bytes upstream's fix gives. Each record
holds what `inference/infer_detections.py` writes: the input example (source_id, ground
truth boxes and labels) and `image/detection/*`. Prints nothing; writes one JSON object per
TFRecord with the 12 COCO numbers, in pycocotools' summary order.

    python tools/upstream/upstream_eval.py LABEL_MAP OUTPUT.json RECORD [RECORD ...]
"""

import argparse
import builtins
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from detbench.common import run_main

log = logging.getLogger("upstream_eval")

# Upstream's metric names, in the order of pycocotools' summary (and coco_data.METRICS).
UPSTREAM_METRICS = (
    "Precision/mAP",
    "Precision/mAP@.50IOU",
    "Precision/mAP@.75IOU",
    "Precision/mAP (small)",
    "Precision/mAP (medium)",
    "Precision/mAP (large)",
    "Recall/AR@1",
    "Recall/AR@10",
    "Recall/AR@100",
    "Recall/AR@100 (small)",
    "Recall/AR@100 (medium)",
    "Recall/AR@100 (large)",
)


def load_upstream(source_root):
    """object_detection 0.0.3 importable, on TF2, with the #5412 fix; returns its modules."""
    from tools.twin.make_twin import DEFAULT_WHEEL, PROTOS_WHEEL
    from tools.twin.twin_graphs import unpack_object_detection
    from tools.upstream import odapi_compat

    unpack_object_detection(DEFAULT_WHEEL, PROTOS_WHEEL, source_root)
    odapi_compat.install(source_root)
    # NumPy 1.24 removed the aliases of builtins that the 2019 parsers use (np.float): they
    # were the builtins themselves.
    for name in ("float", "int", "bool", "object"):
        if not hasattr(np, name):
            setattr(np, name, getattr(builtins, name))
    from object_detection.metrics import offline_eval_map_corloc, tf_example_parser
    from object_detection.protos import eval_pb2, input_reader_pb2

    def parse_bytes(self, tf_example):
        feature = tf_example.features.feature[self.field_name]
        return b"".join(feature.bytes_list.value) if feature.HasField("bytes_list") else None

    tf_example_parser.StringParser.parse = parse_bytes
    return offline_eval_map_corloc, input_reader_pb2, eval_pb2


def evaluate_records(modules, label_map, record):
    """offline_eval_map_corloc's read_data_and_evaluate on one TFRecord: the 12 numbers."""
    offline_eval_map_corloc, input_reader_pb2, eval_pb2 = modules
    input_config = input_reader_pb2.InputReader(label_map_path=str(label_map))
    input_config.tf_record_input_reader.input_path.append(str(record))
    eval_config = eval_pb2.EvalConfig(metrics_set=["coco_detection_metrics"])
    metrics = offline_eval_map_corloc.read_data_and_evaluate(input_config, eval_config)
    return [float(metrics[f"DetectionBoxes_{name}"]) for name in UPSTREAM_METRICS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label_map", type=Path, help="string_int_label_map .pbtxt of the categories")
    parser.add_argument("output", type=Path, help="JSON: {record: [12 numbers]}")
    parser.add_argument("records", type=Path, nargs="+", help="TFRecords as infer_detections writes them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as source_root:
        modules = load_upstream(Path(source_root))
        results = {str(record): evaluate_records(modules, args.label_map, record) for record in args.records}
    args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    run_main(main)
