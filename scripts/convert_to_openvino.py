#!/usr/bin/env python3
"""Convert a frozen TensorFlow detection graph to OpenVINO IR, and check what came out.

`openvino.convert_model` reads the frozen graph whole, TF1 control flow included, with our
conversion of the ops its frontend lacks (detbench/openvino_ops.py). The IR
(model.xml, model.bin, FP32 weights) is kept only if it has the graph's four detection outputs
and, on the first image of --check-images, reproduces TensorFlow's detections of the same
graph: the share of them it reproduces (the agreement stage's rule, detbench/agreement.py)
must reach --min-agreement. conversion.json says what was converted, by which OpenVINO, in
how long, and how the check went. An op OpenVINO cannot convert is named, with its first
node, in one line.
"""

import argparse
import logging
import re
import time
from pathlib import Path

from detbench.agreement import agreement, by_image
from detbench.coco_data import to_coco_results
from detbench.common import StageError, run_main
from detbench.detection_graph import (
    add_interface_arguments,
    check_interface,
    decode_image,
    interface_of,
    list_images,
    load_graph_def,
    open_checked_session,
)
from detbench.engines import OpenVINOEngine, TensorFlowEngine, first_line
from detbench.job_runtime import add_runtime_arguments, apply_runtime, runtime_settings
from detbench.openvino_ir import write_ir
from detbench.openvino_ops import conversion_extensions

log = logging.getLogger("convert_to_openvino")


def unconverted_ops(message):
    """The op types OpenVINO's TensorFlow frontend names as without a conversion rule."""
    found = re.search(r"No conversion rule found for operations: ([^\n]+)", message)
    return [op.strip() for op in found.group(1).split(",")] if found else []


def convert(graph_path, graph_def):
    """The graph as an ov.Model; an op without a conversion rule is named with its first node."""
    import openvino as ov

    try:
        return ov.convert_model(str(graph_path), extension=conversion_extensions())
    except Exception as error:  # OpenVINO raises its own types (OpConversionFailure, GeneralFailure)
        ours = re.search(r"StageError: ([^\n]+)", str(error))
        if ours:  # our conversion of an op refused it (detbench/openvino_ops.py)
            raise StageError(f"{graph_path}: {ours.group(1)}; run this model on tensorflow") from None
        ops = unconverted_ops(str(error))
        if ops:
            # OpenVINO also lists what it could not type ("Const of unknown type"): graph ops first.
            first_node = {op: next((node.name for node in graph_def.node if node.op == op), None) for op in ops}
            named = [f"{op} (node {node})" for op, node in first_node.items() if node] or ops
            raise StageError(
                f"{graph_path}: OpenVINO {ov.get_version().split('-')[0]} cannot convert {', '.join(named)}; "
                "run this model on tensorflow"
            ) from None
        raise StageError(f"{graph_path}: OpenVINO could not convert the graph ({first_line(error)})") from None


def check_detections(graph_path, ir_path, interface, applied, image_path, min_agreement):
    """One image through TensorFlow and through the IR: the share of TensorFlow's detections
    the IR reproduces, with the agreement stage's rule."""
    image = decode_image(Path(image_path).read_bytes(), str(image_path))[None]
    height, width = image.shape[1:3]
    tensorflow = TensorFlowEngine(open_checked_session(graph_path, applied, interface), interface)
    # One thread: a check of what is computed, not of speed (and the steadiest OpenVINO runs).
    openvino = OpenVINOEngine(ir_path, applied, interface, threads=1)
    reference = to_coco_results(0, height, width, tensorflow.detect(image))
    candidate = to_coco_results(0, height, width, openvino.detect(image))
    figures = agreement(by_image(reference), by_image(candidate))
    share = figures["agreement"] if figures else 1.0
    log.info(
        "check on %s: TensorFlow %d detections, OpenVINO %d; %.3f of TensorFlow's reproduced",
        Path(image_path).name,
        len(reference),
        len(candidate),
        share,
    )
    result = {
        "image": Path(image_path).name,
        "tensorflow_detections": len(reference),
        "openvino_detections": len(candidate),
        "agreement": figures,
        "min_agreement": min_agreement,
    }
    if share < min_agreement:
        raise StageError(
            f"{graph_path}: the OpenVINO IR reproduces {share:.3f} of TensorFlow's detections on "
            f"{Path(image_path).name}, below {min_agreement}: the conversion changed the model"
        )
    return result


def convert_to_openvino(graph_path, output_dir, interface, applied, check_image, min_agreement):
    import openvino as ov

    graph_def = load_graph_def(graph_path)
    check_interface(graph_def, graph_path, interface)
    started = time.perf_counter()
    model = convert(graph_path, graph_def)
    seconds = time.perf_counter() - started
    log.info("converted in %.1f s: %d ops", seconds, len(model.get_ordered_ops()))

    def checked(ir_path):
        # The IR's outputs are checked when the engine opens it (output_ports).
        return {
            "graph": str(graph_path),
            "openvino_version": ov.get_version(),
            "conversion_seconds": seconds,
            "ops": len(model.get_ordered_ops()),
            "inputs": [port.get_any_name() for port in model.inputs],
            "outputs": sorted(name for port in model.outputs for name in port.get_names()),
            "check": check_detections(graph_path, ir_path, interface, applied, check_image, min_agreement),
        }

    return write_ir(model, output_dir, "conversion.json", checked)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="frozen_inference_graph.pb")
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="folder for model.xml, model.bin, conversion.json"
    )
    parser.add_argument("--check-images", type=Path, required=True, help="a folder of JPEGs: the first is detected on")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.5,
        help="the least share of TensorFlow's detections on the check image the IR must reproduce",
    )
    add_interface_arguments(parser)
    add_runtime_arguments(parser)
    args = parser.parse_args()
    applied = apply_runtime(runtime_settings(args))
    check_image = list_images(args.check_images)[0]
    convert_to_openvino(args.graph, args.output_dir, interface_of(args), applied, check_image, args.min_agreement)


if __name__ == "__main__":
    run_main(main)
