"""The report's further tables, each (header, rows): where the time goes, throughput by
instances, layer drift, MLPerf LoadGen's scenarios, the machine while each benchmark ran, the
tuning history and each stage's cost."""

from pathlib import Path

from detbench.common import StageError
from detbench.performance import OTHER_PART
from detbench.report.results import column_order
from detbench.report.tables import engine_version, number, percent


def drift_rows(models, drifts):
    """(header, rows): cosine vs the reference at each block end and head, one column per model."""
    if not drifts:
        return [], []
    models = [name for name in column_order(models) if name in drifts]
    labels = []
    for model in models:
        labels += [layer["layer"] for layer in drifts[model]["layers"] if layer["block_end"] or layer["head"]]
    by_model = {model: {layer["layer"]: layer for layer in drifts[model]["layers"]} for model in models}
    rows = [
        (label, [number(by_model[model].get(label, {}).get("cosine"), 4) for model in models])
        for label in dict.fromkeys(labels)
    ]
    rows.append(("Lowest cosine at", [drifts[model]["lowest_cosine"] or "n/a" for model in models]))
    rows.append(("Largest drop at", [drifts[model]["largest_drop"] or "n/a" for model in models]))
    return ["Cosine vs reference", *models], rows


def part_order(profiles):
    """Every architecture's parts in the order of the models, "other" (the rest) last."""
    parts = dict.fromkeys(part for profile in profiles for part in profile["by_part_ms"])
    return [part for part in parts if part != OTHER_PART] + [OTHER_PART] * (OTHER_PART in parts)


def profile_rows(models, benchmarks):
    """(header, rows): traced milliseconds per image by model part, and each model's speed-up
    over its reference per part."""
    profiled = {name: result["profile"] for name, result in benchmarks.items() if result.get("profile")}
    if not profiled:
        return [], []
    names = [name for name in column_order(models) if name in profiled]
    compared = [name for name in names if models[name]["reference"] in profiled]
    # Each architecture has its own parts: a model's row is empty where its graph has no such part.
    parts = part_order(profiled[name] for name in names)
    rows = []
    for part in [*parts, "total"]:
        values = {}
        for name in names:
            milliseconds = profiled[name]["op_time_ms"] if part == "total" else profiled[name]["by_part_ms"].get(part)
            values[name] = None if milliseconds is None else milliseconds / benchmarks[name]["batch_size"]
        speedups = []
        for name in compared:
            reference = values[models[name]["reference"]]
            speedups.append(f"{reference / values[name]:.2f}x" if values[name] and reference is not None else "")
        rows.append((part, ["" if values[name] is None else number(values[name], 1) for name in names] + speedups))
    header = ["Model part (ms per image)", *names, *[f"{name} over {models[name]['reference']}" for name in compared]]
    return header, rows


def layouts(benchmarks, instance_results):
    """{model: {instances: (cores per instance, images/s, pooled p50 ms)}}, the plain benchmark as 1."""
    table = {}
    for name, result in benchmarks.items():
        cores = result["runtime"]["intra_op_threads"]
        table.setdefault(name, {})[1] = (cores, result["throughput_images_per_second"], result["latency_ms"]["p50"])
    for (name, count), result in instance_results.items():
        table.setdefault(name, {})[count] = (
            result["cores_per_instance"],
            result["throughput_images_per_second"],
            result["latency_ms"]["p50"],
        )
    return table


def instance_rows(models, benchmarks, instance_results):
    """(header, rows) of throughput by layout; empty unless a layout of several instances ran."""
    if not instance_results:
        return [], []
    table = layouts(benchmarks, instance_results)
    models = [name for name in column_order(models) if name in table]
    counts = sorted({count for runs in table.values() for count in runs})
    rows = []
    for count in counts:
        cells = []
        for model in models:
            run = table[model].get(count)
            cells.append("n/a" if run is None else f"{run[1]:.2f} (p50 {run[2]:.1f} ms)")
        cores = next(table[m][count][0] for m in models if count in table[m])
        rows.append((f"{count} x {cores} cores", cells))
    return ["Instances x cores: images/s (pooled p50)", *models], rows


MACHINE_HEADER = [
    "Model",
    "CPU (vector flags)",
    "Governor",
    "MHz now / max",
    "Kernel",
    "Engine",
    "Cores used",
    "oneDNN dispatched",
    "Steal",
    "Other processes",
    "Load (1 min)",
    "Free memory (MB)",
    "Step CV",
    "Noisy",
]


