"""The results a report shows, loaded and ordered: the registry's models by architecture,
each reference last in the full table and first in the matrix."""

import json
from pathlib import Path

from detbench.common import StageError, keyed_paths
from detbench.intervals import interval, latency_percentile, ratio_interval, throughput


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StageError(f"cannot read {path}: {error}") from None


def load_keyed(items, what):
    """{key: loaded JSON} of KEY=PATH arguments."""
    return {key: load_json(path) for key, path in keyed_paths(items, what).items()}


def column_order(models):
    """Models grouped by architecture (in registry order), each group's references last."""
    architectures = list(dict.fromkeys(model["architecture"] for model in models.values()))
    referenced = {model["reference"] for model in models.values()}
    return sorted(models, key=lambda name: (architectures.index(models[name]["architecture"]), name in referenced))


def matrix_order(models):
    """Rows of the matrix: by architecture (registry order), each reference first."""
    groups = group_by_architecture(models).values()
    return [name for group in groups for name in sorted(group, key=lambda name: models[name]["reference"] is not None)]


def group_by_architecture(models):
    groups = {}
    for name in column_order(models):
        groups.setdefault(models[name]["architecture"], []).append(name)
    return groups


def throughput_ratio(benchmarks, models, name):
    """Throughput over the model's reference's (the median over rounds where there are
    several); None without one (1.0 for a reference itself)."""
    reference = models[name]["reference"]
    if name not in benchmarks:
        return None
    if reference is None:
        return 1.0
    if reference not in benchmarks:
        return None
    if "speedup_over_rounds" in benchmarks[name]:
        return benchmarks[name]["speedup_over_rounds"]["median"]
    return benchmarks[name]["throughput_images_per_second"] / benchmarks[reference]["throughput_images_per_second"]


def round_steps(result):
    """A benchmark round's timed step seconds, warm-up left out."""
    return result["step_seconds"][result["warmup_steps"] :]


def attach_intervals(models, benchmarks, repeats):
    """Each benchmark gains `over_rounds` (latency percentiles and throughput: medians over its
    rounds with 95% intervals) and, beside a benchmarked reference, `speedup_over_rounds`; an
    openvino model beside its TensorFlow peer, `engine_ratio_over_rounds`.
    `repeats`: {model: [its later rounds' results]}; the benchmark itself is round 1."""
    timed = {name: result for name, result in benchmarks.items() if result.get("step_seconds")}
    rounds = {
        name: [round_steps(result)] + [round_steps(r) for r in repeats.get(name, [])] for name, result in timed.items()
    }
    for name, result in timed.items():
        rate = throughput(result["batch_size"])
        result["over_rounds"] = {
            "latency_ms": {f"p{q}": interval(rounds[name], latency_percentile(q)) for q in (50, 90, 99)},
            "throughput_images_per_second": interval(rounds[name], rate),
        }
        reference = models.get(name, {}).get("reference")
        if reference in timed:
            result["speedup_over_rounds"] = ratio_interval(rounds[name], rounds[reference], rate)
        peer = models.get(name, {}).get("engine_peer")
        if peer in timed:
            result["engine_ratio_over_rounds"] = ratio_interval(rounds[name], rounds[peer], rate)


def ap_lost(accuracies, models, name):
    """The reference's standard AP minus the model's (0.0 for a reference); None if unmeasured."""
    reference = models[name]["reference"] or name
    if name not in accuracies or reference not in accuracies:
        return None
    return accuracies[reference]["standard"]["AP"] - accuracies[name]["standard"]["AP"]


class Results:
    """Everything the report shows: the registry's models and each kind of result by model."""

    def __init__(
        self,
        models,
        benchmarks=None,
        accuracies=None,
        instances=None,
        agreements=None,
        drifts=None,
        quantizations=None,
        gate=None,
        loadgen=None,
        loadgen_accuracies=None,
        repeats=None,
    ):
        """`gate`: the config's accuracy_gate (ratio, metric, reference, on_fail), or None;
        `loadgen`: LoadGen's scenario results by (model, scenario); `repeats`: each model's
        benchmark rounds after the first, as a list."""
        self.models, self.order, self.gate = models, column_order(models), gate
        self.benchmarks, self.accuracies = benchmarks or {}, accuracies or {}
        self.instances, self.agreements = instances or {}, agreements or {}
        self.drifts, self.quantizations = drifts or {}, quantizations or {}
        self.loadgen, self.loadgen_accuracies = loadgen or {}, loadgen_accuracies or {}
        attach_intervals(models, self.benchmarks, repeats or {})

    def ordered(self, results):
        """(model, result) in column order."""
        return [(name, results[name]) for name in self.order if name in results]

    def label(self, name):
        return f"{name} (emulated)" if self.benchmarks.get(name, {}).get("emulated") else name
