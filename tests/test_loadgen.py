"""MLPerf LoadGen as a driver: every scenario on the demo, figures read from LoadGen's own logs,
the Server search against a queue whose answer is known, and the accuracy mode scored as the
accuracy stage scores."""

import json
import re
import time

import numpy as np
import pytest
from helpers import DEMO_LOADGEN_MODELS, error_lines, read_json, run_script

from detbench.common import StageError
from detbench.config_schema import schema_defaults
from detbench.loadgen_driver import (
    SampleLibrary,
    invalid_because,
    loadgen_settings,
    read_detail_log,
    run_test,
    scenario_figures,
    search_server_qps,
)
from detbench.report.sections import metric_value
from tools.demo.demo_config import DEMO_LOADGEN

# The knobs of the script runs below: the demo's, MultiStream and Server with them.
SCRIPT_SETTINGS = {key: DEMO_LOADGEN[key] for key in ("min_duration_ms", "min_query_count", "warmup_queries")}
SCRIPT_SETTINGS.update(multi_stream_percentile=90, server={"percentile": 90, "search_runs": 5, "latency_bound_ms": 30})


def summary_value(path, label):
    """A figure of LoadGen's mlperf_log_summary.txt, by its label."""
    match = re.search(rf"^{re.escape(label)}\s*: (\S+)", path.read_text(), re.MULTILINE)
    assert match, f"{label!r} not in {path}"
    return match.group(1)


@pytest.mark.parametrize("model", DEMO_LOADGEN_MODELS)
def test_single_stream_and_offline_ran_for_every_demo_model(finished_run, model):
    """The workflow ran both configured scenarios; the JSON's figures are LoadGen's, as its
    summary prints them, and its logs are kept."""
    single = read_json(finished_run, f"results/loadgen/{model}/SingleStream.json")
    logs = finished_run.workdir / f"results/loadgen/{model}/SingleStream"
    summary = logs / "mlperf_log_summary.txt"
    assert (logs / "mlperf_log_detail.txt").is_file()
    assert (single["validity"], single["invalid_because"]) == ("VALID", [])
    assert single["metric"]["value"] == int(summary_value(summary, "90.0th percentile latency (ns)")) / 1e6
    assert single["query_count"] >= DEMO_LOADGEN["min_query_count"]["SingleStream"]
    assert single["loadgen_version"].startswith("6.0.17")
    assert single["service_ms"]["samples"] >= single["query_count"]
    assert single["precision"] == read_json(finished_run, f"results/benchmark/{model}.json")["precision"]
    offline = read_json(finished_run, f"results/loadgen/{model}/Offline.json")
    offline_summary = finished_run.workdir / f"results/loadgen/{model}/Offline/mlperf_log_summary.txt"
    assert (offline["validity"], offline["invalid_because"]) == ("VALID", [])
    assert offline["metric"]["value"] == pytest.approx(float(summary_value(offline_summary, "Samples per second")))


def test_the_report_shows_the_scenarios(finished_run):
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    assert "## MLPerf LoadGen scenarios" in summary
    rows = [line for line in summary.splitlines() if "| SingleStream |" in line or "| Offline |" in line]
    assert len(rows) == 2 * len(DEMO_LOADGEN_MODELS) and all("VALID" in row for row in rows)
    assert "results/loadgen/fp32/SingleStream/mlperf_log_summary.txt" in summary


def loadgen_script(workdir, output, *arguments, settings=SCRIPT_SETTINGS, model="fp32"):
    return run_script(
        "run_loadgen.py",
        "--graph",
        workdir / f"resources/models/{model}/frozen_inference_graph.pb",
        "--output",
        output,
        "--log-dir",
        output.with_suffix(""),
        "--settings",
        json.dumps(settings),
        *arguments,
        onednn=True,
    )


