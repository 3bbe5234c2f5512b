#!/usr/bin/env python3
"""Quantize an OpenVINO FP32 detection IR to INT8 with NNCF post-training quantization.

Calibrated on the images Neural Compressor's quantization draws (the same folder, count and
seed: quantization.calibration_images), decoded as every stage decodes them. Only
convolutions are quantized, as Neural Compressor quantizes Intel's graphs: NNCF's default
also quantizes the heads' box arithmetic (Multiply, Subtract, Add), which leaves the Faster
R-CNN twin with no detection at all. quantization.json says which images, how many
FakeQuantize nodes, and in how long.
"""

import argparse
import logging
import os
import time
from pathlib import Path

from detbench.common import StageError, run_main
from detbench.config_schema import schema_defaults
from detbench.detection_graph import decode_image
from detbench.engines import first_line
from detbench.openvino_ir import write_ir
from detbench.quantization import calibration_images

log = logging.getLogger("quantize_openvino")

QUANTIZED_TYPES = ("Convolution", "GroupConvolution")


def decoded_calibration_images(image_dir, count, seed):
    paths = calibration_images(image_dir, count, seed)
    images = []
    for path in paths:
        try:
            images.append(decode_image(path.read_bytes(), path.name)[None])
        except StageError as error:
            raise StageError(f"quantize_openvino: calibration image {error}") from None
    return paths, images


def quantize_openvino(model_path, image_dir, output_dir, count, seed):
    import nncf
    import openvino as ov

    try:
        model = ov.Core().read_model(str(model_path))
    except RuntimeError as error:
        raise StageError(f"{model_path}: not an OpenVINO IR ({first_line(error)})") from None
    paths, images = decoded_calibration_images(image_dir, count, seed)
    others = sorted({op.get_type_name() for op in model.get_ordered_ops()} - set(QUANTIZED_TYPES))
    started = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(images),
        subset_size=len(images),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=nncf.IgnoredScope(types=others, validate=False),
    )
    seconds = time.perf_counter() - started
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    if not fake_quantize:
        raise StageError(f"{model_path}: NNCF quantized nothing (no convolution took a FakeQuantize)")
    log.info("NNCF: %d FakeQuantize nodes on %d images in %.1f s", fake_quantize, len(images), seconds)
    report = {
        "source": str(model_path),
        "tool": "nncf",
        "nncf_version": nncf.__version__,
        "openvino_version": ov.get_version(),
        "calibration_images": [path.name for path in paths],
        "seed": seed,
        "quantized_types": list(QUANTIZED_TYPES),
        "fake_quantize_nodes": fake_quantize,
        "seconds": seconds,
    }
    return write_ir(quantized, output_dir, "quantization.json", lambda _: report)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the FP32 IR, model.xml")
    parser.add_argument("--images", type=Path, required=True, help="folder of calibration JPEGs")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the INT8 model.xml, model.bin")
    defaults = schema_defaults("models.*.quantize")
    parser.add_argument("--calibration-images", type=int, default=defaults["calibration_images"])
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument(
        "--threads", type=int, default=0, help="cores OpenVINO may use while NNCF calibrates (0: all the job's)"
    )
    args = parser.parse_args()
    if args.calibration_images < 1:
        raise StageError("--calibration-images must be at least 1")
    if args.threads:
        # NNCF compiles the model with OpenVINO's defaults: all the cores it may run on.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    quantize_openvino(args.model, args.images, args.output_dir, args.calibration_images, args.seed)


if __name__ == "__main__":
    run_main(main)
