"""MLPerf LoadGen as a driver of the benchmark's session: its settings from the config, the
system under test, LoadGen's own logs read back, and the Server scenario's search for the
highest valid target QPS.

The system under test runs what benchmark_graph times: the same session, interface, runtime
settings and decoded images, one sample per `session.run` on one worker thread (the session's
intra-op threads use the cores). Every figure is read from LoadGen's detail log, never
recomputed here.
"""

import array
import json
import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from detbench.common import StageError
from detbench.detection_graph import list_images
from detbench.timing import load_image

log = logging.getLogger("run_loadgen")

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
MLLOG = ":::MLLOG "
# A detection in an accuracy-mode response: [ymin, xmin, ymax, xmax] normalized, score, class.
DETECTION_FIELDS = 6
# Runs sized from a measured speed expect this much more of it (Offline: a faster run still
# fills min duration; a rerun of the latency scenarios: generated queries suffice).
SPEED_MARGIN = 1.5


# The knobs every scenario uses, and each scenario's own ("accuracy": the accuracy mode).
COMMON_KNOBS = ("min_duration_ms", "max_duration_ms", "sample_count", "warmup_queries", "expected_latency_ms")
SCENARIO_KNOBS = {
    "SingleStream": ("single_stream_percentile",),
    "MultiStream": ("multi_stream_samples_per_query", "multi_stream_percentile"),
    "Server": ("server",),
    "Offline": ("offline_expected_qps",),
    "accuracy": (),
}


def scenario_knobs(loadgen_config, scenario):
    """The config's loadgen knobs one scenario's run depends on."""
    knobs = {key: loadgen_config[key] for key in COMMON_KNOBS + SCENARIO_KNOBS[scenario]}
    if scenario in SCENARIOS:
        knobs["min_query_count"] = {scenario: loadgen_config["min_query_count"][scenario]}
    return knobs


def loadgen():
    import mlperf_loadgen

    return mlperf_loadgen


def loadgen_settings(scenario, knobs, accuracy=False, target_qps=None, measured_latency_ms=None):
    """LoadGen's TestSettings for one scenario from the config's `loadgen` knobs (MLPerf's
    defaults in config/schema.yaml); `target_qps`: the Server scenario's arrival rate;
    `measured_latency_ms`: the warm-up's service time, for the knobs left null."""
    lg = loadgen()
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(knobs["min_duration_ms"])
    settings.min_query_count = int(knobs["min_query_count"][scenario])
    if knobs.get("max_duration_ms"):
        settings.max_duration_ms = int(knobs["max_duration_ms"])
    expected_ms = knobs["expected_latency_ms"] or measured_latency_ms or 100.0
    expected_ns = int(expected_ms * 1e6)
    settings.single_stream_expected_latency_ns = expected_ns
    if scenario == "SingleStream":
        settings.single_stream_target_latency_percentile = knobs["single_stream_percentile"] / 100
    elif scenario == "MultiStream":
        settings.multi_stream_samples_per_query = int(knobs["multi_stream_samples_per_query"])
        settings.multi_stream_expected_latency_ns = expected_ns * int(knobs["multi_stream_samples_per_query"])
        settings.multi_stream_target_latency_percentile = knobs["multi_stream_percentile"] / 100
    elif scenario == "Server":
        settings.server_target_latency_ns = int(knobs["server"]["latency_bound_ms"] * 1e6)
        settings.server_target_latency_percentile = knobs["server"]["percentile"] / 100
        settings.server_target_qps = float(target_qps or knobs["server"]["start_qps"] or 1.0)
    else:
        # Offline: one query of expected QPS x min duration samples (LoadGen's own sizing); from a
        # measured service time, with room for a faster run so that it still lasts min duration.
        margin = 1.0 if knobs["expected_latency_ms"] else SPEED_MARGIN
        settings.offline_expected_qps = float(knobs["offline_expected_qps"] or margin * 1000.0 / expected_ms)
    return settings


class SampleLibrary:
    """LoadGen's query sample library: samples decoded into memory when LoadGen loads them,
    as benchmark_graph decodes its images before timing. `load(index)` gives the feedable
    array of one sample (its preprocessing, if untimed, already applied)."""

    def __init__(self, count, load, performance_count):
        self.count = count
        self.load = load
        self.performance_count = min(performance_count, count)
        self.loaded = {}

    def load_samples(self, indices):
        for index in indices:
            if index not in self.loaded:
                self.loaded[index] = self.load(index)

    def unload_samples(self, indices):
        for index in indices:
            self.loaded.pop(index, None)

    def construct(self):
        return loadgen().ConstructQSL(self.count, self.performance_count, self.load_samples, self.unload_samples)


