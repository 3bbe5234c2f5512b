#!/usr/bin/env python3
"""Summarise benchmark and accuracy results: one table of every model (Markdown and HTML) and plots.

Models come from the registry (`--models`: architecture, precision, reference, published
figures) and each result is given keyed by its model (`--benchmark MODEL=PATH`). The report
opens with the matrix a user chooses from: a row per model (architecture x precision) with
latency, throughput, AP (standard, legacy, published) and the speed-up over the reference (its
architecture's FP32), and a plot of speed-up against AP lost. In the full table, columns are
grouped by architecture, each model's reference last; every model is compared with its own
reference (speed-up, agreement, profile by part, layer drift). Plots (PNG, drawn for each
`--plot NAME=PATH` given): latency per step, latency histogram (warm-up excluded), time by
model part, throughput by instances, AP per model, and where a model loses accuracy against
its reference: detection agreement per class, cosine drift layer by layer. Further tables give
the layer drift at each block end and head, the tuning history, and each stage's cost (wall
time, peak memory) from Snakemake's benchmark files (`--cost STAGE:MODEL=PATH`).
"""

import argparse
import html
import json
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from detbench.common import StageError, atomic_file, keyed_paths, run_main
from detbench.performance import OTHER_PART

log = logging.getLogger("make_report")

COST_HEADER = ["Stage", "Model", "Jobs", "Wall time (s)", "Peak memory (MB)"]


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StageError(f"cannot read {path}: {error}") from None


def load_keyed(items, what):
    """{key: loaded JSON} of KEY=PATH arguments."""
    return {key: load_json(path) for key, path in keyed_paths(items, what).items()}


