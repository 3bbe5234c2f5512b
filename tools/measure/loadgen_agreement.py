#!/usr/bin/env python3
"""LoadGen's SingleStream against benchmark_graph's timed loop, in one process (a benchmark,
not a test): do the two harnesses measure the same latency, and how steady is it?

For each model of a finished run (`--workdir`, e.g. twin-demo/ or demo-real/), one session is
opened and its images decoded once; then, in alternating rounds, benchmark_graph's own loop
(`time_steps`, the recipe's order of images) and a LoadGen SingleStream run of the same number
of queries (LoadGen's order) time it. Printed per model: each harness's p50 and p90 median over
rounds, their ratio, LoadGen's overhead per query (its mean latency minus the mean time of
`session.run` inside its queries), and the coefficient of variation of the loop's p50 over the
rounds, with the CPU and its flags.

    .venv/bin/python -m tools.measure.loadgen_agreement --workdir twin-demo --models fp32 ssd_fp32 [--rounds 5]
"""

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from detbench.common import StageError, run_main
from detbench.detection_graph import Interface, list_images
from detbench.engines import open_engine
from detbench.job_runtime import apply_runtime, cpu_flags, cpu_model, usable_cores
from detbench.loadgen_driver import GraphRunner, SampleLibrary, loadgen_settings, run_test, scenario_figures
from detbench.timing import load_image, time_steps

KNOBS = {
    "min_duration_ms": 0,
    "max_duration_ms": 0,
    "expected_latency_ms": None,
    "single_stream_percentile": 90,
}


def model_runner(workdir, name):
    """The model's graph, interface and runtime as the run's config gives them."""
    import yaml

    from detbench.config_schema import load_schema
    from detbench.plan import Plan
    from detbench.registry import checked_config

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    problems = checked_config(config, load_schema(), base=workdir)
    if problems:
        raise StageError(f"{workdir / 'config.yaml'}: {problems[0]}")
    if name not in config["models"]:
        raise StageError(f"--models {name}: not a model of {workdir / 'config.yaml'} ({', '.join(config['models'])})")
    plan = Plan(config, native_bf16=True)
    applied = apply_runtime({**plan.runtime_settings(name), "intra_op_threads": 0, "inter_op_threads": 1})
    graph = workdir / plan.graph(name)
    return GraphRunner(open_engine(graph, applied, Interface.of_model(config["models"][name])))


def measure(runner, images, steps, warmup, rounds, log_dir):
    feeds = [runner.prepare(image) for image in images]
    library = SampleLibrary(len(feeds), lambda index: feeds[index], len(feeds))
    runner.warm_up(feeds[0], warmup)
    loop, loadgen = [], []
    for round_index in range(rounds):
        raw = (images[index % len(images)][None] for index in range(steps))
        seconds = np.array(time_steps(runner.engine, raw, steps)[warmup:]) * 1000
        loop.append({"p50": np.percentile(seconds, 50), "p90": np.percentile(seconds, 90)})
        knobs = {**KNOBS, "min_query_count": {"SingleStream": steps - warmup}}
        service = 1000 * statistics.median(seconds / 1000)
        settings = loadgen_settings("SingleStream", knobs, measured_latency_ms=service)
        detail, service_seconds = run_test(library, runner, settings, log_dir / f"round-{round_index}")
        figures = scenario_figures("SingleStream", detail, knobs)
        loadgen.append(
            {
                "p50": figures["latency_ms"]["50.00"],
                "p90": figures["latency_ms"]["90.00"],
                "overhead": figures["mean_latency_ms"] - 1000 * float(np.mean(service_seconds)),
            }
        )
    return loop, loadgen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished run's folder (its config.yaml)")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="timed steps (LoadGen queries) per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", type=int, default=24, help="the first N images of the run's val2017")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/loadgen_agreement"))
    args = parser.parse_args()
    images = [load_image(path, None) for path in list_images(args.workdir / "resources/coco/val2017")[: args.images]]
    print(f"CPU: {cpu_model()} ({', '.join(cpu_flags())}), {usable_cores()} cores")
    print(f"{args.rounds} rounds of {args.steps} steps ({args.warmup} warm-up), alternating, {len(images)} images")
    header = "model        loop p50   loop p90   LoadGen p50   LoadGen p90   p90 ratio   overhead   loop p50 CV"
    print(header)
    figures = {}
    for name in args.models:
        loop, loadgen = measure(
            model_runner(args.workdir, name), images, args.steps, args.warmup, args.rounds, args.log_dir / name
        )
        loop_p50 = [r["p50"] for r in loop]
        row = {
            "loop_p50": statistics.median(loop_p50),
            "loop_p90": statistics.median(r["p90"] for r in loop),
            "loadgen_p50": statistics.median(r["p50"] for r in loadgen),
            "loadgen_p90": statistics.median(r["p90"] for r in loadgen),
            "overhead_ms": statistics.median(r["overhead"] for r in loadgen),
            "loop_p50_cv": statistics.stdev(loop_p50) / statistics.mean(loop_p50) if len(loop) > 1 else 0.0,
        }
        row["p90_ratio"] = row["loadgen_p90"] / row["loop_p90"]
        figures[name] = row
        print(
            f"{name:12s} {row['loop_p50']:8.2f}   {row['loop_p90']:8.2f}   {row['loadgen_p50']:11.2f}   "
            f"{row['loadgen_p90']:11.2f}   {row['p90_ratio']:9.3f}   {row['overhead_ms']:8.3f}   "
            f"{100 * row['loop_p50_cv']:10.1f}%"
        )
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    run_main(main)
