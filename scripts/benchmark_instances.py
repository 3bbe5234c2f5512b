#!/usr/bin/env python3
"""Multi-instance throughput: N copies of the benchmark on disjoint core sets of one node.

As Intel's later launch scripts and MLPerf's Offline scenario measure CPU throughput: the
job's cores are split into N equal sets, and instance k runs benchmark_graph.py pinned to
set k (sched_setaffinity, as taskset does) with cores / N threads, over its own images
(every N-th one). The instances wait for each other before timing starts. Warm-up is
excluded in each; the timed window is the span during which every instance was past its
warm-up and still running, and the aggregate throughput is the sum of what each instance
completed inside it. Latency percentiles are given per instance and pooled.
Other options (steps, warm-up, batch, runtime) go to benchmark_graph.py as they are.
"""

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from detbench.common import StageError, atomic_file, run_main
from detbench.job_runtime import core_sets, job_cores, run_pinned

log = logging.getLogger("benchmark_instances")

BENCHMARK_SCRIPT = Path(__file__).resolve().parent / "benchmark_graph.py"
PERCENTILES = (50, 90, 99)


def latency_summary(seconds):
    milliseconds = np.array(seconds) * 1000.0
    return {"mean": float(milliseconds.mean()), **{f"p{q}": float(np.percentile(milliseconds, q)) for q in PERCENTILES}}


def aggregate(results):
    """Throughput and latency of instances that ran together, from their step timestamps."""
    steps = []  # per instance: (start, end, seconds) of each measured step
    for result in results:
        warmup = result["warmup_steps"]
        ends, seconds = result["step_end_monotonic"][warmup:], result["step_seconds"][warmup:]
        steps.append([(end - duration, end, duration) for end, duration in zip(ends, seconds)])
    window_start = max(instance[0][0] for instance in steps)
    window_end = min(instance[-1][1] for instance in steps)
    window = window_end - window_start
    if window <= 0:
        raise StageError("the instances never ran at the same time: raise number_of_steps")
    per_instance, pooled = [], []
    for result, instance in zip(results, steps):
        inside = [duration for start, end, duration in instance if start >= window_start and end <= window_end]
        if not inside:
            raise StageError(
                f"instance {result['instance']} finished no step inside the common window: raise number_of_steps"
            )
        pooled += inside
        per_instance.append(
            {
                "instance": result["instance"],
                "steps_in_window": len(inside),
                "throughput_images_per_second": result["batch_size"] * len(inside) / window,
                "latency_ms": latency_summary(inside),
            }
        )
    return {
        "window_seconds": window,
        "throughput_images_per_second": sum(item["throughput_images_per_second"] for item in per_instance),
        "latency_ms": latency_summary(pooled),
        "per_instance": per_instance,
    }


def run_instances(graph, image_dir, instances, threads, forwarded, work):
    """Start the instances pinned to their cores; returns their results, in instance order."""
    if "--numa-socket" in " ".join(forwarded):
        raise StageError("numa_socket binds a whole socket; with several instances each is pinned to its own cores")
    sets = core_sets(job_cores(threads), instances)
    barrier = work / "barrier"
    barrier.mkdir()
    commands = []
    for instance, cpus in enumerate(sets):
        commands.append(
            [
                sys.executable,
                str(BENCHMARK_SCRIPT),
                "--graph",
                str(graph),
                "--image-dir",
                str(image_dir),
                "--output",
                str(work / f"instance-{instance}.json"),
                "--instance",
                str(instance),
                "--instances",
                str(instances),
                "--start-barrier",
                str(barrier),
                *forwarded,
                f"--intra-op-threads={len(cpus)}",
                f"--omp-num-threads={len(cpus)}",
                # Per-instance profiles and probes would run side by side and be thrown away.
                "--profile-steps",
                "0",
                "--no-roofline",
            ]
        )
    # The others would wait at the barrier for a failed instance.
    failures = run_pinned(commands, sets, stop_all_on_failure=True)
    failed = [(instance, failure) for instance, failure in enumerate(failures) if failure]
    if failed:
        instance, failure = failed[0]
        raise StageError(f"instance {instance} failed: {failure}")
    results = [json.loads((work / f"instance-{instance}.json").read_text()) for instance in range(instances)]
    return results, sets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="frozen_inference_graph.pb")
    parser.add_argument("--image-dir", type=Path, required=True, help="folder of val2017 JPEGs")
    parser.add_argument("--output", type=Path, required=True, help="results JSON")
    parser.add_argument("--instances", type=int, required=True, help="copies on this node, at least 2")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="the job's threads, split (0: all cores)")
    parser.add_argument("--omp-num-threads", type=int, help="as the instances' intra-op threads")
    args, forwarded = parser.parse_known_args()
    if args.instances < 2:
        raise StageError("--instances must be at least 2 (one instance is benchmark_graph.py itself)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".instances-", dir=args.output.parent))
    try:
        results, sets = run_instances(
            args.graph, args.image_dir, args.instances, args.intra_op_threads, forwarded, work
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = aggregate(results)
    for item, cpus, result in zip(summary["per_instance"], sets, results):
        item.update(cores=cpus, alone_throughput_images_per_second=result["throughput_images_per_second"])
    log.info(
        "%d instances: %.2f images/s together over %.1f s; pooled p50 %.2f ms",
        args.instances,
        summary["throughput_images_per_second"],
        summary["window_seconds"],
        summary["latency_ms"]["p50"],
    )
    first = results[0]
    facts = (
        "batch_size",
        "image_size",
        "number_of_steps",
        "warmup_steps",
        "tensorflow_version",
        "onednn",
        "cpu_model",
        "cpu_flags",
        "graph",
        "graph_sha256",
        "precision",
        "emulated",
        "executed_kernels",
    )
    result = {
        "instances": args.instances,
        "cores_per_instance": len(sets[0]),
        **{key: first[key] for key in facts},
        **summary,
        "instance_results": [
            {key: r[key] for key in ("runtime", "peak_rss_mb", "step_seconds", "step_end_monotonic")} for r in results
        ],
    }
    with atomic_file(args.output) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
