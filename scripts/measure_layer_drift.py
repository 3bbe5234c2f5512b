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
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import StageError, atomic_file, run_main
from detection_graph import (
    add_interface_arguments,
    decode_image,
    interface_of,
    list_images,
    load_graph_def,
    open_session,
    source_node,
)
from job_runtime import PRECISIONS, check_precision

log = logging.getLogger("measure_layer_drift")

# Ops a quantized convolution's fused pattern runs through, up to the tensor it ends at.
# A BatchNorm scale the exporter left unfolded (MobileNetV2's depthwise convolutions) is a Mul.
FUSED_INTO_CONVOLUTION = {"BiasAdd", "Add", "AddV2", "Mul", "Relu", "Relu6", "FusedBatchNorm", "FusedBatchNormV3",
                          "Identity"}  # fmt: skip
# How quantization tools name the fused op that replaces a convolution.
FUSED_SUFFIXES = ("_eightbit_requantize", "_eightbit_quantized_conv")
QUANTIZED_TYPE_ATTRS = ("out_type", "T")


def natural_key(label):
    """block3/unit_10 after block3/unit_9: numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


def drift_points(reference_graph_def, units, heads):
    """[(label, node name, block end?)] of the FP32 graph, in network order: the nodes whose
    names `units` matches (its first group is the label; a named group `block` groups them,
    and the last unit of each is the block's end; without one every unit is shown as one),
    then the `heads` ({label: node name}) the graph has."""
    pattern = re.compile(units)
    found = {}
    for node in reference_graph_def.node:
        match = pattern.search(node.name)
        if match:
            label = match.group(1) if pattern.groups else match.group(0)
            block = match.groupdict().get("block") or label
            found[label] = (node.name, block)
    ordered = sorted(found, key=natural_key)
    last_of_block = {found[label][1]: label for label in ordered}
    points = [(label, found[label][0], last_of_block[found[label][1]] == label) for label in ordered]
    present = {node.name for node in reference_graph_def.node}
    return points + [(label, name, False) for label, name in heads.items() if name in present]


def node_index(graph_def):
    return {node.name: node for node in graph_def.node}


def convolutions_ending_at(reference_nodes, name):
    """The Conv2D nodes whose fused pattern (bias, batch norm, residual add, ReLU) ends at `name`."""
    found, stack, seen = [], [name], set()
    while stack:
        node = reference_nodes.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op in ("Conv2D", "DepthwiseConv2dNative"):
            found.append(node.name)
        elif node.op in FUSED_INTO_CONVOLUTION:
            stack += [source_node(i) for i in node.input if not i.startswith("^")]
    return found


def candidate_counterpart(reference_nodes, candidate_nodes, name):
    """(node, quantized) in the INT8 graph for the FP32 tensor `name`, or None.

    The same name where the INT8 graph kept a float tensor there (a Dequantize is named
    after the tensor it restores); else the fused quantized convolution that ends at it,
    the last one where a residual add fused two (the other feeds it).
    """
    same = candidate_nodes.get(name)
    if same is not None and same.op not in ("Const", "HostConst") and not same.op.startswith("Quantize"):
        return name, False
    candidates = [
        conv + suffix
        for conv in convolutions_ending_at(reference_nodes, name)
        for suffix in FUSED_SUFFIXES
        if conv + suffix in candidate_nodes
    ]
    fed = {source_node(i) for candidate in candidates for i in candidate_nodes[candidate].input}
    last = [candidate for candidate in candidates if candidate not in fed]
    return (last[0], True) if len(last) == 1 else None


def dequantize_mode(candidate_graph_def):
    """The mode the graph's own Dequantize ops use (SCALED for Neural Compressor's)."""
    for node in candidate_graph_def.node:
        if node.op == "Dequantize":
            return node.attr["mode"].s
    return b"SCALED"


def add_taps(candidate_graph_def, quantized_nodes):
    """A copy of the graph with a Dequantize after each quantized node: {node: tap name}."""
    from tensorflow.core.framework import graph_pb2

    tapped = graph_pb2.GraphDef()
    tapped.CopyFrom(candidate_graph_def)
    nodes = node_index(candidate_graph_def)
    mode = dequantize_mode(candidate_graph_def)
    taps = {}
    for index, name in enumerate(quantized_nodes):
        attr = next((nodes[name].attr[key] for key in QUANTIZED_TYPE_ATTRS if key in nodes[name].attr), None)
        if attr is None:
            continue
        tap = tapped.node.add(name=f"layer_drift_tap_{index}", op="Dequantize", input=[name, f"{name}:1", f"{name}:2"])
        tap.attr["T"].type = attr.type
        tap.attr["mode"].s = mode
        taps[name] = tap.name
    # oneDNN's fused residual sum writes into its summand's buffer: the next unit would
    # overwrite a tapped tensor while the tap reads it. Consumers wait for the tap.
    tap_names = set(taps.values())
    for node in tapped.node:
        if node.name in tap_names:
            continue
        for name in {source_node(i) for i in node.input if not i.startswith("^")} & taps.keys():
            node.input.append(f"^{taps[name]}")
    return tapped, taps


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norms)


def nearest_upstream(reference_nodes, name, candidates):
    """The first of `candidates` met walking up from `name`'s inputs (breadth first), or None."""
    queue, seen = [source_node(i) for i in reference_nodes[name].input], set()
    while queue:
        current = queue.pop(0)
        if current in candidates:
            return current
        if current in seen or current not in reference_nodes:
            continue
        seen.add(current)
        queue += [source_node(i) for i in reference_nodes[current].input]
    return None


