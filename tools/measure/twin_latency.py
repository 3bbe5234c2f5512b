#!/usr/bin/env python3
"""Latency of the twin's graphs, through the workflow itself (a benchmark, not a test).

Runs the workflow on the full-size twins (`make twin`) up to its benchmarks: quantize_graph
makes the self-made INT8 from each FP32 twin, benchmark_graph times every model of the twin's
registry (per architecture Intel-style INT8, self-made INT8, BF16 of the FP32 graph, FP32) on all cores,
benchmark_instances runs one pinned instance per core. Then prints, from the jobs' own JSON
and Snakemake's cost files: quantize_graph's time and peak memory; per model the latency
p50/p90/p99, throughput, peak memory and speed-up over its reference (its architecture's FP32),
and for BF16 the share of op time
in bfloat16 and whether oneDNN emulated it; the time by model part; GFLOPs per image and the
share of the matmul probe reached; the CPU and its vector flags; and throughput as one instance
against one instance per core.

    make twin && .venv/bin/python tools/measure/twin_latency.py [--steps 40] [--rerun]
"""

import argparse
import csv
import json
import os
from pathlib import Path

import yaml

from detbench.common import StageError, run_main
from detbench.registry import reference_model
from tools.demo.run_demo import run_demo

REPO_ROOT = Path(__file__).resolve().parents[2]

TWIN = REPO_ROOT / ".cache" / "twin"


def cost(workdir, job):
    """Wall seconds and peak resident MB of a job, from its Snakemake benchmark file."""
    with open(workdir / "benchmarks" / f"{job}.tsv") as table:
        row = next(csv.DictReader(table, delimiter="\t"))
    return float(row["s"]), float(row["max_rss"])


def run_benchmarks(workdir, steps, cores, rerun):
    layout = f", {cores}" if cores > 1 else ""
    extra = [
        "--config",
        f"benchmark={{number_of_steps: {steps}, warmup_steps: 5, batch_size: 1, profile_steps: 3, "
        f"instances: [1{layout}]}}",
        "--until",
        "benchmark_graph",
        "benchmark_instances",
    ]
    if rerun:
        extra += ["--forcerun", "quantize_graph", "benchmark_graph", "benchmark_instances"]
    run_demo(workdir, cores, extra, data=TWIN)


def print_figures(workdir, cores):
    results = {
        path.stem: json.loads(path.read_text()) for path in sorted((workdir / "results/benchmark").glob("*.json"))
    }
    if not results:
        raise StageError(f"{workdir}: no benchmark results")
    # The registry run_demo wrote: each model against its own architecture's FP32.
    models = yaml.safe_load((workdir / "config.yaml").read_text())["models"]
    references = {model: reference_model(models, model) or model for model in results}
    first = next(iter(results.values()))
    flags = ", ".join(first["probe"]["cpu_flags"]) if first.get("probe") else "not probed"
    print(
        f"CPU: {first['cpu_model']} ({flags}); {first['usable_cores']} cores; TensorFlow {first['tensorflow_version']}"
    )
    for quantized in sorted((workdir / "benchmarks/quantize_graph").glob("*.tsv")):
        seconds, peak = cost(workdir, f"quantize_graph/{quantized.stem}")
        print(f"quantize_graph {quantized.stem}: {seconds:.0f} s, {peak / 1024:.1f} GB peak")
    print(
        "\nmodel           p50 ms   p90 ms   p99 ms  images/s  peak GB  speed-up  GFLOPs/img  share of probe   bfloat16"
    )
    for model, result in results.items():
        latency, roofline = result["latency_ms"], result.get("roofline") or {}
        reference_p50 = results[references[model]]["latency_ms"]["p50"]
        _, peak = cost(workdir, f"benchmark_graph/{model}")
        share = roofline.get("fraction_of_probe")
        share = "  n/a" if share is None else f"{100 * share:>4.0f}%"
        print(
            f"{model:<14} {latency['p50']:>7.0f}  {latency['p90']:>7.0f}  {latency['p99']:>7.0f}"
            f"  {result['throughput_images_per_second']:>8.2f}  {peak / 1024:>7.1f}"
            f"  {reference_p50 / latency['p50']:>7.2f}x  {roofline.get('gflops_per_image', 0):>10.0f}"
            f"  {share} of {roofline.get('probe_gflops_per_second', 0):.0f}"
            f" ({roofline.get('probe_precision', '-')})"
            f"  {100 * result['bfloat16']['op_time_fraction']:>4.0f}%{' emulated' if result['emulated'] else ''}"
        )
    for reference in dict.fromkeys(references.values()):
        group = {model: result for model, result in results.items() if references[model] == reference}
        if not results[reference].get("profile"):
            continue
        print(f"\nms per image by model part, the models compared with {reference}:")
        print(f"{'part':<36}" + "".join(f"{model:>14}" for model in group))
        for part in results[reference]["profile"]["by_part_ms"]:
            print(f"{part:<36}" + "".join(f"{r['profile']['by_part_ms'][part]:>14.0f}" for r in group.values()))
    if cores > 1:
        print(f"\nimages/s, 1 instance x {cores} cores against {cores} instances x 1 core:")
        for model, result in results.items():
            several = json.loads((workdir / f"results/benchmark/instances/{model}-{cores}.json").read_text())
            print(
                f"{model:<9} {result['throughput_images_per_second']:>8.2f}  "
                f"{several['throughput_images_per_second']:>8.2f}"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="benchmark steps per model (5 of them warm-up)")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".cache" / "twin-latency")
    parser.add_argument("--rerun", action="store_true", help="quantize and time again even if results exist")
    args = parser.parse_args()
    if args.steps <= 5:
        raise StageError("--steps must be more than the 5 warm-up steps")
    cores = len(os.sched_getaffinity(0))
    run_benchmarks(args.workdir.resolve(), args.steps, cores, args.rerun)
    print_figures(args.workdir.resolve(), cores)


if __name__ == "__main__":
    run_main(main)
