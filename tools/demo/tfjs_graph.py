"""A TensorFlow.js graph model (model.json plus weight shards) read back into a frozen GraphDef.

The TF.js converter writes a frozen graph's GraphDef as protobuf JSON (`modelTopology`) with the
constants' values moved to binary shards (`weightsManifest`). Reading it back needs three things
that protobuf's own JSON parser does not do: string attributes are byte lists (not base64),
every Const's tensor content lives in the shards, and TF.js-only fused ops (`_FusedConv2D`,
`FusedDepthwiseConv2dNative`) have no TensorFlow kernel, so they are split back into the
convolution, BiasAdd and activation they came from. pip `tensorflowjs` converts only the other
way for graph models.
"""

import base64
import copy
import json
from pathlib import Path

import numpy as np

from detbench.common import StageError

# TF.js weight dtypes and their byte layout in the shards (little endian).
SHARD_DTYPES = {"float32": "<f4", "int32": "<i4", "bool": "|b1", "uint8": "|u1"}
FUSED_OPS = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
ACTIVATIONS = {b"Relu": "Relu", b"Relu6": "Relu6", b"Elu": "Elu", b"Sigmoid": "Sigmoid", b"Tanh": "Tanh"}


def read_model_json(model_dir):
    path = Path(model_dir) / "model.json"
    try:
        model = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StageError(f"{path}: not a readable TF.js model.json ({error})") from None
    if "modelTopology" not in model or "weightsManifest" not in model:
        raise StageError(f"{path}: no modelTopology or weightsManifest: not a TF.js graph model")
    return model


def read_weights(model_dir, manifest):
    """{name: ndarray} from the shards, which each manifest group concatenates in order."""
    weights = {}
    for group in manifest:
        blob = b"".join((Path(model_dir) / shard).read_bytes() for shard in group["paths"])
        offset = 0
        for spec in group["weights"]:
            if "quantization" in spec:
                raise StageError(f"{spec['name']}: quantized TF.js weights are not supported")
            dtype = np.dtype(SHARD_DTYPES[spec["dtype"]])
            count = int(np.prod(spec["shape"], dtype=np.int64))
            end = offset + count * dtype.itemsize
            if end > len(blob):
                raise StageError(f"{model_dir}: weight shards end before {spec['name']}: download them again")
            weights[spec["name"]] = np.frombuffer(blob, dtype, count, offset).reshape(spec["shape"])
            offset = end
    return weights


def encode_strings(node):
    """Protobuf JSON wants bytes as base64; TF.js wrote string attributes (and string tensors)
    as lists of byte values."""
    for value in node.get("attr", {}).values():
        if "s" in value:
            value["s"] = to_base64(value["s"])
        if "s" in value.get("list", {}):
            value["list"]["s"] = [to_base64(item) for item in value["list"]["s"]]
        if "stringVal" in value.get("tensor", {}):
            value["tensor"]["stringVal"] = [to_base64(item) for item in value["tensor"]["stringVal"]]
    return node


def to_base64(values):
    return base64.b64encode(bytes(values)).decode()


def graph_def_from_tfjs(model_dir):
    """The frozen GraphDef a TF.js graph model was converted from, constants filled in."""
    from google.protobuf import json_format
    from tensorflow.core.framework import graph_pb2
    from tensorflow.python.framework import tensor_util

    model = read_model_json(model_dir)
    topology = copy.deepcopy(model["modelTopology"])
    topology["node"] = [encode_strings(node) for node in topology["node"]]
    graph_def = graph_pb2.GraphDef()
    json_format.ParseDict(topology, graph_def, ignore_unknown_fields=True)
    weights = read_weights(model_dir, model["weightsManifest"])
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(weights.pop(node.name)))
    if weights:
        raise StageError(f"{model_dir}: weights without a Const node: {sorted(weights)[:3]}")
    empty = [n.name for n in graph_def.node if n.op == "Const" and not n.attr["value"].tensor.ByteSize()]
    if empty:
        raise StageError(f"{model_dir}: Const nodes without a value: {empty[:3]}")
    return split_fused_ops(graph_def)


def split_fused_ops(graph_def):
    """`_FusedConv2D` and `FusedDepthwiseConv2dNative` (TF.js only) back into the convolution,
    BiasAdd and activation they fused, keeping the fused node's name on the last of them."""
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op not in FUSED_OPS:
            out.node.add().CopyFrom(node)
            continue
        fused = list(node.attr["fused_ops"].list.s)
        if any(op not in (b"BiasAdd", *ACTIVATIONS) for op in fused):
            raise StageError(f"{node.name}: fused ops {fused} cannot be split into TensorFlow ops")
        data_inputs = [name for name in node.input if not name.startswith("^")]
        conv = out.node.add(name=f"{node.name}/conv", op=FUSED_OPS[node.op], input=data_inputs[:2])
        for key in ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings"):
            if key in node.attr:
                conv.attr[key].CopyFrom(node.attr[key])
        last, extra = conv.name, iter(data_inputs[2:])
        for index, op in enumerate(fused):
            name = node.name if index == len(fused) - 1 else f"{node.name}/{op.decode()}"
            step = out.node.add(name=name, op=ACTIVATIONS.get(op, "BiasAdd"), input=[last])
            if op == b"BiasAdd":
                step.input.append(next(extra))
            step.attr["T"].CopyFrom(node.attr["T"])
            last = name
        if not fused:
            conv.name = node.name
    return out