def plan(reference_graph_def, candidate_graph_def, units, heads):
    """What to compare: [(label, FP32 node, INT8 node, quantized?, block end?, upstream label)],
    and the labels without an INT8 counterpart."""
    reference_nodes, candidate_nodes = node_index(reference_graph_def), node_index(candidate_graph_def)
    matched, unmatched = [], []
    for label, name, block_end in drift_points(reference_graph_def, units, heads):
        counterpart = candidate_counterpart(reference_nodes, candidate_nodes, name)
        if counterpart is None:
            unmatched.append(label)
        else:
            matched.append([label, name, counterpart[0], counterpart[1], block_end])
    labels = {name: label for label, name, *_ in matched}
    for entry in matched:
        upstream = nearest_upstream(reference_nodes, entry[1], labels.keys())
        entry.append(labels.get(upstream))
    return [tuple(entry) for entry in matched], unmatched


def measure_drift(reference_path, candidate_path, image_paths, interface, units, heads, threads=0,
                  candidate_precision="fp32"):  # fmt: skip
    images = [(path.name, decode_image(path.read_bytes(), path.name)[None]) for path in image_paths]
    result = drift_of_graphs(load_graph_def(reference_path), load_graph_def(candidate_path), images, interface,
                             units, heads, threads, candidate_precision)  # fmt: skip
    return {"reference": str(reference_path), "candidate": str(candidate_path), **result}


def drift_of_graphs(reference_graph_def, candidate_graph_def, images, interface, units, heads, threads=0,
                    candidate_precision="fp32"):  # fmt: skip
    """Layer drift of two graphs on `images`, [(name, decoded image batch)]."""
    matched, unmatched = plan(reference_graph_def, candidate_graph_def, units, heads)
    if not matched:
        log.warning("no named tensor of the reference has a counterpart in the candidate")
    tapped, taps = add_taps(candidate_graph_def, [node for _, _, node, quantized, *_ in matched if quantized])
    candidate_tensors = [f"{taps[node]}:0" if quantized else f"{node}:0" for _, _, node, quantized, *_ in matched]
    reference_session = open_session(reference_graph_def, threads, 1)
    candidate_session = open_session(tapped, threads, 1, candidate_precision)
    similarities = defaultdict(list)
    for name, image in images:
        reference = reference_session.run([f"{node}:0" for _, node, *_ in matched], interface.feed(image))
        candidate = candidate_session.run(candidate_tensors, interface.feed(image))
        for (label, *_), a, b in zip(matched, reference, candidate):
            if a.shape == b.shape:
                similarities[label].append(cosine(a, b))
        log.info("%s: %d tensors compared", name, len(matched))
    reference_session.close()
    candidate_session.close()
    means = {label: float(np.mean(values)) for label, values in similarities.items()}
    layers = []
    for label, name, node, quantized, block_end, upstream in matched:
        values = similarities[label]
        drop = means[upstream] - means[label] if label in means and upstream in means else None
        layers.append({
            "layer": label, "reference_tensor": f"{name}:0", "candidate_source": node, "dequantized_here": quantized,
            "block_end": block_end, "head": label in heads, "images": len(values), "cosine": means.get(label),
            "cosine_min": float(np.min(values)) if values else None, "upstream": upstream, "cosine_drop": drop,
        })  # fmt: skip
    measured = [layer for layer in layers if layer["cosine"] is not None]
    dropped = [layer for layer in layers if layer["cosine_drop"] is not None]
    return {
        "candidate_precision": candidate_precision,
        "images": [name for name, _ in images],
        "layers": layers,
        "unmatched": unmatched,
        "lowest_cosine": min(measured, key=lambda layer: layer["cosine"])["layer"] if measured else None,
        "largest_drop": max(dropped, key=lambda layer: layer["cosine_drop"])["layer"] if dropped else None,
    }


def drift_images(image_dir, count):
    """The first `count` JPEGs of `image_dir` in name order: the same for every model."""
    return list_images(image_dir)[:count]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="FP32 frozen graph")
    parser.add_argument("--candidate", type=Path, required=True, help="INT8 frozen graph, or the FP32 one for bf16")
    parser.add_argument("--candidate-precision", choices=PRECISIONS, default="fp32",
                        help="bf16: the candidate graph under oneDNN's automatic mixed precision")  # fmt: skip
    parser.add_argument("--allow-emulation", action="store_true", help="run bf16 on a CPU without BF16 instructions")
    parser.add_argument("--images", type=Path, required=True, help="folder of JPEGs")
    parser.add_argument("--count", type=int, default=4, help="how many images (the first by name)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: all cores")
    parser.add_argument("--output", type=Path, required=True, help="drift JSON")
    parser.add_argument("--units", required=True,
                        help="regular expression of the unit tensors' node names (architectures.<name>.layer_drift.units)")
    parser.add_argument("--heads", type=json.loads, default={},
                        help="head tensors as JSON, {label: node name} (architectures.<name>.layer_drift.heads)")  # fmt: skip
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
    result = measure_drift(args.reference, args.candidate, drift_images(args.images, args.count), interface_of(args),
                           args.units, args.heads, args.threads, args.candidate_precision)  # fmt: skip
    for layer in result["layers"]:
        log.info("%-24s cosine %s", layer["layer"], "n/a" if layer["cosine"] is None else f"{layer['cosine']:.5f}")
    log.info("lowest cosine at %s, largest drop at %s", result["lowest_cosine"], result["largest_drop"])
    with atomic_file(args.output) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