def number(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def significant(value):
    return "n/a" if value is None else f"{value:.3g}"


def percent(value):
    return "n/a" if value is None else f"{100 * value:.0f}%"


def column_order(models):
    """Models grouped by architecture (in registry order), each group's references last."""
    architectures = list(dict.fromkeys(model["architecture"] for model in models.values()))
    referenced = {model["reference"] for model in models.values()}
    return sorted(models, key=lambda name: (architectures.index(models[name]["architecture"]), name in referenced))


def throughput_ratio(benchmarks, models, name):
    """Throughput over the model's reference's; None without one (1.0 for a reference itself)."""
    reference = models[name]["reference"]
    if name not in benchmarks:
        return None
    if reference is None:
        return 1.0
    if reference not in benchmarks:
        return None
    return benchmarks[name]["throughput_images_per_second"] / benchmarks[reference]["throughput_images_per_second"]


def ap_lost(accuracies, models, name):
    """The reference's standard AP minus the model's (0.0 for a reference); None if unmeasured."""
    reference = models[name]["reference"] or name
    if name not in accuracies or reference not in accuracies:
        return None
    return accuracies[reference]["standard"]["AP"] - accuracies[name]["standard"]["AP"]


def matrix_order(models):
    """Rows of the matrix: by architecture (registry order), each reference first."""
    groups = group_by_architecture(models).values()
    return [name for group in groups for name in sorted(group, key=lambda name: models[name]["reference"] is not None)]


def group_by_architecture(models):
    groups = {}
    for name in column_order(models):
        groups.setdefault(models[name]["architecture"], []).append(name)
    return groups


MATRIX_HEADER = [
    "Model",
    "Architecture",
    "Precision",
    "Latency p50 (ms)",
    "Throughput (images/s)",
    "AP",
    "Legacy AP",
    "Published AP",
    "Speed-up over reference",
    "AP lost",
]


def matrix_rows(models, benchmarks, accuracies, quantizations=None):
    """One row per model: what a user chooses between (MATRIX_HEADER)."""
    rows = []
    for name in matrix_order(models):
        benchmark, accuracy = benchmarks.get(name), accuracies.get(name)
        lost = ap_lost(accuracies, models, name)
        reference = models[name]["reference"]
        rows.append(
            (
                name,
                [
                    models[name]["architecture"],
                    precision_label(models, benchmarks, name) + tolerance_mark((quantizations or {}).get(name)),
                    number(benchmark["latency_ms"]["p50"], 2) if benchmark else "n/a",
                    number(benchmark["throughput_images_per_second"], 2) if benchmark else "n/a",
                    number(accuracy["standard"]["AP"]) if accuracy else "n/a",
                    number(accuracy["legacy"]["AP"]) + legacy_scope(accuracy) if accuracy else "n/a",
                    models[name]["published"].get("AP", "n/a"),
                    "reference" if reference is None else speedup(benchmarks, models, name, "n/a"),
                    "" if reference is None else number(None if lost is None else round(lost, 3) + 0.0),  # no "-0.000"
                ],
            )
        )
    return rows


def tolerance_mark(quantization):
    """Where accuracy-aware tuning kept a trial that missed its tolerance, a mark saying so."""
    tuning = (quantization or {}).get("tuning")
    if not tuning or tuning["met_tolerance"]:
        return ""
    chosen = next(trial for trial in tuning["trials"] if trial["trial"] == tuning["chosen_trial"])
    return (
        f" (MISSED its accuracy tolerance {tuning['tolerance']}: best of {len(tuning['trials'])} trials AP "
        f"{number(chosen['ap'], 4)} vs FP32 {number(tuning['fp32_ap'], 4)} on {tuning['tuning_images']} images)"
    )


def legacy_scope(accuracy):
    """A mark, e.g. " (first 4952)", where the legacy metrics scored fewer images than were detected."""
    scored = accuracy.get("legacy_images", accuracy["images"])
    return f" (first {scored})" if scored < accuracy["images"] else ""


def speedup(benchmarks, models, name, missing=""):
    """Throughput over the model's reference's, e.g. "3.21x over fp32"; "" for a reference,
    `missing` where either was not benchmarked."""
    reference = models[name]["reference"]
    if reference is None:
        return ""
    ratio = throughput_ratio(benchmarks, models, name)
    return missing if ratio is None else f"{ratio:.2f}x over {reference}"


def precision_label(models, benchmarks, name):
    """The model's precision, and "emulated" where BF16 ran without BF16 instructions."""
    emulated = benchmarks.get(name, {}).get("emulated")
    return models[name]["precision"] + (" (emulated)" if emulated else "")


def table_rows(models, benchmarks, accuracies, quantizations=None, agreements=None):
    """(header, rows, details): one column per model, one row per figure."""
    quantizations = quantizations or {}
    agreements = agreements or {}
    names = column_order(models)

    def bench(name, key):
        result = benchmarks.get(name)
        return None if result is None else result["latency_ms"][key]

    def roof(name, key):
        result = benchmarks.get(name)
        return None if result is None or not result.get("roofline") else result["roofline"][key]

    def metric(name, family, key):
        result = accuracies.get(name)
        return None if result is None else result[family][key]

    def bfloat16(name):
        share = benchmarks.get(name, {}).get("bfloat16")
        return percent(share["op_time_fraction"]) if share else "n/a"

    rows = [
        ("Architecture", [models[name]["architecture"] for name in names]),
        ("Precision", [precision_label(models, benchmarks, name) for name in names]),
        ("Latency p50 (ms)", [number(bench(name, "p50"), 2) for name in names]),
        ("Latency p90 (ms)", [number(bench(name, "p90"), 2) for name in names]),
        ("Latency p99 (ms)", [number(bench(name, "p99"), 2) for name in names]),
        (
            "Throughput (images/s)",
            [
                number(benchmarks[name]["throughput_images_per_second"], 2) if name in benchmarks else "n/a"
                for name in names
            ],
        ),
        ("Speed-up over reference (throughput)", [speedup(benchmarks, models, name) for name in names]),
        ("Op time in bfloat16 (traced)", [bfloat16(name) for name in names]),
        ("GFLOPs per image (executed)", [significant(roof(name, "gflops_per_image")) for name in names]),
        ("Achieved GFLOP/s (INT8: GOP/s)", [significant(roof(name, "achieved_gflops_per_second")) for name in names]),
        (
            "Share of a matmul's rate (same threads, precision)",
            [percent(roof(name, "fraction_of_probe")) for name in names],
        ),
    ]
    for key, label in (
        ("AP", "AP"),
        ("AP50", "AP50"),
        ("AP75", "AP75"),
        ("AP_small", "AP small"),
        ("AP_medium", "AP medium"),
        ("AP_large", "AP large"),
    ):
        rows.append((label, [number(metric(name, "standard", key)) for name in names]))
    rows.append(("Legacy AP (recipe's evaluator)", [number(metric(name, "legacy", "AP")) for name in names]))
    rows.append(("Legacy AP50", [number(metric(name, "legacy", "AP50")) for name in names]))
    if agreements:
        rows.append(
            (
                "Reference detections reproduced",
                [number(agreements[name]["agreement"]) if name in agreements else "" for name in names],
            )
        )
        rows.append(
            (
                "Confident ones reproduced (score >= 0.5)",
                [number(agreements[name].get("confident_agreement")) if name in agreements else "" for name in names],
            )
        )
        rows.append(
            (
                "Mean score drift vs reference",
                [number(agreements[name]["mean_score_drift"], 4) if name in agreements else "" for name in names],
            )
        )
    rows.append(
        (
            "Published (Intel)",
            [", ".join(f"{k} {v}" for k, v in models[name]["published"].items()) or "n/a" for name in names],
        )
    )
    details = []
    for name in names:
        result = benchmarks.get(name)
        if result:
            size = (
                f", images resized to {result['image_size'][0]}x{result['image_size'][1]}"
                if result["images_resized"]
                else ""
            )
            details.append(
                f"{name}: batch {result['batch_size']}{size}, {result['measured_steps']} steps measured after "
                f"{result['warmup_steps']} warm-up, {result['runtime']['intra_op_threads']} intra-op threads, "
                f"oneDNN {'on' if result['onednn'] else 'off'}, "
                f"TCMalloc {'on' if result['runtime']['tcmalloc'] else 'off'}, "
                f"TensorFlow {result['tensorflow_version']}, {result['cpu_model']} "
                f"({', '.join(result['cpu_flags']) or 'no listed vector flags'})"
            )
            if result.get("emulated"):
                details.append(
                    f"{name}: BF16 emulated by oneDNN (this CPU has neither avx512_bf16 nor amx_bf16): "
                    "its speed says nothing about BF16 hardware"
                )
            probe = result.get("probe")
            if probe:
                rates = ", ".join(f"{k.upper()} {v:.1f}" for k, v in sorted(probe["gflops_per_second"].items()))
                details.append(
                    f"{name}: on its {probe['threads']} threads a {probe['matmul_size']}-wide matmul (INT8: as a 1x1 "
                    f"quantized convolution) reaches {rates} GFLOP/s (GOP/s for INT8); CPU flags: "
                    f"{', '.join(probe['cpu_flags']) or 'none'}"
                )
        accuracy = accuracies.get(name)
        if accuracy:
            details.append(f"{name}: accuracy on {accuracy['images']} images, {accuracy['detections']} detections")
        quantization = quantizations.get(name)
        if quantization:
            details.append(quantization_detail(name, quantization))
    return ["", *names], rows, details


def quantization_detail(name, quantization):
    """How a self-made INT8 model was made, and whether it was calibrated on the evaluation set."""
    images = len(quantization["calibration_images"])
    if quantization["from_evaluation_set"]:
        source = "drawn from val2017, the evaluation set (as most published INT8 results are)"
    else:
        source = f"from {quantization['calibration_dir']}"
    kept = ", ".join(quantization["kept_in_fp32"]) or "none"
    tuning = quantization.get("tuning")
    if tuning:
        outcome = "within" if tuning["met_tolerance"] else "NOT within"
        kept += (
            f"; accuracy-aware: {len(tuning['trials'])} trials, trial {tuning['chosen_trial']} kept, "
            f"{outcome} {tuning['tolerance']} of FP32's AP {number(tuning['fp32_ap'], 4)} on "
            f"{tuning['tuning_images']} images (tuning history below)"
        )
    return (
        f"{name}: quantized here with Intel Neural Compressor, {quantization['quantized_convolutions']} of "
        f"{quantization['convolutions']} convolutions in INT8, {quantization['weight_granularity']} weights, "
        f"calibrated on {images} images {source} (seed {quantization['seed']}); kept in FP32: {kept}"
    )


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


def stage_costs(paths):
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


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join([label, *values]) + " |" for label, values in rows]


