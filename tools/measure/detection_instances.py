#!/usr/bin/env python3
"""A whole detection job as one instance on all cores against one pinned instance per core
(a benchmark, not a test).

On a finished run's TFRecord and graphs (`make demo`, `make twin-demo`), runs the
detect_objects stage for every model twice, as a user waits for it (graph loading and
oneDNN's first runs included): `--instances 1` with all cores, then `--instances N`, one
core each. Prints both wall times, their ratio, and whether the two detection files hold
the same detections (they must).

    make twin-demo && .venv/bin/python tools/measure/detection_instances.py twin-demo
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from detbench.common import StageError, run_main

REPO_ROOT = Path(__file__).resolve().parents[2]


def timed_detection(graph, records, output, instances):
    """Wall seconds of one detect_objects run, as the rule runs it (oneDNN on)."""
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "detect_objects.py"),
        "--graph",
        str(graph),
        "--records",
        str(records),
        "--output",
        str(output),
        "--instances",
        str(instances),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise StageError(f"detect_objects on {graph} with {instances} instances failed: {result.stderr.strip()[-300:]}")
    return seconds, json.loads(Path(output).read_text())["detections"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="a finished run's folder (twin-demo, demo)")
    args = parser.parse_args()
    records = args.workdir / "resources" / "coco_tfrecord"
    graphs = sorted((args.workdir / "resources" / "models").glob("*/frozen_inference_graph.pb"))
    if not records.is_dir() or not graphs:
        raise StageError(f"{args.workdir}: no TFRecord or graphs: run the workflow there first (make twin-demo)")
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        raise StageError("one core: there is no second layout to compare")
    print(f"{cores} cores; whole detection job, 1 x {cores} cores against {cores} x 1 core")
    print(f"{'model':<10} {'1 instance s':>13} {f'{cores} instances s':>14} {'ratio':>7}  same detections")
    with tempfile.TemporaryDirectory() as scratch:
        for graph in graphs:
            model = graph.parent.name
            one, single = timed_detection(graph, records, Path(scratch) / f"{model}-1.json", 1)
            several, merged = timed_detection(graph, records, Path(scratch) / f"{model}-{cores}.json", cores)
            print(f"{model:<10} {one:>13.1f} {several:>14.1f} {one / several:>6.2f}x  {single == merged}")


if __name__ == "__main__":
    run_main(main)
