#!/usr/bin/env python3
"""Benchmark a frozen detection graph on raw val2017 JPEGs: latency and throughput.

Images are read and decoded (grayscale to 3 channels) by a background thread that
keeps a few batches ready, so only `session.run` is timed: the graph, with its preprocessing
(a joined preprocessing graph too, unless `--timed-from` names where timing starts). Batch 1 gives per-image
latency (online mode); a larger batch gives throughput (batch mode), with every
image resized to one configured size so that a batch is well formed. Warm-up
steps are excluded from every statistic. The log keeps the recipe's shape
(`Step N: X seconds` every 10 steps, `Avg. Duration per Step:` as Intel computes
it, first step included) so that runs compare with published logs. After the timed
steps: a profile by model part and kernel (traced steps), the FLOPs executed per
image, and the rate a matmul reaches on the same threads (see performance.py).
"""

import argparse
import json
import logging
import time
from pathlib import Path

from detbench.common import StageError, atomic_file, run_main
from detbench.config_schema import schema_defaults
from detbench.detection_graph import (
    add_interface_arguments,
    bfloat16_share,
    interface_of,
    kernels_in,
    list_images,
)
from detbench.engines import open_engine
from detbench.job_runtime import add_runtime_arguments, apply_runtime, environment_facts, runtime_settings, usable_cores
from detbench.machine import Activity, machine_state
from detbench.onednn_dispatch import captured_stdout, dispatch_facts, enable_verbose
from detbench.performance import add_parts_argument, count_flops, probe_rates, profile, roofline
from detbench.timing import BatchPrefetcher, summarize, time_steps

log = logging.getLogger("benchmark_graph")


def wait_for_instances(barrier, instance, instances, timeout=900):
    """Start together: say this instance is ready, then wait for the others to be."""
    (barrier / f"ready-{instance}").touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.glob("ready-*"))) < instances:
        if time.monotonic() > deadline:
            raise StageError(f"instance {instance}: the other instances were not ready within {timeout} s")
        time.sleep(0.001)


def benchmark(
    graph_path,
    interface,
    image_dir,
    steps,
    warmup_steps,
    batch_size,
    image_size,
    applied,
    output,
    on_bad_image="stop",
    profile_steps=3,
    instance=0,
    instances=1,
    barrier=None,
    with_roofline=True,
    parts=None,
    noise_limits=None,
    repeat=1,
):
    if warmup_steps >= steps:
        raise StageError(f"warmup_steps ({warmup_steps}) must be less than number_of_steps ({steps})")
    if batch_size > 1 and image_size is None:
        raise StageError("batch_size > 1 needs an image size, so that a batch is well formed")
    engine = open_engine(graph_path, applied, interface)
    # Several instances on one node: each reads its own share of the images.
    images = list_images(image_dir)[instance::instances]
    if not images:
        raise StageError(f"instance {instance} of {instances}: no image of {image_dir} left for it")
    resize_to = image_size if batch_size > 1 else None
    prefetcher = BatchPrefetcher(images, batch_size, resize_to, steps, on_bad_image=on_bad_image)
    ready = prefetcher.wait_until_full()
    log.info("%d of %d batches decoded before timing starts", ready, steps)
    batches = iter(prefetcher)
    if barrier is not None:
        wait_for_instances(barrier, instance, instances)
    ends = []
    started = time.time()
    before = Activity()
    with captured_stdout() as verbose:
        seconds = time_steps(engine, batches, steps, ends)
    onednn = dispatch_facts(verbose[0])
    if onednn:
        log.info("oneDNN %s dispatched for %s: %s", onednn["version"], onednn["isa"], ", ".join(onednn["kernel_isas"]))
    machine = machine_state(before, Activity(), seconds, warmup_steps, noise_limits)
    if machine["noisy"]:
        log.warning("noisy run: %s", "; ".join(machine["noisy"]))
    summary = summarize(seconds, warmup_steps, batch_size)
    # Traced and counted after the timed steps, never during them.
    batch = next(prefetcher.images.batches(batch_size))
    node_times = engine.node_times(batch, max(profile_steps, 1))
    kernels = kernels_in(node_times)
    bfloat16 = bfloat16_share(node_times)
    if applied["precision"] == "bf16":
        log.info(
            "bfloat16: %d nodes (%.0f%% of op time) and %d casts (%.0f%%); kernels: %s",
            bfloat16["nodes"],
            100 * bfloat16["op_time_fraction"],
            bfloat16["casts"],
            100 * bfloat16["cast_time_fraction"],
            ", ".join(bfloat16["kernels"]) or "none",
        )
    flops = probe = achieved = None
    # FLOPs are counted by TensorFlow's profiler: an OpenVINO job has no roofline of its own.
    if with_roofline and engine.name == "tensorflow":
        flops = count_flops(engine.session, interface.feed(batch), parts or {})
        probe = probe_rates(applied["intra_op_threads"] or usable_cores())
        achieved = roofline(flops, batch_size, summary["throughput_images_per_second"], probe, applied["precision"])
        share = achieved["fraction_of_probe"]
        log.info(
            "%.1f GFLOPs per image, %.1f GFLOP/s achieved: %s of a %s matmul's %.1f on these threads (%s)",
            achieved["gflops_per_image"],
            achieved["achieved_gflops_per_second"],
            "no share (no probe of its own precision)" if share is None else f"{100 * share:.0f}%",
            achieved["probe_precision"],
            achieved["probe_gflops_per_second"],
            ", ".join(probe["cpu_flags"]) or "no flags",
        )
    log.info(
        "Avg. Duration per Step:%s (Intel's average: all steps, the first included)",
        summary["intel_avg_duration_per_step_seconds"],
    )
    log.info(
        "after %d warm-up steps: latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms; %.2f images/s",
        warmup_steps,
        summary["latency_ms"]["p50"],
        summary["latency_ms"]["p90"],
        summary["latency_ms"]["p99"],
        summary["throughput_images_per_second"],
    )
    log.info("Ran inference with batch size %d", batch_size)
    result = {
        "mode": "online" if batch_size == 1 else "batch",
        "batch_size": batch_size,
        "image_size": list(resize_to) if resize_to else None,
        "images_resized": resize_to is not None,
        "number_of_steps": steps,
        "warmup_steps": warmup_steps,
        "distinct_images": len(images),
        # Unreadable images left out (benchmark.on_bad_image: skip), by file name.
        "skipped_images": prefetcher.images.skipped,
        **summary,
        "executed_kernels": kernels,
        # What ran in bfloat16, from the traced steps: the BF16 rewrite's reach.
        "bfloat16": bfloat16,
        "profile": profile(node_times, max(profile_steps, 1), parts or {}) if profile_steps else None,
        "flops": flops,
        "roofline": achieved,
        "probe": probe,
        **environment_facts(graph_path, applied),
        **engine.facts(),
        # What else the machine did while the steps were timed, and whether that makes it noisy.
        "machine": machine,
        # What oneDNN ran: its version, the ISA it dispatched for, each primitive's implementation.
        "onednn_dispatch": onednn,
        "instance": instance,
        "instances": instances,
        # Which round of benchmark.repeats, and when it ran: rounds interleave across models.
        "repeat": repeat,
        "started_unix": started,
        "step_seconds": seconds,
        # Machine-wide monotonic clock: instances running together compare their steps.
        "step_end_monotonic": ends,
    }
    with atomic_file(output) as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse_image_size(text):
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}") from None
    return height, width


