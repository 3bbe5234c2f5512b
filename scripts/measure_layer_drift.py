#!/usr/bin/env python3
"""Per-layer drift of a model from its reference: cosine similarity of their activations.

The candidate is an INT8 graph against FP32, or the FP32 graph itself run in BF16 (oneDNN's
automatic mixed precision, `--candidate-precision bf16`). Both run on the same images. The
activations compared are the architecture's units (`--units`, a regular expression over node
names: the end of every ResNet unit, the last of a block being the block's end, or every
MobileNet layer) and heads (`--heads`: RPN objectness and box encodings, class logits and box
encodings): named tensors of an Object Detection API export. Where the INT8 graph fused a
tensor away (a quantized convolution ends at it), the fused op's INT8 output is dequantized
for the comparison; a tensor found in neither form is listed as unmatched.

Cosine is 1.0 where INT8 reproduces FP32 up to scale. It is cumulative: a layer's cosine
carries every earlier layer's error, so `cosine_drop` (the fall from the nearest measured
layer upstream) points at where the error comes in. Second-stage tensors are per
proposal; an image whose two graphs kept a different number of proposals is left out there.
"""

import argparse
import json
import logging
import re
from pathlib import Path

from detbench.common import StageError, atomic_file, run_main
from detbench.detection_graph import (
    add_interface_arguments,
    interface_of,
)
from detbench.job_runtime import PRECISIONS, check_precision
from detbench.layer_drift import (
    drift_images,
    measure_drift,
)

log = logging.getLogger("measure_layer_drift")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="FP32 frozen graph")
    parser.add_argument("--candidate", type=Path, required=True, help="INT8 frozen graph, or the FP32 one for bf16")
    parser.add_argument(
        "--candidate-precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: the candidate graph under oneDNN's automatic mixed precision",
    )
    parser.add_argument("--allow-emulation", action="store_true", help="run bf16 on a CPU without BF16 instructions")
    parser.add_argument("--images", type=Path, required=True, help="folder of JPEGs")
    parser.add_argument("--count", type=int, default=4, help="how many images (the first by name)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: all cores")
    parser.add_argument("--output", type=Path, required=True, help="drift JSON")
    parser.add_argument(
        "--units",
        required=True,
        help="regular expression of the unit tensors' node names (architectures.<name>.layer_drift.units)",
    )
    parser.add_argument(
        "--heads",
        type=json.loads,
        default={},
        help="head tensors as JSON, {label: node name} (architectures.<name>.layer_drift.heads)",
    )
    add_interface_arguments(parser)
    args = parser.parse_args()
    check_precision(args.candidate_precision, args.allow_emulation)
    if args.count < 1:
        raise StageError("measure_layer_drift: --count must be at least 1")
    for path in (args.reference, args.candidate):
        if not path.is_file():
            raise StageError(f"measure_layer_drift: no such graph: {path}")
    try:
        re.compile(args.units)
    except re.error as error:
        raise StageError(f"measure_layer_drift: --units {args.units!r} is not a regular expression ({error})") from None
    result = measure_drift(
        args.reference,
        args.candidate,
        drift_images(args.images, args.count),
        interface_of(args),
        args.units,
        args.heads,
        args.threads,
        args.candidate_precision,
    )
    for layer in result["layers"]:
        log.info("%-24s cosine %s", layer["layer"], "n/a" if layer["cosine"] is None else f"{layer['cosine']:.5f}")
    log.info("lowest cosine at %s, largest drop at %s", result["lowest_cosine"], result["largest_drop"])
    with atomic_file(args.output) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