def title(models):
    architectures = ", ".join(dict.fromkeys(model["architecture"] for model in models.values()))
    return f"Object detection on COCO val2017: {architectures}"


def markdown(heading, matrix, header, rows, details, sections, plots):
    lines = [f"# {heading}", "", MATRIX_NOTE, "", *markdown_table(MATRIX_HEADER, matrix)]
    if "speedup_vs_accuracy" in plots:
        lines += ["", f"![speedup_vs_accuracy]({plots['speedup_vs_accuracy']})"]
    if GALLERY in plots:
        lines += ["", "## Detections by model", "", GALLERY_NOTE, "", f"![{GALLERY}]({plots[GALLERY]})"]
    lines += ["", "## Every figure", "", *markdown_table(header, rows)]
    lines += ["", *[f"- {detail}" for detail in details], ""]
    for title, note, section_header, section_rows in sections:
        if section_rows:
            lines += [f"## {title}", "", note, "", *markdown_table(section_header, section_rows), ""]
    lines += [
        "AP figures are pycocotools COCOeval (bbox) against instances_val2017.json. The legacy rows",
        "reproduce how the published numbers were computed: ground truth from the TFRecord, crowd",
        "boxes scored as ordinary objects, areas from normalized boxes (every object 'small').",
        "",
        *[f"![{name}]({path})" for name, path in plots.items() if name != GALLERY],
        "",
    ]
    return "\n".join(lines)


