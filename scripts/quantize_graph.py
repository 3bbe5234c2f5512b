#!/usr/bin/env python3
"""Quantize a frozen FP32 detection graph to INT8 with Intel Neural Compressor.

Static post-training quantization (PyPI neural-compressor-tf): weights are quantized per
tensor or per output channel, activation ranges are calibrated by running the FP32 graph
on a few images, drawn deterministically (a seed) from a folder of JPEGs. The result
carries Intel's fused quantized op family (QuantizeV2, QuantizedConv2DWithBiasAndRelu-
AndRequantize and kin, Dequantize), as Intel's own INT8 R-FCN does. Ops can be kept in
FP32 by name or name scope (regular expressions), the second-stage box predictor say.
A JSON report says what was quantized, on which images, and what stayed in FP32.

Before quantizing, residual sums the exporter merged with a BatchNorm offset are reordered
(residual_bias.py), so that every convolution gets Neural Compressor's fused bias kernel.

With --accuracy-tolerance, Neural Compressor's tuning loop picks what stays in FP32: its
metric is COCO AP on the first --tuning-images images of the TFRecord. Trial 1 quantizes
everything. In layer drift's order (--fallback-order largest_drift), the architecture's units
(--units, --heads) are ranked by the cosine each loses over its upstream one in trial 1, and
each next trial keeps one more unit in FP32, with its convolutions. In Neural Compressor's
(nearest_outputs), each convolution in turn, nearest the outputs first, is tried alone in FP32,
then the ones whose fallback helped most go back together. Tuning stops at the first trial
within the tolerance (relative AP drop). After --max-trials quantizations without one, the
stage fails in one line, or with --on-tolerance-miss keep keeps the best trial; the report
gives every trial, its AP and what it kept in FP32.
"""

import argparse
import json
from pathlib import Path

from detbench.common import StageError, atomic_file, run_main
from detbench.config_schema import schema_defaults
from detbench.detection_graph import (
    add_interface_arguments,
    interface_of,
)
from detbench.quantization import (
    FALLBACK_ORDERS,
    TuningSubset,
    calibration_images,
    quantize,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="FP32 frozen_inference_graph.pb")
    parser.add_argument("--images", type=Path, required=True, help="folder of calibration JPEGs")
    parser.add_argument("--output", type=Path, required=True, help="INT8 frozen graph to write")
    parser.add_argument("--report", type=Path, required=True, help="JSON: what was quantized, on which images")
    # Not given, the schema's defaults (config/schema.yaml, models.<name>.quantize).
    defaults = schema_defaults("models.*.quantize")
    parser.add_argument(
        "--calibration-images", type=int, default=defaults["calibration_images"], help="how many images calibrate"
    )
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="which images: a seeded draw")
    parser.add_argument(
        "--weight-granularity", choices=("per_tensor", "per_channel"), default=defaults["weight_granularity"]
    )
    parser.add_argument("--keep-fp32", action="append", default=[], help="regex of node names kept in FP32")
    parser.add_argument("--from-evaluation-set", action="store_true", help="say the images are val2017's")
    group = parser.add_argument_group("accuracy-aware tuning")
    group.add_argument("--accuracy-tolerance", type=float, help="relative COCO AP drop allowed (0.01: 1%%)")
    group.add_argument("--tuning-records", type=Path, help="TFRecord folder the tuning AP is measured on")
    group.add_argument("--tuning-annotations", type=Path, help="instances_val2017.json")
    group.add_argument(
        "--tuning-images", type=int, default=defaults["tuning_images"], help="the first N images of the TFRecord"
    )
    group.add_argument("--max-trials", type=int, default=defaults["max_trials"], help="quantizations at most")
    group.add_argument(
        "--fallback-order",
        choices=FALLBACK_ORDERS,
        default=defaults["fallback_order"],
        help="what goes back to FP32 first: the units layer drift finds losing most "
        "(needs --units), or the convolutions nearest the outputs",
    )
    group.add_argument(
        "--on-tolerance-miss",
        choices=("fail", "keep"),
        default=defaults["on_tolerance_miss"],
        help="no trial within the tolerance: fail, or keep the best trial",
    )
    group.add_argument("--units", help="layer drift's units regex (architectures.<name>.layer_drift.units)")
    group.add_argument("--heads", type=json.loads, default={}, help="layer drift's heads as JSON")
    add_interface_arguments(parser)
    args = parser.parse_args()
    interface = interface_of(args)
    if args.calibration_images < 1:
        raise StageError("quantize_graph: --calibration-images must be at least 1")
    if not args.graph.is_file():
        raise StageError(f"quantize_graph: no such graph: {args.graph}")
    tuning = None
    if args.accuracy_tolerance is not None:
        if not 0 <= args.accuracy_tolerance < 1:
            raise StageError("quantize_graph: --accuracy-tolerance must be in [0, 1)")
        if args.tuning_records is None or args.tuning_annotations is None:
            raise StageError("quantize_graph: --accuracy-tolerance needs --tuning-records and --tuning-annotations")
        if args.tuning_images < 1 or args.max_trials < 1:
            raise StageError("quantize_graph: --tuning-images and --max-trials must be at least 1")
        subset = TuningSubset(args.tuning_records, args.tuning_annotations, args.tuning_images, interface)
        if args.fallback_order == "largest_drift" and not args.units:
            raise StageError(
                "quantize_graph: --fallback-order largest_drift needs --units (the architecture's layer_drift)"
            )
        tuning = {
            "subset": subset,
            "tolerance": args.accuracy_tolerance,
            "max_trials": args.max_trials,
            "order": args.fallback_order,
            "units": args.units,
            "heads": args.heads,
            "on_miss": args.on_tolerance_miss,
        }
    images = calibration_images(args.images, args.calibration_images, args.seed)
    report = quantize(args.graph, images, args.output, args.weight_granularity, args.keep_fp32, tuning, interface)
    report.update(calibration_dir=str(args.images), seed=args.seed, from_evaluation_set=args.from_evaluation_set)
    with atomic_file(args.report) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
