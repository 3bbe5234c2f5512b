#!/usr/bin/env python3
"""Run a frozen detection graph under MLPerf LoadGen: one scenario, or its accuracy mode.

The system under test is benchmark_graph's: the same session, interface, runtime settings
and decoded val2017 JPEGs (an untimed preprocessing applied when LoadGen loads a sample),
one sample per `session.run`. LoadGen's own files (mlperf_log_summary.txt,
mlperf_log_detail.txt) are kept in `--log-dir`; the JSON's figures are read from them.

Server: the highest target QPS whose run is VALID (its latency percentile within the bound)
is found by bisection, each run's logs in its own folder. `--accuracy` runs LoadGen's
AccuracyOnly mode over the accuracy stage's TFRecord images instead, and scores
mlperf_log_accuracy.json with the scorer evaluate_detections uses.
"""

import argparse
import json
import logging
import statistics
from pathlib import Path

import numpy as np

from detbench.coco_data import detection_columns, quiet_coco, selected_records, standard_metrics, to_coco_results
from detbench.common import StageError, atomic_directory, atomic_file, run_main
from detbench.config_schema import schema_defaults
from detbench.detection_graph import (
    add_interface_arguments,
    decode_image,
    interface_of,
)
from detbench.engines import open_engine
from detbench.job_runtime import add_runtime_arguments, apply_runtime, environment_facts, runtime_settings
from detbench.loadgen_driver import (
    DETECTION_FIELDS,
    SCENARIOS,
    SPEED_MARGIN,
    GraphRunner,
    SampleLibrary,
    loadgen_settings,
    performance_library,
    run_test,
    scenario_figures,
    search_server_qps,
)
from detbench.machine import Activity, machine_state

log = logging.getLogger("run_loadgen")


def run_scenario(runner, library, scenario, knobs, log_dir, noise_limits):
    """One scenario's figures; for Server, the search's too. Logs under `log_dir`."""
    first = library.load(0)
    warm = runner.warm_up(first, max(knobs["warmup_queries"], 1))
    service_ms = 1000 * statistics.median(warm[1:] or warm)
    log.info("warm-up: %d runs, median %.2f ms after the first", len(warm), service_ms)
    before = Activity()
    if scenario == "Server":
        figures, service = search_server(runner, library, knobs, log_dir, service_ms)
    else:
        settings = loadgen_settings(scenario, knobs, measured_latency_ms=service_ms)
        detail, service = run_test(library, runner, settings, log_dir)
        figures = scenario_figures(scenario, detail, knobs)
        if fell_short_of_min_duration(figures, knobs):
            # Sized from a warm-up slower than the run itself: too few queries generated (or too
            # small an Offline query). LoadGen's advice: an expectation from what the run measured.
            log.info("%s ended before min duration: again, expecting the run's own speed", scenario)
            expect_measured_speed(settings, scenario, figures)
            detail, service = run_test(library, runner, settings, log_dir)
            figures = scenario_figures(scenario, detail, knobs)
            figures["rerun"] = "the first run, sized from the warm-up, ended before min duration"
    figures["machine"] = machine_state(before, Activity(), service, 0, noise_limits)
    figures["service_ms"] = {
        "p50": float(np.percentile(service, 50)) * 1000 if service else None,
        "p90": float(np.percentile(service, 90)) * 1000 if service else None,
        "samples": len(service),
    }
    figures["warmup_ms"] = [1000 * value for value in warm]
    log.info(
        "%s: %s %s %.2f %s (%s)",
        scenario,
        figures["validity"],
        figures["metric"]["name"],
        figures["metric"]["value"] or 0,
        figures["metric"]["unit"],
        "; ".join(figures["invalid_because"]) or "every constraint met",
    )
    return figures


def fell_short_of_min_duration(figures, knobs):
    """Whether a run sized from the warm-up (not from the config) fell short of min duration (and
    so, with few queries, perhaps of early stopping's count too)."""
    measured = knobs["offline_expected_qps"] is None and knobs["expected_latency_ms"] is None
    return measured and "min duration not reached" in figures["invalid_because"]