GALLERY = "gallery"
GALLERY_NOTE = (
    "The first scored images with ground truth, in image id order: the ground truth, then each model's "
    "detections at score 0.5 or more, with class and score."
)
MATRIX_NOTE = (
    "Each model beside its reference (its architecture's FP32): speed-up is throughput over the "
    "reference's, AP lost the reference's standard AP minus the model's. Legacy AP is the recipe's "
    "evaluator; published AP is Intel's, from its zoo's sample logs."
)
PROFILE_NOTE = (
    "Op time summed over traced steps run after the timed ones, by the name scope of each node "
    "(fused oneDNN kernels keep their scope), per image. Ops overlap little with one inter-op thread, "
    "so the total is close to a step's latency."
)
INSTANCES_NOTE = (
    "N copies of the graph on disjoint core sets of the node, each over its own images, started "
    "together; throughput summed over the window in which all ran, warm-up excluded in each."
)
DRIFT_NOTE = (
    "Cosine similarity of each model's activations with its reference's on the same images, at the end of "
    "each ResNet block (each MobileNet layer or MobileNetV2 block) and at the heads (the JSON and the plot have "
    "every unit). It "
    "accumulates: the largest drop from the layer upstream is where the error comes in."
)
TUNING_NOTE = (
    "Neural Compressor's accuracy-aware tuning: each trial's COCO AP on the tuning images and the "
    "convolutions it kept in FP32. In layer drift's order (fallback_order: largest_drift), trial 1 "
    "quantizes everything, and each next trial keeps one more unit in FP32, the one whose cosine with "
    "FP32 fell most in trial 1."
)
COST_NOTE = (
    "From Snakemake's benchmark files (benchmarks/): wall time summed over a stage's jobs, "
    "peak resident memory the largest of them."
)


def html_table(header, rows):
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in [label, *values]) + "</tr>" for label, values in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def html_page(heading, matrix, header, rows, details, sections, plots):
    items = "".join(f"<li>{html.escape(d)}</li>" for d in details)
    tables = "".join(
        f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p>{html_table(section_header, section_rows)}"
        for title, note, section_header, section_rows in sections
        if section_rows
    )
    images = "".join(
        f'<p><img src="{html.escape(path)}" alt="{html.escape(name)}"></p>'
        for name, path in plots.items()
        if name != GALLERY
    )
    gallery = (
        f"<h2>Detections by model</h2><p>{html.escape(GALLERY_NOTE)}</p>"
        f'<p><img src="{html.escape(plots[GALLERY])}" alt="{GALLERY}"></p>'
        if GALLERY in plots
        else ""
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h1>{html.escape(heading)}</h1><p>{html.escape(MATRIX_NOTE)}</p>"
        f"{html_table(MATRIX_HEADER, matrix)}{gallery}<h2>Every figure</h2>{html_table(header, rows)}"
        f"<ul>{items}</ul>{tables}{images}</body></html>\n"
    )


def save_figure(figure, path):
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


