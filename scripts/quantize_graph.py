#!/usr/bin/env python3
"""Quantize a frozen FP32 detection graph to INT8 with Intel Neural Compressor.

Static post-training quantization (PyPI neural-compressor-tf): weights are quantized per
tensor or per output channel, activation ranges are calibrated by running the FP32 graph
on a few images, drawn deterministically (a seed) from a folder of JPEGs. The result
carries Intel's fused quantized op family (QuantizeV2, QuantizedConv2DWithBiasAndRelu-
AndRequantize and kin, Dequantize), as Intel's own INT8 R-FCN does. Ops can be kept in
FP32 by name or name scope (regular expressions), the second-stage box predictor say.
A JSON report says what was quantized, on which images, and what stayed in FP32.
"""

import argparse
import json
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path

from common import StageError, atomic_file, run_main
from detection_graph import INPUT_NODE, OUTPUT_NODES, decode_image, load_graph_def

log = logging.getLogger("quantize_graph")

# Ops Neural Compressor quantizes in a detection graph; the rest stays FP32 anyway.
QUANTIZABLE_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "MaxPool", "AvgPool", "ConcatV2")


def calibration_images(image_dir, count, seed):
    """`count` JPEGs of `image_dir`, drawn with `seed` from its sorted listing (all if fewer)."""
    images = sorted(Path(image_dir).glob("*.jpg"))
    if not images:
        raise StageError(f"quantize_graph: no .jpg calibration images in {image_dir}")
    if count >= len(images):
        return images
    return sorted(random.Random(seed).sample(images, count))


class CalibrationImages:
    """Neural Compressor's calibration data loader: (batch, label) pairs of one image each.

    Decoded up front: Neural Compressor swallows errors raised while it iterates, so an
    unreadable image must be named before it starts.
    """

    batch_size = 1

    def __init__(self, paths):
        self.images = []
        for path in paths:
            try:
                self.images.append(decode_image(path.read_bytes(), path.name)[None])
            except StageError as error:
                raise StageError(f"quantize_graph: calibration image {error}") from None

    def __iter__(self):
        for image in self.images:
            yield image, 0


def kept_in_fp32(graph_def, patterns):
    """Names of the quantizable nodes that a pattern finds (re.search on the node name)."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return sorted(
        node.name
        for node in graph_def.node
        if node.op in QUANTIZABLE_OPS and any(pattern.search(node.name) for pattern in compiled)
    )


def quantization_config(weight_granularity, fp32_nodes):
    from neural_compressor.tensorflow import StaticQuantConfig

    config = StaticQuantConfig(weight_granularity=weight_granularity)
    for name in fp32_nodes:
        config.set_local(name, StaticQuantConfig(weight_dtype="fp32", act_dtype="fp32"))
    return config


def quantize(graph_path, image_paths, output, weight_granularity="per_tensor", keep_fp32=()):
    """Quantize `graph_path` into `output`; returns what was done (for the report)."""
    from neural_compressor.tensorflow import quantize_model
    from neural_compressor.tensorflow.utils import Model

    graph_def = load_graph_def(graph_path)
    quantizable = Counter(node.op for node in graph_def.node if node.op in QUANTIZABLE_OPS)
    if not quantizable.get("Conv2D") and not quantizable.get("MatMul"):
        raise StageError(f"quantize_graph: {graph_path} has no Conv2D or MatMul: nothing to quantize")
    fp32_nodes = kept_in_fp32(graph_def, keep_fp32)
    if keep_fp32:
        log.info("kept in FP32 (%d nodes): %s", len(fp32_nodes), ", ".join(fp32_nodes))
    model = Model(str(graph_path))
    model.input_tensor_names = [INPUT_NODE]
    model.output_tensor_names = list(OUTPUT_NODES)
    calibration = CalibrationImages(image_paths)
    started = time.perf_counter()
    try:
        quantized = quantize_model(
            model, quantization_config(weight_granularity, fp32_nodes), calibration,
            calib_iteration=len(image_paths),
        )  # fmt: skip
    except StageError:
        raise
    except Exception as error:  # Neural Compressor's own failures, whatever their type
        raise StageError(f"quantize_graph: Neural Compressor failed on {graph_path}: {type(error).__name__}: {error}") from None
    seconds = time.perf_counter() - started
    result = quantized.graph_def if quantized is not None else None
    ops = Counter(node.op for node in result.node) if result is not None else Counter()
    quantized_convolutions = sum(count for op, count in ops.items() if op.startswith("Quantized") and "Conv" in op)
    if not quantized_convolutions and not ops.get("QuantizedMatMulWithBiasAndDequantize"):
        raise StageError(f"quantize_graph: Neural Compressor quantized nothing in {graph_path}")
    with atomic_file(output) as temporary:
        temporary.write_bytes(result.SerializeToString())
    log.info("%d of %d convolutions quantized in %.0f s", quantized_convolutions, quantizable["Conv2D"], seconds)
    return {
        "source_graph": str(graph_path),
        "weight_granularity": weight_granularity,
        "calibration_images": [path.name for path in image_paths],
        "kept_in_fp32": fp32_nodes,
        "convolutions": quantizable["Conv2D"],
        "quantized_convolutions": quantized_convolutions,
        "quantized_ops": {op: count for op, count in sorted(ops.items()) if "Quantize" in op or op == "Dequantize"},
        "seconds": round(seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="FP32 frozen_inference_graph.pb")
    parser.add_argument("--images", type=Path, required=True, help="folder of calibration JPEGs")
    parser.add_argument("--output", type=Path, required=True, help="INT8 frozen graph to write")
    parser.add_argument("--report", type=Path, required=True, help="JSON: what was quantized, on which images")
    parser.add_argument("--calibration-images", type=int, default=100, help="how many images calibrate")
    parser.add_argument("--seed", type=int, default=0, help="which images: a seeded draw")
    parser.add_argument("--weight-granularity", choices=("per_tensor", "per_channel"), default="per_tensor")
    parser.add_argument("--keep-fp32", action="append", default=[], help="regex of node names kept in FP32")
    parser.add_argument("--from-evaluation-set", action="store_true", help="say the images are val2017's")
    args = parser.parse_args()
    if args.calibration_images < 1:
        raise StageError("quantize_graph: --calibration-images must be at least 1")
    if not args.graph.is_file():
        raise StageError(f"quantize_graph: no such graph: {args.graph}")
    images = calibration_images(args.images, args.calibration_images, args.seed)
    report = quantize(args.graph, images, args.output, args.weight_granularity, args.keep_fp32)
    report.update(calibration_dir=str(args.images), seed=args.seed, from_evaluation_set=args.from_evaluation_set)
    with atomic_file(args.report) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
