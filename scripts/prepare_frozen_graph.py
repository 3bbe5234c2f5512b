#!/usr/bin/env python3
"""Put a frozen detection graph in place and check that it is one.

The source is either the `.pb` itself or an archive, from which `--member` is
extracted safely. The graph must parse as a GraphDef and have the Object
Detection API interface: input `image_tensor` and the four detection outputs.
"""

import argparse
import logging
import shutil
from collections import Counter
from pathlib import Path

from common import StageError, atomic_file, run_main
from extract_archive import extract

log = logging.getLogger("prepare_frozen_graph")

INPUT_NODE = "image_tensor"
OUTPUT_NODES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def load_graph_def(path):
    """Parse a frozen graph; a truncated or foreign file gives a one-line error."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except DecodeError as error:
        raise StageError(f"{path}: not a TensorFlow GraphDef, or truncated ({error})") from None
    if not graph_def.node:
        raise StageError(f"{path}: the GraphDef has no nodes")
    return graph_def


def check_detection_graph(path):
    """Check the Object Detection API interface; returns the op-type counts."""
    graph_def = load_graph_def(path)
    names = {node.name for node in graph_def.node}
    missing = [name for name in (INPUT_NODE, *OUTPUT_NODES) if name not in names]
    if missing:
        raise StageError(f"{path}: not a detection graph, it has no {', '.join(missing)} node")
    return Counter(node.op for node in graph_def.node)


def prepare_graph(source, output, member=None):
    with atomic_file(output) as temporary:
        if member:
            extract(source, member, temporary)
        else:
            shutil.copyfile(source, temporary)
        op_counts = check_detection_graph(temporary)
    log.info("%s: %d nodes; ops: %s", output, sum(op_counts.values()), dict(op_counts.most_common()))
    return op_counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="downloaded .pb, or an archive holding it")
    parser.add_argument("output", type=Path, help="where the checked graph goes")
    parser.add_argument("--member", help="path of the graph inside the archive")
    args = parser.parse_args()
    if not args.source.is_file():
        raise StageError(f"no such file: {args.source}")
    prepare_graph(args.source, args.output, args.member)


if __name__ == "__main__":
    run_main(main)