class Results:
    """Everything the report shows: the registry's models and each kind of result by model."""

    def __init__(
        self, models, benchmarks=None, accuracies=None, instances=None, agreements=None, drifts=None, quantizations=None
    ):
        self.models, self.order = models, column_order(models)
        self.benchmarks, self.accuracies = benchmarks or {}, accuracies or {}
        self.instances, self.agreements = instances or {}, agreements or {}
        self.drifts, self.quantizations = drifts or {}, quantizations or {}

    def ordered(self, results):
        """(model, result) in column order."""
        return [(name, results[name]) for name in self.order if name in results]

    def label(self, name):
        return f"{name} (emulated)" if self.benchmarks.get(name, {}).get("emulated") else name


def plot_latency_per_step(results, path):
    figure, axis = plt.subplots(figsize=(8, 4))
    for name, result in results.ordered(results.benchmarks):
        milliseconds = np.array(result["step_seconds"]) * 1000
        axis.plot(np.arange(len(milliseconds)), milliseconds, label=results.label(name), linewidth=0.8)
        axis.axvline(result["warmup_steps"] - 0.5, color="gray", linestyle=":", linewidth=0.8)
    axis.set(xlabel="step", ylabel="latency (ms)", yscale="log", title="Latency per step (dotted: end of warm-up)")
    axis.legend()
    save_figure(figure, path)


def plot_latency_histogram(results, path):
    figure, axis = plt.subplots(figsize=(8, 4))
    for name, result in results.ordered(results.benchmarks):
        milliseconds = np.array(result["step_seconds"][result["warmup_steps"] :]) * 1000
        axis.hist(milliseconds, bins=40, alpha=0.6, label=results.label(name))
    axis.set(xlabel="latency (ms)", ylabel="steps", title="Latency after warm-up")
    axis.legend()
    save_figure(figure, path)


def plot_average_precision(results, path):
    keys = ("AP", "AP50", "AP75")
    accuracies = results.ordered(results.accuracies)
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(accuracies), 1)
    for index, (name, result) in enumerate(accuracies):
        values = [result["standard"][k] for k in keys] + [result["legacy"]["AP"]]
        axis.bar(np.arange(len(values)) + index * width, values, width, label=name)
    axis.set_xticks(np.arange(len(keys) + 1) + width * (len(accuracies) - 1) / 2, [*keys, "legacy AP"])
    axis.set(ylim=(0, 1), ylabel="average precision", title="COCO bbox average precision")
    axis.legend()
    save_figure(figure, path)


def plot_time_by_model_part(results, path):
    """Stacked bars: each model's traced time per image, by model part."""
    profiled = [(name, result) for name, result in results.ordered(results.benchmarks) if result.get("profile")]
    figure, axis = plt.subplots(figsize=(8, 4))
    bottoms = np.zeros(len(profiled))
    parts = part_order(result["profile"] for _, result in profiled)
    for part in parts:
        values = np.array(
            [result["profile"]["by_part_ms"].get(part, 0.0) / result["batch_size"] for _, result in profiled]
        )
        axis.bar([results.label(name) for name, _ in profiled], values, bottom=bottoms, label=part)
        bottoms += values
    if profiled:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no profile (benchmark.profile_steps: 0)", ha="center", transform=axis.transAxes)
    axis.set(ylabel="ms per image (traced)", title="Where the time goes, by model part")
    save_figure(figure, path)


def plot_throughput_by_instances(results, path):
    """Aggregate throughput per layout (instances x cores), one bar group per model."""
    table = layouts(results.benchmarks, results.instances)
    figure, axis = plt.subplots(figsize=(8, 4))
    counts = sorted({count for runs in table.values() for count in runs})
    width = 0.8 / max(len(table), 1)
    for index, (name, runs) in enumerate(results.ordered(table)):
        values = [runs[count][1] if count in runs else np.nan for count in counts]
        axis.bar(np.arange(len(counts)) + index * width, values, width, label=results.label(name))
    if table:
        axis.set_xticks(
            np.arange(len(counts)) + width * (len(table) - 1) / 2, [f"{count} instance(s)" for count in counts]
        )
        axis.legend()
    axis.set(ylabel="images/s (all instances)", title="Throughput by instances per node")
    save_figure(figure, path)


