#!/usr/bin/env python3
"""Measure the benchmark harness against a bare session.run loop (a benchmark, not a test).

One process, one session on the same heavy FP32 graph (the demo detector plus a
convolution tower of a few GFLOPs), the same images. The bare loop runs on images
decoded beforehand; the harness reads and decodes JPEGs on its prefetch thread as
benchmark_graph.py does. Rounds alternate between the two; the medians are compared.

    .venv/bin/python tools/measure/harness_overhead.py [--steps 100] [--rounds 5]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from detbench.detection_graph import default_interface, detect, open_session
from detbench.engines import TensorFlowEngine
from detbench.job_runtime import usable_cores
from detbench.timing import BatchPrefetcher, load_batch, time_steps
from tools.demo.make_demo_data import build_detector, mini_coco


def bare_loop(session, images, steps):
    """Mean seconds per image of a plain session.run loop on decoded images."""
    seconds = []
    fetches, interface = default_interface().fetches(), default_interface()
    for step in range(steps):
        start = time.perf_counter()
        session.run(fetches, interface.feed(images[step % len(images)]))
        seconds.append(time.perf_counter() - start)
    return statistics.fmean(seconds)


def harness_loop(session, paths, steps):
    """Mean seconds per image as benchmark_graph.py reports it, JPEGs read by its prefetcher."""
    prefetcher = BatchPrefetcher(paths, 1, None, steps)
    prefetcher.wait_until_full()
    return statistics.fmean(time_steps(TensorFlowEngine(session, default_interface()), iter(prefetcher), steps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="images per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--layers", type=int, default=4, help="extra 3x3 conv layers (about 1.4 GFLOPs each)")
    args = parser.parse_args()
    import logging

    logging.disable(logging.INFO)  # time_steps logs every 10 steps, as the stage does
    with tempfile.TemporaryDirectory() as folder:
        _, jpegs = mini_coco()
        paths = []
        for name, data in sorted(jpegs.items()):
            paths.append(Path(folder) / name)
            paths[-1].write_bytes(data)
        decoded = [load_batch([path], None) for path in paths]
        graph_def = build_detector("fp32", extra_conv_layers=args.layers)
        session = open_session(graph_def, usable_cores(), 1)
        for image in decoded:  # warm-up: graph set-up and oneDNN primitive caches
            detect(session, default_interface(), image)
        bare, harness = [], []
        for _ in range(args.rounds):
            bare.append(bare_loop(session, decoded, args.steps))
            harness.append(harness_loop(session, paths, args.steps))
    bare_ms, harness_ms = statistics.median(bare) * 1000, statistics.median(harness) * 1000
    pixels = statistics.fmean(image.shape[1] * image.shape[2] for image in decoded)
    gflops = 2 * pixels * 9 * 32 * (3 + 32 * (args.layers - 1)) / 1e9
    print(
        f"graph: demo FP32 detector + {args.layers} conv layers, {gflops:.1f} GFLOPs per image on average; "
        f"{len(paths)} images, {args.steps} steps x {args.rounds} rounds, {usable_cores()} cores"
    )
    print(f"bare session.run loop: {bare_ms:.2f} ms/image (rounds: {', '.join(f'{b * 1000:.2f}' for b in bare)})")
    print(f"harness:               {harness_ms:.2f} ms/image (rounds: {', '.join(f'{h * 1000:.2f}' for h in harness)})")
    print(f"ratio harness/bare:    {harness_ms / bare_ms:.3f} (target <= 1.02)")


if __name__ == "__main__":
    main()