def expect_measured_speed(settings, scenario, figures):
    """LoadGen's settings expecting what a run measured, with room for a faster rerun: LoadGen
    generates queries (one for Offline) from the expectation and the run must last min duration."""
    measured = figures["metric"]["value"]
    if scenario == "Offline":
        settings.offline_expected_qps = SPEED_MARGIN * measured
    elif scenario == "SingleStream":
        settings.single_stream_expected_latency_ns = int(measured * 1e6 / SPEED_MARGIN)
    elif scenario == "MultiStream":
        settings.multi_stream_expected_latency_ns = int(measured * 1e6 / SPEED_MARGIN)


def search_server(runner, library, knobs, log_dir, service_ms):
    """Bisection for the highest VALID target QPS: from half the worker's capacity (one sample
    every `service_ms`) up to that capacity, or from `server.start_qps` if set."""
    server = knobs["server"]
    capacity = 1000.0 / service_ms
    high = server["start_qps"] * 2 if server["start_qps"] else capacity
    services = []

    def run_at(qps):
        detail, service = run_test(
            library,
            runner,
            loadgen_settings("Server", knobs, target_qps=qps, measured_latency_ms=service_ms),
            Path(log_dir) / f"qps-{qps:.3f}",
        )
        services.extend(service)
        figures = scenario_figures("Server", detail, knobs)
        log.info(
            "Server at %.3f QPS: %s, p%g %.2f ms (bound %.1f ms)",
            qps,
            figures["validity"],
            server["percentile"],
            figures["bound_latency_ms"],
            server["latency_bound_ms"],
        )
        return figures

    best, tried = search_server_qps(run_at, high / 2, high, server["search_runs"], server["search_precision"])
    if best is None:
        raise StageError(
            f"Server: no VALID run in {len(tried)} tries down to {tried[-1][0]:.3f} QPS (bound "
            f"{server['latency_bound_ms']} ms at p{server['percentile']:g}): raise loadgen.server.latency_bound_ms "
            "or loadgen.server.search_runs"
        )
    best["search"] = {
        "runs": [{"target_qps": qps, "validity": validity} for qps, validity in tried],
        "capacity_qps": capacity,
        "best_log_dir": f"qps-{best['metric']['value']:.3f}",
    }
    return best, services


def accuracy_samples(runner, record_dir, max_images):
    """The accuracy stage's images: (image ids, sizes, a loader of each) from the TFRecord."""
    records = [features for _, features in selected_records(record_dir, max_images)]
    if not records:
        raise StageError(f"{record_dir}: no records to run")
    ids = [int(features["image/source_id"][0]) for features in records]

    def load(index):
        return runner.prepare(decode_image(records[index]["image/encoded"][0], f"image {ids[index]}"))

    sizes = [(int(f["image/height"][0]), int(f["image/width"][0])) for f in records]
    return ids, sizes, load


def accuracy_detections(accuracy_log, image_ids, sizes):
    """LoadGen's accuracy log back to COCO results: each response's float32 rows per image."""
    try:
        entries = json.loads(Path(accuracy_log).read_text())
    except (OSError, ValueError) as error:
        raise StageError(f"{accuracy_log}: not LoadGen's accuracy log ({error})") from None
    detections, seen = [], set()
    for entry in entries:
        index = entry["qsl_idx"]
        seen.add(index)
        rows = np.frombuffer(bytes.fromhex(entry["data"]), np.float32).reshape(-1, DETECTION_FIELDS)
        # The rows as the graph's outputs for one image, converted as detect_objects converts them.
        outputs = {
            "num_detections": [len(rows)],
            "detection_boxes": [rows[:, :4]],
            "detection_scores": [rows[:, 4]],
            "detection_classes": [rows[:, 5]],
        }
        detections += to_coco_results(image_ids[index], *sizes[index], outputs)
    if len(seen) != len(image_ids):
        raise StageError(f"{accuracy_log}: {len(image_ids) - len(seen)} of {len(image_ids)} images have no response")
    return detections