def test_multi_stream_and_server_on_the_demo(finished_run, tmp_path):
    images = finished_run.workdir / "resources/coco/val2017"
    multi = tmp_path / "MultiStream.json"
    ran = loadgen_script(finished_run.workdir, multi, "--scenario", "MultiStream", "--image-dir", images)
    assert ran.returncode == 0, ran.stderr[-2000:]
    figures = json.loads(multi.read_text())
    assert figures["validity"] == "VALID" and figures["samples_per_query"] == 8
    assert figures["metric"]["name"] == "p90 latency of a query"
    # A query is 8 samples run one after another.
    assert figures["metric"]["value"] > 4 * figures["service_ms"]["p50"]
    server = tmp_path / "Server.json"
    ran = loadgen_script(finished_run.workdir, server, "--scenario", "Server", "--image-dir", images)
    assert ran.returncode == 0, ran.stderr[-2000:]
    figures = json.loads(server.read_text())
    runs = figures["search"]["runs"]
    assert figures["validity"] == "VALID" and 2 <= len(runs) <= 5
    best = max(run["target_qps"] for run in runs if run["validity"] == "VALID")
    assert figures["metric"]["value"] == pytest.approx(best, abs=1e-3)  # LoadGen logs 3 decimals
    assert figures["bound_latency_ms"] <= 30
    for run in runs:  # every run's logs are kept, the reported one's among them
        assert (tmp_path / "Server" / f"qps-{run['target_qps']:.3f}" / "mlperf_log_detail.txt").is_file()


