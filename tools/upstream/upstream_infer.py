#!/usr/bin/env python3
"""Run the recipe's own detection code: the Object Detection API's
`inference/infer_detections.py`, unmodified, as a script with its flags.

The code is object-detection 0.0.3 from its PyPI wheel, on TensorFlow 2 through odapi_compat
(TF1 graph mode, queue runners, `tf.app.run`). One Python 3 fix: its graph file is opened in
text mode (`tf.gfile.Open(path, 'r')`), which on Python 3 yields str where MergeFromString
needs bytes, so reading mode 'r' opens in 'rb'. It writes what the recipe's accuracy run
scored: each input record with `image/detection/*` added.

    python tools/upstream/upstream_infer.py GRAPH OUTPUT.record RECORD [RECORD ...]
"""

import argparse
import logging
import runpy
import sys
import tempfile
from pathlib import Path

from detbench.common import StageError, run_main

log = logging.getLogger("upstream_infer")


def run_infer_detections(graph, output, records):
    from tools.twin.make_twin import DEFAULT_WHEEL, PROTOS_WHEEL
    from tools.twin.twin_graphs import unpack_object_detection
    from tools.upstream import odapi_compat

    with tempfile.TemporaryDirectory() as source_root:
        unpack_object_detection(DEFAULT_WHEEL, PROTOS_WHEEL, Path(source_root))
        odapi_compat.install(Path(source_root))
        import tensorflow as tf  # tensorflow.compat.v1, as the 2019 code expects

        text_mode_open = tf.gfile.Open
        tf.gfile.Open = lambda name, mode="r": text_mode_open(name, "rb" if mode == "r" else mode)
        script = Path(source_root) / "object_detection" / "inference" / "infer_detections.py"
        sys.argv = [
            str(script),
            f"--input_tfrecord_paths={','.join(map(str, records))}",
            f"--output_tfrecord_path={output}",
            f"--inference_graph={graph}",
            "--discard_image_pixels",
        ]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as status:
            if status.code not in (None, 0):
                raise StageError(f"infer_detections.py exited with {status.code}") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path, help="frozen_inference_graph.pb")
    parser.add_argument("output", type=Path, help="TFRecord to write")
    parser.add_argument("records", type=Path, nargs="+", help="input TFRecords (coco_val.record)")
    args = parser.parse_args()
    run_infer_detections(args.graph.resolve(), args.output.resolve(), [r.resolve() for r in args.records])


if __name__ == "__main__":
    run_main(main)