class DetectionSUT:
    """LoadGen's system under test: each sample runs through `run_sample` and is completed. In
    SingleStream and MultiStream (`inline`), where LoadGen waits for a query before issuing the
    next, a query runs on LoadGen's issuing thread, as MLPerf's reference harness runs it: no
    hand-over to another thread in the latency. Otherwise queries queue for one worker thread,
    so that Server's arrivals are never held up. In accuracy mode each response carries the
    sample's detections as float32 rows (DETECTION_FIELDS), which LoadGen writes to its log."""

    def __init__(self, library, run_sample, accuracy=False, inline=False):
        self.library = library
        self.run_sample = run_sample
        self.accuracy = accuracy
        self.inline = inline
        self.queries = queue.Queue()
        self.error = None
        # Each sample's `run_sample` time: the session alone, without LoadGen's part.
        self.service_seconds = []
        self.worker = None if inline else threading.Thread(target=self.serve, daemon=True)
        if self.worker is not None:
            self.worker.start()

    def issue_queries(self, samples):
        if self.inline:
            self.complete(samples)
        else:
            self.queries.put(list(samples))

    def flush_queries(self):
        pass

    def serve(self):
        while (samples := self.queries.get()) is not None:
            self.complete(samples)

    def complete(self, samples):
        lg = loadgen()
        for sample in samples:
            payload = b""
            try:
                start = time.perf_counter()
                outputs = self.run_sample(self.library.loaded[sample.index])
                self.service_seconds.append(time.perf_counter() - start)
                if self.accuracy:
                    payload = detection_rows(outputs).tobytes()
            except Exception as error:  # LoadGen must still see every sample complete
                if self.error is None:
                    self.error = error
            buffer = array.array("B", payload)
            address, length = buffer.buffer_info()
            lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, address, length)])

    def construct(self):
        return loadgen().ConstructSUT(self.issue_queries, self.flush_queries)

    def stop(self):
        if self.worker is not None:
            self.queries.put(None)
            self.worker.join()


class GraphRunner:
    """A model on its engine (engines.py), fed as benchmark_graph feeds it."""

    def __init__(self, engine):
        self.engine = engine

    def prepare(self, image):
        """What one sample is fed: the image, or its untimed preprocessing's output."""
        return self.engine.timed_input(image[None])

    def __call__(self, feed):
        return self.engine.run(feed)

    def warm_up(self, feed, runs):
        """Seconds of each warm-up run (graph set-up first): LoadGen times from its first query."""
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            self(feed)
            seconds.append(time.perf_counter() - start)
        return seconds


def performance_library(runner, image_dir, knobs):
    paths = list_images(image_dir)
    return SampleLibrary(
        len(paths), lambda index: runner.prepare(load_image(paths[index], None)), knobs["sample_count"]
    )


def detection_rows(outputs):
    """One image's valid detections as float32 rows [ymin, xmin, ymax, xmax, score, class]."""
    count = int(outputs["num_detections"][0])
    rows = np.column_stack(
        [
            outputs["detection_boxes"][0][:count],
            outputs["detection_scores"][0][:count],
            outputs["detection_classes"][0][:count],
        ]
    )
    return rows.astype(np.float32).reshape(-1, DETECTION_FIELDS)


def run_test(library, run_sample, settings, log_dir, accuracy=False):
    """One LoadGen test into `log_dir`: its mlperf_log_* files. Returns the detail log's values
    and the samples' service times in seconds."""
    lg = loadgen()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    streams = settings.scenario in (loadgen().TestScenario.SingleStream, loadgen().TestScenario.MultiStream)
    sut = DetectionSUT(library, run_sample, accuracy, inline=streams)
    sut_handle, qsl_handle = sut.construct(), library.construct()
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(log_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log_settings)
    finally:
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
    if sut.error is not None:
        raise StageError(f"a LoadGen sample failed: {sut.error}")
    return read_detail_log(log_dir / "mlperf_log_detail.txt"), sut.service_seconds


def read_detail_log(path):
    """LoadGen's detail log as {key: value}: every `:::MLLOG {json}` line, the last of a key kept."""
    values = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise StageError(f"{path}: LoadGen wrote no detail log ({error.strerror})") from None
    for line in lines:
        if line.startswith(MLLOG):
            entry = json.loads(line[len(MLLOG) :])
            values[entry["key"]] = entry["value"]
    if "result_validity" not in values and "effective_test_mode" not in values:
        raise StageError(f"{path}: no LoadGen result in it: the test did not finish")
    return values


