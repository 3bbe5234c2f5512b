#!/usr/bin/env python3
"""Put a frozen detection graph in place and check that it is one.

The source is either the `.pb` itself or an archive, from which `--member` is
extracted safely. The graph must parse as a GraphDef, have its interface (by
default the Object Detection API's: `image_tensor` in, the four detection outputs),
and hold only ops this TensorFlow can run on CPU, so that a graph the inference
jobs would refuse is refused here, at once. Errors name the source, not the
temporary copy.

With `--preprocess-graph`, the graph starts after preprocessing (Intel's INT8
SSD-MobileNet takes `Preprocessor/subpart2`): the preprocessing graph is joined in
front of it, so that every stage feeds the result images, as the others.
"""

import argparse
import logging
import shutil
from pathlib import Path

from extract_archive import extract, is_archive

from detbench.common import StageError, atomic_file, run_main
from detbench.config_schema import schema_defaults
from detbench.detection_graph import (
    add_interface_arguments,
    check_interface,
    check_ops_run_on_cpu,
    default_interface,
    interface_of,
    join_preprocessing,
    load_graph_def,
    op_counts,
)

log = logging.getLogger("prepare_frozen_graph")


def check_detection_graph(path, label=None, interface=None):
    """Parse the graph and check its interface and ops; returns the op-type counts.
    Errors name `label` (default: the path)."""
    label = label or path
    graph_def = load_graph_def(path, label)
    check_interface(graph_def, label, interface or default_interface())
    check_ops_run_on_cpu(graph_def, label)
    return op_counts(graph_def)


def prepare_graph(source, output, member=None, interface=None, preprocess=None):
    """`preprocess`: (preprocessing graph path, its output tensor, this graph's input tensor)."""
    if not member and is_archive(source):
        raise StageError(
            f"{source} is an archive: name the graph inside it with --member (models.<name>.member in the config)"
        )
    if member and not is_archive(source):
        raise StageError(
            f"{source} is not a zip or tar archive, so it holds no member {member!r}: if it is the graph "
            "itself, drop --member (models.<name>.member in the config); if not, download it again"
        )
    with atomic_file(output) as temporary:
        if member:
            extract(source, member, temporary)
        else:
            shutil.copyfile(source, temporary)
        if preprocess:
            preprocess_graph, preprocess_output, detector_input = preprocess
            joined = join_preprocessing(
                load_graph_def(preprocess_graph),
                load_graph_def(temporary, source),
                preprocess_output,
                detector_input,
                source,
            )
            temporary.write_bytes(joined.SerializeToString())
        counts = check_detection_graph(temporary, f"{source}:{member}" if member else source, interface)
    log.info("%s: %d nodes; ops: %s", output, sum(counts.values()), dict(counts.most_common()))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="downloaded .pb, or an archive holding it")
    parser.add_argument("output", type=Path, help="where the checked graph goes")
    parser.add_argument("--member", help="path of the graph inside the archive")
    group = parser.add_argument_group("a graph that starts after preprocessing")
    group.add_argument("--preprocess-graph", type=Path, help="the preprocessing graph to join in front")
    group.add_argument(
        "--preprocess-output",
        default=schema_defaults("models.*.preprocess")["output"],
        help="its output tensor (models.<name>.preprocess.output)",
    )
    group.add_argument("--detector-input", help="the graph's own input, fed by it (models.<name>.input.tensor)")
    add_interface_arguments(parser)
    args = parser.parse_args()
    if args.preprocess_graph and not args.detector_input:
        raise StageError("--preprocess-graph needs --detector-input: the graph's own input node, which it feeds")
    for path in (args.source, args.preprocess_graph):
        if path is not None and not path.is_file():
            raise StageError(f"no such file: {path}")
    preprocess = (args.preprocess_graph, args.preprocess_output, args.detector_input) if args.preprocess_graph else None
    prepare_graph(args.source, args.output, args.member, interface_of(args), preprocess)


if __name__ == "__main__":
    run_main(main)