def add_benchmark_arguments(parser):
    """The benchmark's settings; not given, the schema's defaults (config/schema.yaml, benchmark)."""
    defaults = schema_defaults("benchmark")
    parser.add_argument("--number-of-steps", type=int, default=defaults["number_of_steps"])
    parser.add_argument("--warmup-steps", type=int, default=defaults["warmup_steps"])
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    parser.add_argument("--image-size", type=parse_image_size, help="HEIGHTxWIDTH, for batch > 1")
    parser.add_argument(
        "--on-bad-image", choices=("stop", "skip"), default=defaults["on_bad_image"], help="an unreadable image"
    )
    parser.add_argument(
        "--profile-steps", type=int, default=defaults["profile_steps"], help="traced steps after timing; 0: no profile"
    )
    noise = defaults["noise"]
    parser.add_argument("--max-steal", type=float, default=noise["max_steal"], help="noisy above this steal share")
    parser.add_argument(
        "--max-other-cpu", type=float, default=noise["max_other_cpu"], help="noisy above this share of other processes"
    )
    parser.add_argument("--max-step-cv", type=float, default=noise["max_step_cv"], help="noisy above this step CV")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="frozen_inference_graph.pb, or model.xml (openvino)")
    parser.add_argument("--image-dir", type=Path, required=True, help="folder of val2017 JPEGs")
    parser.add_argument("--output", type=Path, required=True, help="results JSON")
    add_benchmark_arguments(parser)
    parser.add_argument(
        "--roofline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count FLOPs and probe the threads' matmul rate after timing",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="which round of benchmark.repeats this is (recorded in the JSON)"
    )
    group = parser.add_argument_group("one of several instances on a node (benchmark_instances.py starts them)")
    group.add_argument("--instance", type=int, default=0, help="this instance's index: it reads images[K::N]")
    group.add_argument("--instances", type=int, default=1, help="N, the instances sharing the node")
    group.add_argument("--start-barrier", type=Path, help="folder where the instances wait for each other")
    add_interface_arguments(parser)
    add_parts_argument(parser)
    add_runtime_arguments(parser)
    args = parser.parse_args()
    if args.batch_size < 1 or args.number_of_steps < 1 or args.warmup_steps < 0:
        raise StageError("batch size and steps must be positive, warm-up steps not negative")
    if not 0 <= args.instance < args.instances:
        raise StageError(f"--instance {args.instance} is not in 0..{args.instances - 1}")
    enable_verbose()
    applied = apply_runtime(runtime_settings(args))
    benchmark(
        args.graph,
        interface_of(args),
        args.image_dir,
        args.number_of_steps,
        args.warmup_steps,
        args.batch_size,
        args.image_size,
        applied,
        args.output,
        args.on_bad_image,
        args.profile_steps,
        args.instance,
        args.instances,
        args.start_barrier,
        args.roofline,
        args.parts,
        {"max_steal": args.max_steal, "max_other_cpu": args.max_other_cpu, "max_step_cv": args.max_step_cv},
        args.repeat,
    )


if __name__ == "__main__":
    run_main(main)