def core_list(cores):
    """Cores as ranges, e.g. "0-3, 8"; n/a where the result predates the record."""
    if not cores:
        return "n/a"
    ranges, start = [], cores[0]
    for previous, core in zip(cores, cores[1:] + [None]):
        if core != previous + 1:
            ranges.append(str(start) if start == previous else f"{start}-{previous}")
            start = core
    return ", ".join(ranges)


def dispatch_text(dispatch):
    """oneDNN's version, the ISA it dispatched for and its kernels' ISAs; "oneDNN off" without it."""
    if not dispatch:
        return "oneDNN off (or no record)"
    kernels = ", ".join(dispatch["kernel_isas"]) or "no kernels created"
    # OpenVINO's own oneDNN prints no version line.
    version = f"v{dispatch['version']}" if dispatch["version"] else "version not printed"
    return f"{version}: {dispatch['isa'] or 'ISA not named'} (kernels: {kernels})"


def machine_rows(models, benchmarks):
    """A row per benchmark: the machine as its steps were timed (results without a record of
    it, from before it was kept, are left out)."""
    rows = []
    for name in column_order(models):
        result = benchmarks.get(name)
        state = (result or {}).get("machine")
        if not state:
            continue
        megahertz = f"{state['current_mhz'] or 'n/a'} / {state['max_mhz'] or 'n/a'}"
        rows.append(
            (
                name,
                [
                    f"{result['cpu_model']} ({', '.join(result['cpu_flags']) or 'none listed'})",
                    state["governor"] or "n/a",
                    megahertz,
                    state["kernel"],
                    engine_version(result),
                    core_list(state.get("cores_used")),
                    dispatch_text(result.get("onednn_dispatch")),
                    percent(state["steal_fraction"], 1),
                    percent(state["other_cpu_fraction"], 1),
                    number(state["load_average_1min"], 2),
                    str(state["available_memory_mb"] or "n/a"),
                    percent(state["step_cv"], 1),
                    "NOISY: " + "; ".join(state["noisy"]) if state["noisy"] else "no",
                ],
            )
        )
    return rows


LOADGEN_HEADER = [
    "Model",
    "Scenario",
    "Result",
    "Validity",
    "Latency p50 / p90 / p99 (ms)",
    "Queries",
    "Notes",
    "LoadGen's summary",
]
SCENARIO_ORDER = ("SingleStream", "MultiStream", "Server", "Offline")


def scenario_note(figures):
    """Why a run is INVALID, the Server search's runs, and noise: what the figure rests on."""
    notes = list(figures["invalid_because"])
    if figures["scenario"] == "Server":
        runs = figures["search"]["runs"]
        notes.append(
            f"p{figures['bound_percentile']:g} {figures['bound_latency_ms']:.1f} ms within the "
            f"{figures['latency_bound_ms']:g} ms bound; {len(runs)} runs searched "
            + ", ".join(f"{run['target_qps']:.3g} {run['validity']}" for run in runs)
        )
    if figures["scenario"] == "SingleStream" and figures.get("early_stopping_ms"):
        notes.append(f"early stopping's p90 estimate {figures['early_stopping_ms']:.2f} ms")
    if figures.get("machine", {}).get("noisy"):
        notes.append("NOISY: " + "; ".join(figures["machine"]["noisy"]))
    return "; ".join(notes) or "every constraint met"


def metric_value(metric):
    """A LoadGen headline figure: ms to 2 decimals, rates to 3 significant digits (1 decimal above 100)."""
    value = metric["value"]
    if value is None:
        return "n/a"
    return f"{value:.2f}" if metric["unit"] == "ms" else (f"{value:.1f}" if value >= 100 else f"{value:.3g}")


