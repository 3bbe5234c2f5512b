"""Medians and 95% intervals over benchmark rounds: the bootstrap against distributions whose
answer is known, and the rounds in a finished demo run, interleaved across models."""

import copy
import re

import numpy as np
import pytest
from helpers import DEMO_MODELS, DEMO_OPENVINO_MODELS, read_json

from detbench.intervals import holds, interval, latency_percentile, ratio_interval, throughput


def rounds_of(rng, median_ms, spread, count=3, steps=200, slow=None):
    """Rounds of step seconds around `median_ms`; `slow`: a factor for every round's pace
    (a slow spell hits every model in that round alike)."""
    slow = slow if slow is not None else [1.0] * count
    return [median_ms / 1000 * factor * np.exp(rng.normal(0, spread, steps)) for factor in slow[:count]]


def test_the_interval_holds_the_median_and_narrows_with_steps():
    rng = np.random.default_rng(1)
    few = interval(rounds_of(rng, 100, 0.1, steps=50), latency_percentile(50))
    many = interval(rounds_of(rng, 100, 0.1, steps=2000), latency_percentile(50))
    for estimate in (few, many):
        assert estimate["low"] <= estimate["median"] <= estimate["high"] and estimate["rounds"] == 3
        assert estimate["low"] < 100 < estimate["high"]
    assert many["high"] - many["low"] < 0.5 * (few["high"] - few["low"])


def test_rounds_that_disagree_widen_the_interval():
    rng = np.random.default_rng(2)
    steady = interval(rounds_of(rng, 100, 0.05, slow=[1.0, 1.0, 1.0]), latency_percentile(50))
    unsteady = interval(rounds_of(rng, 100, 0.05, slow=[0.9, 1.0, 1.2]), latency_percentile(50))
    assert unsteady["high"] - unsteady["low"] > 3 * (steady["high"] - steady["low"])


def test_a_ratio_of_the_same_pace_holds_one_and_a_real_speedup_does_not():
    rng = np.random.default_rng(3)
    slow = [1.0, 1.3, 0.9]  # rounds slowed alike: pairing takes it out of the ratio
    reference = rounds_of(rng, 100, 0.05, slow=slow)
    same = ratio_interval(rounds_of(rng, 100, 0.05, slow=slow), reference, throughput(1))
    faster = ratio_interval(rounds_of(rng, 50, 0.05, slow=slow), reference, throughput(1))
    assert same["paired"] and holds(same)
    assert not holds(faster) and faster["low"] > 1.8 and faster["high"] < 2.2
    assert faster["median"] == pytest.approx(2.0, rel=0.05)
    unpaired = ratio_interval(rounds_of(rng, 50, 0.05, count=2, slow=slow), reference, throughput(1))
    assert not unpaired["paired"] and unpaired["rounds"] == 2


def test_one_round_still_has_an_interval_over_its_steps():
    rng = np.random.default_rng(4)
    estimate = interval(rounds_of(rng, 20, 0.1, count=1), latency_percentile(90))
    assert estimate["rounds"] == 1 and estimate["low"] < estimate["median"] < estimate["high"]


def test_the_demo_ran_its_rounds_interleaved(finished_run):
    """Every model's round 1 started before any model's round 2 (A B C A B C), and the second
    rounds timed only: the first has the profile and the roofline."""
    first = {name: read_json(finished_run, f"results/benchmark/{name}.json") for name in DEMO_MODELS}
    second = {name: read_json(finished_run, f"results/benchmark/repeats/{name}-2.json") for name in DEMO_MODELS}
    assert max(r["started_unix"] for r in first.values()) < min(r["started_unix"] for r in second.values())
    for name in DEMO_MODELS:
        assert first[name]["repeat"] == 1 and second[name]["repeat"] == 2
        assert second[name]["profile"] is None and second[name]["roofline"] is None
        assert second[name]["graph_sha256"] == first[name]["graph_sha256"]


def test_the_report_gives_intervals(finished_run):
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    matrix = [line for line in summary.splitlines() if line.startswith("| int8 |")][0]
    cells = [cell.strip() for cell in matrix.split("|")]
    latency, speedup = cells[5], cells[10]
    median, low, high = (float(value) for value in latency.replace("[", "").replace("]", "").replace(",", "").split())
    assert low <= median <= high
    assert " over fp32" in speedup and "[" in speedup
    assert "hierarchical bootstrap" in summary
    rounds = [line for line in summary.splitlines() if line.startswith("| Benchmark rounds |")][0]
    assert [cell.strip() for cell in rounds.split("|")[2:-1]] == ["2"] * (len(DEMO_MODELS) + len(DEMO_OPENVINO_MODELS))


def test_another_round_runs_only_that_round(finished_run):
    """benchmark.repeats 2 -> 3 runs each model's third round and the report, nothing else;
    a LoadGen knob of a scenario not run changes nothing."""
    config = finished_run.config
    original = copy.deepcopy(config)
    try:
        config["benchmark"]["repeats"] = 3
        config["loadgen"]["server"] = {**config["loadgen"]["server"], "latency_bound_ms": 7}
        assert finished_run.planned_jobs() == {"benchmark_repeat": 7, "make_report": 1, "all": 1}
    finally:
        finished_run.config = original
        finished_run.write_config()


def test_the_report_reads_no_difference_where_the_interval_holds_one():
    from detbench.report.results import Results
    from detbench.report.tables import speedup

    rng = np.random.default_rng(5)
    slow = [1.0, 1.2, 0.9]

    def rounds(median_ms):
        steps = rounds_of(rng, median_ms, 0.05, slow=slow)
        results = [
            {"step_seconds": list(s), "warmup_steps": 0, "batch_size": 1, "repeat": r + 1} for r, s in enumerate(steps)
        ]
        return results[0], results[1:]

    models = {
        name: {"architecture": "a", "precision": "fp32", "reference": reference, "published": {}}
        for name, reference in (("fp32", None), ("same", "fp32"), ("twice", "fp32"))
    }
    paces = {"fp32": 100, "same": 100, "twice": 50}
    firsts, repeats = {}, {}
    for name, pace in paces.items():
        firsts[name], repeats[name] = rounds(pace)
    results = Results(models, firsts, repeats=repeats)
    assert speedup(results.benchmarks, models, "same").endswith("over fp32: no difference measured")
    assert re.fullmatch(r"[12]\.\d\dx \[\d\.\d\d, \d\.\d\d\] over fp32", speedup(results.benchmarks, models, "twice"))
    assert results.benchmarks["twice"]["over_rounds"]["latency_ms"]["p50"]["rounds"] == 3