def plot_detection_agreement(results, path):
    """Share of its reference's detections each model reproduces, per class and overall."""
    agreements = results.ordered(results.agreements)
    figure, axis = plt.subplots(figsize=(8, 4))
    classes = sorted({int(k) for _, result in agreements for k in result["agreement_by_class"]})
    width = 0.8 / max(len(agreements), 1)
    for index, (name, result) in enumerate(agreements):
        values = [result["agreement_by_class"].get(str(k), np.nan) for k in classes] + [result["agreement"]]
        label = f"{name} vs {results.models[name]['reference']} (overall {result['agreement']:.3f})"
        axis.bar(np.arange(len(values)) + index * width, values, width, label=label)
    if agreements:
        axis.set_xticks(np.arange(len(classes) + 1) + width * (len(agreements) - 1) / 2, [*map(str, classes), "all"])
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no model compared with a reference", ha="center", transform=axis.transAxes)
    axis.set(
        ylim=(0, 1.05),
        xlabel="COCO category id",
        ylabel="reference detections reproduced",
        title="Detection agreement with the reference (same class, IoU >= 0.5)",
    )
    save_figure(figure, path)


def plot_layer_drift(results, path):
    """Cosine with the reference along the network, one line per model; block ends marked."""
    figure, axis = plt.subplots(figsize=(10, 4))
    ticks = {}
    for name, result in results.ordered(results.drifts):
        layers = [layer for layer in result["layers"] if layer["cosine"] is not None]
        label = f"{name} vs {results.models[name]['reference']}"
        axis.plot(np.arange(len(layers)), [layer["cosine"] for layer in layers], marker=".", label=label)
        ticks.update(
            {index: layer["layer"] for index, layer in enumerate(layers) if layer["block_end"] or layer["head"]}
        )
    if results.drifts:
        axis.set_xticks(list(ticks), list(ticks.values()), rotation=45, ha="right", fontsize=8)
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no model compared with a reference", ha="center", transform=axis.transAxes)
    axis.set(
        ylabel="cosine similarity with the reference", title="Layer drift: activations vs the reference, same images"
    )
    save_figure(figure, path)