def loadgen_rows(models, loadgen):
    """A row per model and scenario run under LoadGen, its headline metric as LoadGen logged it."""
    rows = []
    for name in column_order(models):
        for scenario in SCENARIO_ORDER:
            figures = loadgen.get((name, scenario))
            if figures is None:
                continue
            metric = figures["metric"]
            latency = figures["latency_ms"]
            rows.append(
                (
                    name,
                    [
                        scenario,
                        f"{metric['name']} {metric_value(metric)} {metric['unit']}",
                        figures["validity"],
                        # Offline's one query has every sample issued at once: their latencies say nothing.
                        "n/a"
                        if scenario == "Offline"
                        else " / ".join(number(latency.get(key), 2) for key in ("50.00", "90.00", "99.00")),
                        str(figures["query_count"])
                        + (f" of {figures['service_ms']['samples']} samples" if scenario == "Offline" else ""),
                        scenario_note(figures),
                        str(
                            Path(figures["log_dir"])
                            / figures.get("search", {}).get("best_log_dir", "")
                            / "mlperf_log_summary.txt"
                        ),
                    ],
                )
            )
    return rows


LOADGEN_ACCURACY_HEADER = ["Model", "Images", "AP (LoadGen's accuracy log)", "AP (evaluate_accuracy)", "Same"]


def loadgen_accuracy_rows(models, loadgen_accuracies, accuracies):
    """LoadGen's accuracy mode scored beside the accuracy stage: the same images, the same AP."""
    rows = []
    for name in column_order(models):
        result = loadgen_accuracies.get(name)
        if result is None:
            continue
        ours = accuracies.get(name, {}).get("standard", {}).get("AP")
        theirs = result["standard"]["AP"]
        same = "n/a" if ours is None else ("yes" if abs(ours - theirs) < 5e-5 else "NO")
        rows.append((name, [str(result["images"]), number(theirs, 4), number(ours, 4), same]))
    return rows


TUNING_HEADER = ["Trial", "Model", "AP (tuning images)", "Relative AP drop", "Kept in FP32"]


def tuning_rows(quantizations):
    """Rows of the tuning history: every trial of each accuracy-aware quantization."""
    rows = []
    for model, quantization in sorted(quantizations.items()):
        tuning = quantization.get("tuning")
        if not tuning:
            continue
        baseline = tuning["fp32_ap"]
        rows.append(("FP32", [model, number(baseline, 4), "", ""]))
        for trial in tuning["trials"]:
            drop = number((baseline - trial["ap"]) / baseline, 4) if baseline else "n/a"
            chosen = " (kept)" if trial["trial"] == tuning["chosen_trial"] else ""
            kept = ", ".join(trial["kept_in_fp32"]) or "none"
            if trial.get("units_in_fp32"):  # layer drift's order: whole units, largest drift first
                loss = {entry["unit"]: entry["loss"] for entry in tuning.get("drift_ranking") or []}
                units = ", ".join(
                    f"{unit} (cosine loss {number(loss.get(unit), 4)})" for unit in trial["units_in_fp32"]
                )
                kept = f"units {units}: {len(trial['kept_in_fp32'])} convolutions"
            rows.append((f"{trial['trial']}{chosen}", [model, number(trial["ap"], 4), drop, kept]))
    return rows


COST_HEADER = ["Stage", "Model", "Jobs", "Wall time (s)", "Peak memory (MB)"]


def read_benchmark_file(path):
    """Wall seconds and peak RSS (MB, None where Snakemake could not measure it) of one job."""
    try:
        header, *rows = Path(path).read_text().splitlines()
    except (OSError, ValueError) as error:
        raise StageError(f"cannot read benchmark file {path}: {error}") from None
    columns = header.split("\t")
    values = dict(zip(columns, rows[-1].split("\t"))) if rows else {}
    if "s" not in values:
        raise StageError(f"{path}: not a Snakemake benchmark file (no 's' column)")

    def measured(key):
        try:
            return float(values.get(key, "NA"))
        except ValueError:
            return None

    return measured("s"), measured("max_rss")


def cost_rows(paths):
    """Rows of the cost table from {STAGE:MODEL[:job]: path}, in the order given: per stage
    and model ("all" for shared stages), jobs, summed wall time, largest peak memory."""
    costs = {}
    for key, path in paths.items():
        stage, model = (key.split(":") + ["all"])[:2]
        seconds, peak = read_benchmark_file(path)
        jobs, total, largest = costs.get((stage, model), (0, 0.0, None))
        if peak is not None:
            largest = peak if largest is None else max(largest, peak)
        costs[(stage, model)] = (jobs + 1, total + seconds, largest)
    return [
        (stage, [model, str(jobs), f"{seconds:.1f}", number(peak, 0)])
        for (stage, model), (jobs, seconds, peak) in costs.items()
    ]
