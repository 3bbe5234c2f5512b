"""Graph preparation before quantization: a convolution's bias split out of a residual sum.

TensorFlow's arithmetic optimizer, run by the Object Detection API's exporter, merges a residual
block's two additions, BatchNorm's offset and the shortcut, into `AddN(conv, shortcut)` followed
by `Add(offset, ...)`. Neural Compressor then finds the projection convolution with no bias to
fuse and quantizes it as a plain `QuantizedConv2D` plus `Requantize`, whose output on TF 2.21
is wrong (cosine 0.53 with FP32 on the first such block of MobileNetV2, against 0.99 for the
same block's fused convolutions). Reordered as `Add(BiasAdd(conv, offset), shortcut)`, which
computes the same sum, the convolution gets Neural Compressor's fused bias kernel, and the
shortcut sum stays FP32.
"""

from collections import defaultdict

CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")
SUMS = ("Add", "AddV2")


def node_name(tensor):
    return tensor.lstrip("^").split(":")[0]


def is_bias(node):
    """A rank-1 float constant: a per-channel offset."""
    if node.op != "Const":
        return False
    shape = node.attr["value"].tensor.tensor_shape
    return len(shape.dim) == 1 and node.attr["dtype"].type == 1


def split_residual_biases(graph_def):
    """Returns (rewritten graph, names of the sums rewritten). `AddN(conv, shortcut)` read only
    by `Add(offset, AddN)` becomes `BiasAdd(conv, offset)` then `AddV2(..., shortcut)`, which
    keeps the outer sum's name, so every consumer reads the same tensor as before."""
    nodes = {node.name: node for node in graph_def.node}
    consumers = defaultdict(list)
    for node in graph_def.node:
        for tensor in node.input:
            consumers[node_name(tensor)].append(node.name)
    rewrites = {}  # AddN name -> (outer sum name, convolution input, shortcut input, offset input)
    for node in graph_def.node:
        if node.op != "AddN" or len(node.input) != 2 or len(consumers[node.name]) != 1:
            continue
        outer = nodes[consumers[node.name][0]]
        if outer.op not in SUMS:
            continue
        offsets = [tensor for tensor in outer.input if node_name(tensor) != node.name]
        convolutions = [
            t for t in node.input if nodes[node_name(t)].op in CONVOLUTIONS and len(consumers[node_name(t)]) == 1
        ]
        if len(offsets) != 1 or not is_bias(nodes[node_name(offsets[0])]) or not convolutions:
            continue
        convolution = convolutions[0]
        shortcut = next(tensor for tensor in node.input if tensor != convolution)
        rewrites[node.name] = (outer.name, convolution, shortcut, offsets[0])
    if not rewrites:
        return graph_def, []
    outer_sums = {
        outer: (name, convolution, shortcut, offset)
        for name, (outer, convolution, shortcut, offset) in rewrites.items()
    }
    rewritten = type(graph_def)()
    rewritten.versions.CopyFrom(graph_def.versions)
    rewritten.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name in rewrites:
            continue
        if node.name not in outer_sums:
            rewritten.node.add().CopyFrom(node)
            continue
        addn, convolution, shortcut, offset = outer_sums[node.name]
        biased = rewritten.node.add(
            name=f"{node_name(convolution)}/bias_add", op="BiasAdd", input=[convolution, offset]
        )
        biased.attr["T"].CopyFrom(node.attr["T"])
        biased.attr["data_format"].s = nodes[node_name(convolution)].attr["data_format"].s or b"NHWC"
        summed = rewritten.node.add(name=node.name, op="AddV2", input=[biased.name, shortcut])
        summed.attr["T"].CopyFrom(node.attr["T"])
    return rewritten, sorted(outer_sums)