def run_accuracy(runner, record_dir, annotations, max_images, knobs, log_dir):
    ids, sizes, load = accuracy_samples(runner, record_dir, max_images)
    library = SampleLibrary(len(ids), load, len(ids))
    settings = loadgen_settings("Offline", knobs, accuracy=True)
    detail, _ = run_test(library, runner, settings, log_dir, accuracy=True)
    detections = accuracy_detections(Path(log_dir) / "mlperf_log_accuracy.json", ids, sizes)
    standard, table = standard_metrics(quiet_coco(annotation_file=annotations), detection_columns(detections), ids)
    log.info("COCO metrics of LoadGen's accuracy log, %d images:\n%s", len(ids), table)
    return {
        "mode": "AccuracyOnly",
        "images": len(ids),
        "detections": len(detections),
        "standard": standard,
        "loadgen_version": detail.get("loadgen_version"),
    }


def loadgen_stage(args, knobs):
    applied = apply_runtime(runtime_settings(args))
    engine = open_engine(args.graph, applied, interface_of(args))
    runner = GraphRunner(engine)
    noise = schema_defaults("benchmark")["noise"] if args.noise is None else json.loads(args.noise)
    with atomic_directory(args.log_dir) as log_dir:
        if args.accuracy:
            if not (args.records and args.annotations):
                raise StageError("--accuracy needs --records and --annotations")
            result = run_accuracy(runner, args.records, args.annotations, args.max_images, knobs, log_dir)
        else:
            if not args.image_dir or args.scenario not in SCENARIOS:
                raise StageError(f"--scenario one of {', '.join(SCENARIOS)} and --image-dir are needed")
            library = performance_library(runner, args.image_dir, knobs)
            result = run_scenario(runner, library, args.scenario, knobs, log_dir, noise)
        result.update(
            settings=knobs, log_dir=str(args.log_dir), **environment_facts(args.graph, applied), **engine.facts()
        )
        with atomic_file(args.output) as temporary:
            temporary.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="frozen_inference_graph.pb, or model.xml (openvino)")
    parser.add_argument("--output", type=Path, required=True, help="results JSON")
    parser.add_argument("--log-dir", type=Path, required=True, help="folder for LoadGen's mlperf_log_* files")
    parser.add_argument("--scenario", choices=SCENARIOS, help="the performance scenario to run")
    parser.add_argument("--image-dir", type=Path, help="folder of val2017 JPEGs (performance)")
    parser.add_argument(
        "--settings",
        type=json.loads,
        default={},
        help="the config's loadgen block as JSON; keys left out take config/schema.yaml's defaults",
    )
    parser.add_argument("--noise", help="the config's benchmark.noise block as JSON (noisy-run limits)")
    group = parser.add_argument_group("accuracy mode (LoadGen AccuracyOnly over the TFRecord)")
    group.add_argument("--accuracy", action="store_true", help="run the accuracy mode and score its log")
    group.add_argument("--records", type=Path, help="folder of coco_val.record*")
    group.add_argument("--annotations", type=Path, help="instances_val2017.json")
    group.add_argument("--max-images", type=int, default=0, help="the first N records (0: all)")
    add_interface_arguments(parser)
    add_runtime_arguments(parser)
    args = parser.parse_args()
    knobs = settings_with_defaults(args.settings)
    loadgen_stage(args, knobs)


def settings_with_defaults(given):
    """The loadgen block completed with the schema's defaults, key by key (server's too)."""
    defaults = schema_defaults("loadgen")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise StageError(f"--settings: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(defaults))}")
    knobs = {**defaults, **given}
    for nested in ("server", "min_query_count"):
        knobs[nested] = {**defaults[nested], **given.get(nested, {})}
    return knobs


if __name__ == "__main__":
    run_main(main)