def plot_speedup_vs_accuracy(results, path):
    """One point per model: speed-up over its reference against the AP it loses; references at
    (0, 1). Up and to the left is better."""
    figure, axis = plt.subplots(figsize=(8, 5))
    groups = group_by_architecture(results.models)
    for architecture, names in groups.items():
        points = [
            (
                name,
                ap_lost(results.accuracies, results.models, name),
                throughput_ratio(results.benchmarks, results.models, name),
            )
            for name in names
        ]
        points = [(name, lost, ratio) for name, lost, ratio in points if lost is not None and ratio is not None]
        if not points:
            continue
        axis.scatter([lost for _, lost, _ in points], [ratio for _, _, ratio in points], label=architecture, s=40)
        for name, lost, ratio in points:
            axis.annotate(results.label(name), (lost, ratio), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if axis.collections:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no model with both a benchmark and an accuracy", ha="center", transform=axis.transAxes)
    axis.axhline(1.0, color="gray", linestyle=":", linewidth=0.8)
    axis.axvline(0.0, color="gray", linestyle=":", linewidth=0.8)
    axis.set(
        xlabel="AP lost against the reference (COCO AP points)",
        ylabel="speed-up over the reference (throughput)",
        title="Speed-up against accuracy lost, one point per model",
    )
    save_figure(figure, path)


# What --plot NAME=PATH can draw.
PLOTS = {
    "speedup_vs_accuracy": plot_speedup_vs_accuracy,
    "latency_per_step": plot_latency_per_step,
    "latency_histogram": plot_latency_histogram,
    "time_by_model_part": plot_time_by_model_part,
    "throughput_by_instances": plot_throughput_by_instances,
    "average_precision": plot_average_precision,
    "detection_agreement": plot_detection_agreement,
    "layer_drift": plot_layer_drift,
}


def conversion_detail(summary):
    """What the TFRecord holds of the annotations: the legacy ground truth is the records'."""
    dropped, total = summary.get("annotations_dropped"), summary.get("annotations")
    if dropped is None:
        return None
    return (
        f"ground truth: {summary['records']} images; {dropped} of {total} annotations dropped by "
        "create_coco_tf_record.py (boxes past the image's edge or of zero size), so the legacy ground truth "
        f"has {summary['objects']} objects"
    )


def make_report(results, summary_path, html_path, plot_paths, cost_paths=None, conversion_path=None, gallery=None):
    """Write the summary (Markdown and HTML) and the plots; returns the main table. `gallery`:
    draw_gallery's picture, shown after the matrix."""
    unknown = sorted(set(plot_paths) - set(PLOTS))
    if unknown:
        raise StageError(f"no such plot: {', '.join(unknown)} (known: {', '.join(PLOTS)})")
    # (title, note, header, rows) of the tables below the main one; those without rows are left out.
    sections = [
        ("Where the time goes", PROFILE_NOTE, *profile_rows(results.models, results.benchmarks)),
        (
            "Throughput by instances",
            INSTANCES_NOTE,
            *instance_rows(results.models, results.benchmarks, results.instances),
        ),
        ("Layer drift", DRIFT_NOTE, *drift_rows(results.models, results.drifts)),
        ("Tuning history", TUNING_NOTE, TUNING_HEADER, tuning_rows(results.quantizations)),
        ("Cost per stage", COST_NOTE, COST_HEADER, stage_costs(cost_paths or {})),
    ]
    header, rows, details = table_rows(
        results.models, results.benchmarks, results.accuracies, results.quantizations, results.agreements
    )
    matrix = matrix_rows(results.models, results.benchmarks, results.accuracies, results.quantizations)
    if conversion_path is not None and (detail := conversion_detail(load_json(conversion_path))):
        details.append(detail)
    for name, path in plot_paths.items():
        with atomic_file(path) as temporary:
            PLOTS[name](results, temporary)
    # Plots are linked from the summary by their path relative to it.
    links = {name: os.path.relpath(path, Path(summary_path).parent) for name, path in plot_paths.items()}
    if gallery is not None:
        links = {GALLERY: os.path.relpath(gallery, Path(summary_path).parent), **links}
    heading = title(results.models)
    with atomic_file(html_path) as temporary:
        temporary.write_text(html_page(heading, matrix, header, rows, details, sections, links))
    with atomic_file(summary_path) as temporary:
        temporary.write_text(markdown(heading, matrix, header, rows, details, sections, links))
    log.info("report in %s", summary_path)
    return header, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", required=True, help="the registry as JSON: {model: {architecture, precision, reference, published}}"
    )
    for kind, example in (
        ("benchmark", "results/benchmark/MODEL.json"),
        ("accuracy", "results/accuracy/MODEL.json"),
        ("instances", "MODEL:N=results/benchmark/instances/MODEL-N.json"),
        ("agreement", "results/diagnostics/MODEL_agreement.json"),
        ("layer-drift", "results/diagnostics/MODEL_layer_drift.json"),
        ("quantization", "resources/models/MODEL/quantization.json"),
        ("cost", "STAGE:MODEL=benchmarks/STAGE/....tsv"),
    ):
        parser.add_argument(f"--{kind}", nargs="*", default=[], metavar="KEY=PATH", help=example)
    parser.add_argument("--conversion", type=Path, help="the TFRecord's summary.json (annotations dropped)")
    parser.add_argument("--summary", type=Path, required=True, help="summary.md to write")
    parser.add_argument("--html", type=Path, required=True, help="summary.html to write")
    parser.add_argument("--plot", nargs="*", default=[], metavar="NAME=PATH", help=f"plots: {', '.join(PLOTS)}")
    parser.add_argument("--gallery", type=Path, help="draw_gallery's PNG, shown after the matrix")
    args = parser.parse_args()
    try:
        models = json.loads(args.models)
    except json.JSONDecodeError as error:
        raise StageError(f"--models: not JSON ({error})") from None
    instances = {}
    for key, result in load_keyed(args.instances, "instances").items():
        name, _, count = key.partition(":")
        instances[(name, int(count))] = result
    results = Results(
        models,
        load_keyed(args.benchmark, "benchmark"),
        load_keyed(args.accuracy, "accuracy"),
        instances,
        load_keyed(args.agreement, "agreement"),
        load_keyed(args.layer_drift, "layer-drift"),
        load_keyed(args.quantization, "quantization"),
    )
    unknown = sorted({*results.benchmarks, *results.accuracies} - set(models))
    if unknown:
        raise StageError(f"results of models not in --models: {', '.join(unknown)}")
    make_report(
        results,
        args.summary,
        args.html,
        keyed_paths(args.plot, "plot"),
        keyed_paths(args.cost, "cost"),
        args.conversion,
        args.gallery,
    )


if __name__ == "__main__":
    run_main(main)