# The latency scenarios' headline: the knob of its percentile, what it measures, and the detail
# log's key of early stopping's estimate of it (in ns).
LATENCY_METRICS = {
    "SingleStream": ("single_stream_percentile", "latency", "early_stopping_latency_ss"),
    "MultiStream": ("multi_stream_percentile", "latency of a query", "early_stopping_latency_ms"),
}


def percentile_key(percentile):
    return f"result_{percentile:.2f}_percentile_latency_ns"


def early_stopping_words(detail):
    """LoadGen's early-stopping verdict, its bullet list as one sentence."""
    text = " ".join(str(detail.get("early_stopping_result", "")).split())
    return "; ".join(part.strip().rstrip(".") for part in text.split("*") if part.strip())


def invalid_because(detail):
    """What LoadGen found unmet, in its words: none for a VALID run."""
    checks = {
        "result_min_duration_met": "min duration not reached",
        "result_min_queries_met": "min query count not reached",
        "early_stopping_met": "early stopping not satisfied: " + early_stopping_words(detail),
        "result_perf_constraints_met": "latency bound exceeded",
    }
    return [reason for key, reason in checks.items() if detail.get(key) is False]


def scenario_figures(scenario, detail, knobs):
    """The scenario's figures as LoadGen logged them: the headline metric, its validity, the
    latency percentiles in ms and the settings in effect."""
    latencies = {
        key[len("result_") : -len("_percentile_latency_ns")]: value / 1e6
        for key, value in detail.items()
        if key.startswith("result_") and key.endswith("_percentile_latency_ns")
    }
    figures = {
        "scenario": scenario,
        "validity": detail.get("result_validity"),
        "min_duration_met": detail.get("result_min_duration_met"),
        "min_queries_met": detail.get("result_min_queries_met"),
        "early_stopping_met": detail.get("early_stopping_met"),
        "query_count": detail.get("result_query_count"),
        "latency_ms": latencies,
        "mean_latency_ms": detail.get("result_mean_latency_ns", 0) / 1e6,
        "effective": {key[len("effective_") :]: value for key, value in detail.items() if key.startswith("effective_")},
        "loadgen_version": detail.get("loadgen_version"),
        "errors": detail.get("num_errors", 0),
        "invalid_because": invalid_because(detail),
    }
    if scenario in LATENCY_METRICS:
        knob, what, early_stopping_key = LATENCY_METRICS[scenario]
        percentile = knobs[knob]
        value = detail[percentile_key(percentile)] / 1e6
        figures["metric"] = {"name": f"p{percentile:g} {what}", "unit": "ms", "value": value}
        figures["early_stopping_ms"] = detail.get(early_stopping_key, 0) / 1e6 or None
    if scenario == "SingleStream":
        figures["qps_with_loadgen_overhead"] = detail.get("result_qps_with_loadgen_overhead")
        figures["qps_without_loadgen_overhead"] = detail.get("result_qps_without_loadgen_overhead")
    elif scenario == "MultiStream":
        figures["samples_per_query"] = detail.get("effective_samples_per_query")
    elif scenario == "Server":
        percentile = knobs["server"]["percentile"]
        figures["metric"] = {"name": "target QPS", "unit": "queries/s", "value": detail.get("effective_target_qps")}
        figures["scheduled_qps"] = detail.get("result_scheduled_samples_per_sec")
        figures["completed_qps"] = detail.get("result_completed_samples_per_sec")
        figures["latency_bound_ms"] = detail.get("effective_target_latency_ns", 0) / 1e6
        figures["bound_percentile"] = percentile
        figures["bound_latency_ms"] = detail[percentile_key(percentile)] / 1e6
    else:
        figures["metric"] = {
            "name": "throughput",
            "unit": "samples/s",
            "value": detail.get("result_samples_per_second"),
        }
    return figures


def search_server_qps(run_at, low, high, runs, precision=0.05):
    """The highest target QPS whose Server run is VALID, by bisection between `low` and `high`
    with at most `runs` runs. `run_at(qps)` runs LoadGen at that rate and returns its figures.
    Returns (the best valid run's figures or None, every run as (qps, validity) in order).

    The bracket is checked first: `low` must be valid (else it halves, still within `runs`), and
    the search stops once the bracket is narrower than `precision` of its upper end."""
    tried, best = [], None
    while len(tried) < runs:
        figures = run_at(low)
        tried.append((low, figures["validity"]))
        if figures["validity"] == "VALID":
            best = figures
            break
        high, low = low, low / 2
    while best is not None and len(tried) < runs and high - low > precision * high:
        middle = (low + high) / 2
        figures = run_at(middle)
        tried.append((middle, figures["validity"]))
        if figures["validity"] == "VALID":
            low, best = middle, figures
        else:
            high = middle
    return best, tried
