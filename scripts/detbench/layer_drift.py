"""Layer drift: the cosine of a candidate graph's activations with its reference's, unit by unit
and at the heads, with fused INT8 tensors dequantized (see scripts/measure_layer_drift.py)."""

import logging
import re
from collections import defaultdict

import numpy as np

from detbench.detection_graph import (
    decode_image,
    list_images,
    load_graph_def,
    open_session,
    source_node,
)

log = logging.getLogger("measure_layer_drift")

# Ops a quantized convolution's fused pattern runs through, up to the tensor it ends at.
# A BatchNorm scale the exporter left unfolded (MobileNetV2's depthwise convolutions) is a Mul.
FUSED_INTO_CONVOLUTION = {
    "BiasAdd",
    "Add",
    "AddV2",
    "Mul",
    "Relu",
    "Relu6",
    "FusedBatchNorm",
    "FusedBatchNormV3",
    "Identity",
}
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


def measure_drift(
    reference_path, candidate_path, image_paths, interface, units, heads, threads=0, candidate_precision="fp32"
):
    images = [(path.name, decode_image(path.read_bytes(), path.name)[None]) for path in image_paths]
    result = drift_of_graphs(
        load_graph_def(reference_path),
        load_graph_def(candidate_path),
        images,
        interface,
        units,
        heads,
        threads,
        candidate_precision,
    )
    return {"reference": str(reference_path), "candidate": str(candidate_path), **result}


def drift_of_graphs(
    reference_graph_def, candidate_graph_def, images, interface, units, heads, threads=0, candidate_precision="fp32"
):
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
        layers.append(
            {
                "layer": label,
                "reference_tensor": f"{name}:0",
                "candidate_source": node,
                "dequantized_here": quantized,
                "block_end": block_end,
                "head": label in heads,
                "images": len(values),
                "cosine": means.get(label),
                "cosine_min": float(np.min(values)) if values else None,
                "upstream": upstream,
                "cosine_drop": drop,
            }
        )
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