def test_accuracy_mode_gives_the_accuracy_stage_numbers(finished_run, tmp_path):
    """LoadGen's accuracy log, scored by our scorer, gives evaluate_accuracy's 12 numbers on the
    same images."""
    output = tmp_path / "accuracy.json"
    workdir = finished_run.workdir
    ran = loadgen_script(
        workdir,
        output,
        "--accuracy",
        "--records",
        workdir / "resources/coco_tfrecord",
        "--annotations",
        workdir / "resources/coco/annotations/instances_val2017.json",
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    loadgen = json.loads(output.read_text())
    accuracy = read_json(finished_run, "results/accuracy/fp32.json")
    assert loadgen["images"] == accuracy["images"] and loadgen["detections"] == accuracy["detections"]
    assert len(loadgen["standard"]) == 12
    for metric, value in accuracy["standard"].items():
        assert loadgen["standard"][metric] == pytest.approx(value, abs=1e-6), metric
    assert (tmp_path / "accuracy" / "mlperf_log_accuracy.json").stat().st_size > 0


def test_a_bad_setting_is_one_line_and_writes_nothing(finished_run, tmp_path):
    output = tmp_path / "SingleStream.json"
    images = finished_run.workdir / "resources/coco/val2017"
    ran = loadgen_script(
        finished_run.workdir, output, "--scenario", "SingleStream", "--image-dir", images, settings={"min_durration": 1}
    )
    assert ran.returncode == 1
    assert error_lines(ran) == [
        "error: --settings: unknown key 'min_durration'; the keys are accuracy, expected_latency_ms, "
        "max_duration_ms, min_duration_ms, min_query_count, models, multi_stream_percentile, "
        "multi_stream_samples_per_query, offline_expected_qps, sample_count, scenarios, server, "
        "single_stream_percentile, warmup_queries"
    ]
    assert not output.exists() and not output.with_suffix("").exists()


def test_a_detail_log_that_did_not_finish_is_named(tmp_path):
    path = tmp_path / "mlperf_log_detail.txt"
    path.write_text(':::MLLOG {"key": "loadgen_version", "value": "6.0.17"}\n')
    with pytest.raises(StageError, match="no LoadGen result in it"):
        read_detail_log(path)
    with pytest.raises(StageError, match="LoadGen wrote no detail log"):
        read_detail_log(tmp_path / "missing.txt")


def test_the_search_bisects_to_the_threshold_within_its_runs():
    valid_below = 37.0
    calls = []

    def run_at(qps):
        calls.append(qps)
        return {"validity": "VALID" if qps <= valid_below else "INVALID", "metric": {"value": qps}}

    best, tried = search_server_qps(run_at, 50.0, 100.0, runs=12, precision=0.01)
    assert best["metric"]["value"] <= valid_below and best["metric"]["value"] > 0.98 * valid_below
    assert tried[0] == (50.0, "INVALID") and tried[1] == (25.0, "VALID") and len(tried) <= 12
    best, tried = search_server_qps(run_at, 50.0, 100.0, runs=2)
    assert best["metric"]["value"] == 25.0 and len(tried) == 2
    best, tried = search_server_qps(lambda qps: {"validity": "INVALID"}, 50.0, 100.0, runs=3)
    assert best is None and [qps for qps, _ in tried] == [50.0, 25.0, 12.5]


def queue_percentile(rate, service, percentile, arrivals=100_000, seed=0):
    """The latency percentile of one server with a fixed service time under Poisson arrivals
    (M/D/1), from Lindley's recursion over simulated arrivals."""
    gaps = np.random.default_rng(seed).exponential(1 / rate, arrivals)
    latency, wait = np.empty(arrivals), 0.0
    for index, gap in enumerate(gaps):
        wait = max(0.0, wait + service - gap) if index else 0.0
        latency[index] = wait + service
    return np.percentile(latency, percentile)


def known_highest_rate(service, bound, percentile):
    """The highest Poisson rate whose latency percentile is within the bound, by bisection."""
    low, high = 0.1 / service, 1 / service
    for _ in range(20):
        middle = (low + high) / 2
        low, high = (middle, high) if queue_percentile(middle, service, percentile) <= bound else (low, middle)
    return low


def test_the_server_search_finds_a_fixed_service_times_known_rate(tmp_path):
    """A system under test whose every sample takes 2 ms (a sleep, which lets LoadGen's threads
    run), at p90 within 5 ms: the M/D/1 queue of the service time measured gives the highest
    rate. The search lands at it, below by at most early stopping's margin (a VALID run must
    also show, from its few hundred queries, that the percentile is within the bound), and the
    p90 LoadGen measured at the rate found is the queue's."""
    service, bound, percentile = 0.002, 0.005, 90
    knobs = {
        "min_duration_ms": 3000,
        "max_duration_ms": 0,
        "min_query_count": {"Server": 64},
        "expected_latency_ms": 2,
        "server": {"latency_bound_ms": bound * 1000, "percentile": percentile},
    }
    library = SampleLibrary(8, lambda index: index, 8)
    services = []

    def run_at(qps):
        settings = loadgen_settings("Server", knobs, target_qps=qps)
        detail, seconds = run_test(library, lambda _sample: time.sleep(service), settings, tmp_path / f"qps-{qps:.3f}")
        services.extend(seconds)
        return scenario_figures("Server", detail, knobs)

    best, tried = search_server_qps(run_at, 0.5 / service, 1 / service, runs=6, precision=0.03)
    measured = float(np.median(services))
    assert service <= measured < 1.1 * service
    known = known_highest_rate(measured, bound, percentile)
    assert best is not None, tried
    found = best["metric"]["value"]
    assert 0.8 * known <= found <= 1.03 * known, (known, measured, tried)
    expected_p90 = queue_percentile(found, measured, percentile)
    assert best["bound_latency_ms"] == pytest.approx(1000 * expected_p90, rel=0.15)
    assert best["bound_latency_ms"] <= bound * 1000


class SlowWarmUpRunner:
    """A system under test whose warm-up is slower than its run: LoadGen, sized from the
    warm-up, generates too few queries to last min duration."""

    def __init__(self, warm_seconds, run_seconds):
        self.warm_seconds, self.run_seconds = warm_seconds, run_seconds

    def warm_up(self, _feed, runs):
        return [self.warm_seconds] * runs

    def __call__(self, _feed):
        time.sleep(self.run_seconds)


def test_a_run_sized_from_a_slow_warm_up_runs_again_at_its_own_speed(tmp_path):
    """Sized from a 20 ms warm-up, LoadGen generates 2 x 300 ms / 20 ms = 30 queries; at 1 ms
    each they end long before min duration. The stage reruns expecting the speed measured, as
    LoadGen's summary advises, and the run kept is VALID."""
    from run_loadgen import run_scenario

    knobs = {**schema_defaults("loadgen"), "min_duration_ms": 300, "min_query_count": {"SingleStream": 8}}
    library = SampleLibrary(8, lambda index: index, 8)
    figures = run_scenario(
        SlowWarmUpRunner(0.02, 0.001), library, "SingleStream", knobs, tmp_path, schema_defaults("benchmark")["noise"]
    )
    assert (figures["validity"], figures["invalid_because"]) == ("VALID", [])
    assert figures["query_count"] > 30 and figures["metric"]["value"] < 5
    assert figures["rerun"].endswith("ended before min duration")


def test_an_invalid_run_says_why_in_one_sentence():
    detail = {
        "result_min_duration_met": True,
        "result_min_queries_met": False,
        "early_stopping_met": False,
        "early_stopping_result": " * Only processed 6 queries.  * Need to process at least 64 queries.",
    }
    assert invalid_because(detail) == [
        "min query count not reached",
        "early stopping not satisfied: Only processed 6 queries; Need to process at least 64 queries",
    ]
    assert invalid_because({"result_perf_constraints_met": False}) == ["latency bound exceeded"]
    assert metric_value({"value": 1488.974, "unit": "ms"}) == "1488.97"
    assert metric_value({"value": 0.7771, "unit": "samples/s"}) == "0.777"
