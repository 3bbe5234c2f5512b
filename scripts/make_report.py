#!/usr/bin/env python3
"""Summarise benchmark and accuracy results: one INT8/FP32 table (Markdown and HTML) and plots.

Plots (PNG): latency per step, latency histogram (warm-up excluded), AP per precision, and
where INT8 loses accuracy: detection agreement with FP32 per class, cosine drift layer by layer.
Further tables give the layer drift at each block end and head, and each stage's cost (wall
time, peak memory) from Snakemake's benchmark files.
"""

import argparse
import html
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common import StageError, atomic_file, run_main  # noqa: E402

log = logging.getLogger("make_report")

PLOTS = ("latency_per_step.png", "latency_histogram.png", "time_by_model_part.png", "throughput_by_instances.png",
         "average_precision.png", "detection_agreement.png", "layer_drift.png")
# The workflow's stages in the order they run, for the cost table.
STAGES = ("download_file", "extract_coco_images", "extract_coco_annotations", "write_empty_annotations",
          "checkout_tensorflow_models", "convert_coco_to_tfrecord", "prepare_frozen_graph", "quantize_graph",
          "benchmark_graph", "benchmark_instances", "detect_objects", "evaluate_accuracy", "compare_with_fp32",
          "measure_layer_drift")  # fmt: skip
COST_HEADER = ["Stage", "Precision", "Jobs", "Wall time (s)", "Peak memory (MB)"]


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StageError(f"cannot read {path}: {error}") from None


def load_results(paths):
    """{precision: result} from files named <precision>.json."""
    return {Path(path).stem: load_json(path) for path in paths}


def number(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def significant(value):
    return "n/a" if value is None else f"{value:.3g}"


def percent(value):
    return "n/a" if value is None else f"{100 * value:.0f}%"


def speedup_over_fp32(benchmarks, precision):
    if precision == "fp32" or precision not in benchmarks or "fp32" not in benchmarks:
        return ""
    ratio = benchmarks[precision]["throughput_images_per_second"] / benchmarks["fp32"]["throughput_images_per_second"]
    return f"{ratio:.2f}x"


def table_rows(benchmarks, accuracies, references, quantizations=None, agreements=None):
    """(header, rows, details): one column per model (FP32 last), one row per figure."""
    quantizations = quantizations or {}
    agreements = agreements or {}
    precisions = sorted(set(benchmarks) | set(accuracies), key=lambda p: (p == "fp32", p))

    def bench(precision, key):
        result = benchmarks.get(precision)
        return None if result is None else result["latency_ms"][key]

    def roof(precision, key):
        result = benchmarks.get(precision)
        return None if result is None or not result.get("roofline") else result["roofline"][key]

    def metric(precision, family, key):
        result = accuracies.get(precision)
        return None if result is None else result[family][key]

    rows = [
        ("Latency p50 (ms)", [number(bench(p, "p50"), 2) for p in precisions]),
        ("Latency p90 (ms)", [number(bench(p, "p90"), 2) for p in precisions]),
        ("Latency p99 (ms)", [number(bench(p, "p99"), 2) for p in precisions]),
        (
            "Throughput (images/s)",
            [number(benchmarks[p]["throughput_images_per_second"], 2) if p in benchmarks else "n/a" for p in precisions],
        ),
        ("Speed-up over FP32 (throughput)", [speedup_over_fp32(benchmarks, p) for p in precisions]),
        ("GFLOPs per image (executed)", [significant(roof(p, "gflops_per_image")) for p in precisions]),
        ("Achieved GFLOP/s (INT8: GOP/s)", [significant(roof(p, "achieved_gflops_per_second")) for p in precisions]),
        ("Share of a matmul's rate (same threads)", [percent(roof(p, "fraction_of_probe")) for p in precisions]),
    ]
    for key, label in (("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("AP_small", "AP small"),
                       ("AP_medium", "AP medium"), ("AP_large", "AP large")):  # fmt: skip
        rows.append((label, [number(metric(p, "standard", key)) for p in precisions]))
    rows.append(("Legacy AP (recipe's evaluator)", [number(metric(p, "legacy", "AP")) for p in precisions]))
    rows.append(("Legacy AP50", [number(metric(p, "legacy", "AP50")) for p in precisions]))
    if agreements:
        rows.append(("FP32 detections reproduced", [number(agreements[p]["agreement"]) if p in agreements else "" for p in precisions]))  # fmt: skip
        rows.append(("Mean score drift vs FP32", [number(agreements[p]["mean_score_drift"], 4) if p in agreements else "" for p in precisions]))  # fmt: skip
    rows.append(
        ("Published (Intel)", [", ".join(f"{k} {v}" for k, v in references.get(p, {}).items()) or "n/a" for p in precisions])
    )
    details = []
    for precision in precisions:
        result = benchmarks.get(precision)
        if result:
            size = f", images resized to {result['image_size'][0]}x{result['image_size'][1]}" if result["images_resized"] else ""
            details.append(
                f"{precision}: batch {result['batch_size']}{size}, {result['measured_steps']} steps measured after "
                f"{result['warmup_steps']} warm-up, {result['runtime']['intra_op_threads']} intra-op threads, "
                f"oneDNN {'on' if result['onednn'] else 'off'}, TCMalloc {'on' if result['runtime']['tcmalloc'] else 'off'}, "
                f"TensorFlow {result['tensorflow_version']}, {result['cpu_model']}"
            )
            probe = result.get("probe")
            if probe:
                rates = ", ".join(f"{k.upper()} {v:.1f}" for k, v in sorted(probe["gflops_per_second"].items()))
                details.append(
                    f"{precision}: on its {probe['threads']} threads a {probe['matmul_size']}-wide matmul (INT8: as a 1x1 "
                    f"quantized convolution) reaches {rates} GFLOP/s (GOP/s for INT8); CPU flags: "
                    f"{', '.join(probe['cpu_flags']) or 'none'}"
                )
        accuracy = accuracies.get(precision)
        if accuracy:
            details.append(f"{precision}: accuracy on {accuracy['images']} images, {accuracy['detections']} detections")
        quantization = quantizations.get(precision)
        if quantization:
            details.append(quantization_detail(precision, quantization))
    return ["", *precisions], rows, details


def quantization_detail(precision, quantization):
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
        kept += (f"; accuracy-aware: {len(tuning['trials'])} trials, trial {tuning['chosen_trial']} kept, "
                 f"{outcome} {tuning['tolerance']} of FP32's AP {number(tuning['fp32_ap'], 4)} on "
                 f"{tuning['tuning_images']} images (tuning history below)")  # fmt: skip
    return (
        f"{precision}: quantized here with Intel Neural Compressor, {quantization['quantized_convolutions']} of "
        f"{quantization['convolutions']} convolutions in INT8, {quantization['weight_granularity']} weights, "
        f"calibrated on {images} images {source} (seed {quantization['seed']}); kept in FP32: {kept}"
    )


def drift_rows(drifts):
    """(header, rows): cosine vs FP32 at each block end and head, one column per INT8 model."""
    if not drifts:
        return [], []
    models = sorted(drifts)
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
    return ["Cosine vs FP32", *models], rows


def profile_rows(benchmarks):
    """(header, rows): traced milliseconds per image by model part, and each INT8 model's
    speed-up over FP32 per part."""
    profiled = {p: r["profile"] for p, r in benchmarks.items() if r.get("profile")}
    if not profiled:
        return [], []
    models = sorted(profiled, key=lambda p: (p == "fp32", p))
    compared = [p for p in models if p != "fp32" and "fp32" in profiled]
    parts = list(next(iter(profiled.values()))["by_part_ms"])
    rows = []
    for part in [*parts, "total"]:
        values = {p: (profiled[p]["op_time_ms"] if part == "total" else profiled[p]["by_part_ms"][part]) / benchmarks[p]["batch_size"] for p in models}  # fmt: skip
        speedups = [f"{values['fp32'] / values[p]:.2f}x" if values[p] > 0 else "n/a" for p in compared]
        rows.append((part, [number(values[p], 1) for p in models] + speedups))
    return ["Model part (ms per image)", *models, *[f"{p} speed-up" for p in compared]], rows


def layouts(benchmarks, instance_results):
    """{precision: {instances: (cores per instance, images/s, pooled p50 ms)}}, the plain benchmark as 1."""
    table = {}
    for precision, result in benchmarks.items():
        cores = result["runtime"]["intra_op_threads"]
        table.setdefault(precision, {})[1] = (cores, result["throughput_images_per_second"], result["latency_ms"]["p50"])
    for (precision, count), result in instance_results.items():
        table.setdefault(precision, {})[count] = (
            result["cores_per_instance"], result["throughput_images_per_second"], result["latency_ms"]["p50"]
        )
    return table


def instance_rows(benchmarks, instance_results):
    """(header, rows) of throughput by layout; empty unless a layout of several instances ran."""
    if not instance_results:
        return [], []
    table = layouts(benchmarks, instance_results)
    models = sorted(table, key=lambda p: (p == "fp32", p))
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
            rows.append((f"{trial['trial']}{chosen}", [model, number(trial["ap"], 4), drop, ", ".join(trial["kept_in_fp32"]) or "none"]))  # fmt: skip
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


def stage_costs(paths, precisions):
    """Rows of the cost table: per stage and precision, jobs, summed wall time, largest peak memory.

    Files are benchmarks/<rule>.tsv, or benchmarks/<rule>/<wildcards>.tsv whose name starts
    with the precision for per-precision rules.
    """
    costs = {}
    for path in map(Path, paths):
        nested = path.parent.name in STAGES
        stage = path.parent.name if nested else path.stem
        first = path.stem.split("-")[0]
        precision = first if nested and first in precisions else "all"
        seconds, peak = read_benchmark_file(path)
        jobs, total, largest = costs.get((stage, precision), (0, 0.0, None))
        if peak is not None:
            largest = peak if largest is None else max(largest, peak)
        costs[(stage, precision)] = (jobs + 1, total + seconds, largest)
    order = {stage: index for index, stage in enumerate(STAGES)}
    return [
        (stage, [precision, str(jobs), f"{seconds:.1f}", number(peak, 0)])
        for (stage, precision), (jobs, seconds, peak) in sorted(
            costs.items(), key=lambda item: (order.get(item[0][0], len(order)), item[0][1])
        )
    ]


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join([label, *values]) + " |" for label, values in rows]


def markdown(header, rows, details, sections):
    lines = ["# R-FCN ResNet101 on COCO val2017: INT8 and FP32", "", *markdown_table(header, rows)]
    lines += ["", *[f"- {detail}" for detail in details], ""]
    for title, note, section_header, section_rows in sections:
        if section_rows:
            lines += [f"## {title}", "", note, "", *markdown_table(section_header, section_rows), ""]
    lines += [
        "AP figures are pycocotools COCOeval (bbox) against instances_val2017.json. The legacy rows",
        "reproduce how the published numbers were computed: ground truth from the TFRecord, crowd",
        "boxes scored as ordinary objects, areas from normalized boxes (every object 'small').",
        "",
        *[f"![{name}]({name})" for name in PLOTS],
        "",
    ]
    return "\n".join(lines)


PROFILE_NOTE = ("Op time summed over traced steps run after the timed ones, by the name scope of each node "
                "(fused oneDNN kernels keep their scope), per image. Ops overlap little with one inter-op thread, "
                "so the total is close to a step's latency.")  # fmt: skip
INSTANCES_NOTE = ("N copies of the graph on disjoint core sets of the node, each over its own images, started "
                  "together; throughput summed over the window in which all ran, warm-up excluded in each.")  # fmt: skip
DRIFT_NOTE = ("Cosine similarity of each INT8 graph's activations with FP32's on the same images, at the end of "
              "each ResNet block and at the heads (the JSON and the plot have every unit). It accumulates: the "
              "largest drop from the layer upstream is where the error comes in.")  # fmt: skip
TUNING_NOTE = ("Neural Compressor's accuracy-aware tuning: each trial's COCO AP on the tuning images and the "
               "convolutions it kept in FP32.")  # fmt: skip
COST_NOTE = ("From Snakemake's benchmark files (benchmarks/): wall time summed over a stage's jobs, "
             "peak resident memory the largest of them.")  # fmt: skip


def html_table(header, rows):
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in [label, *values]) + "</tr>" for label, values in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def html_page(header, rows, details, sections):
    items = "".join(f"<li>{html.escape(d)}</li>" for d in details)
    tables = "".join(
        f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p>{html_table(section_header, section_rows)}"
        for title, note, section_header, section_rows in sections
        if section_rows
    )
    images = "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in PLOTS)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>R-FCN ResNet101 INT8 vs FP32</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h1>R-FCN ResNet101 on COCO val2017: INT8 and FP32</h1>{html_table(header, rows)}"
        f"<ul>{items}</ul>{tables}{images}</body></html>\n"
    )


def save_figure(figure, path):
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def plot_latency(benchmarks, per_step_path, histogram_path):
    figure, axis = plt.subplots(figsize=(8, 4))
    for precision, result in sorted(benchmarks.items()):
        milliseconds = np.array(result["step_seconds"]) * 1000
        axis.plot(np.arange(len(milliseconds)), milliseconds, label=precision, linewidth=0.8)
        axis.axvline(result["warmup_steps"] - 0.5, color="gray", linestyle=":", linewidth=0.8)
    axis.set(xlabel="step", ylabel="latency (ms)", yscale="log", title="Latency per step (dotted: end of warm-up)")
    axis.legend()
    save_figure(figure, per_step_path)
    figure, axis = plt.subplots(figsize=(8, 4))
    for precision, result in sorted(benchmarks.items()):
        milliseconds = np.array(result["step_seconds"][result["warmup_steps"] :]) * 1000
        axis.hist(milliseconds, bins=40, alpha=0.6, label=precision)
    axis.set(xlabel="latency (ms)", ylabel="steps", title="Latency after warm-up")
    axis.legend()
    save_figure(figure, histogram_path)


def plot_precision(accuracies, path):
    keys = ("AP", "AP50", "AP75")
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(accuracies), 1)
    for index, (precision, result) in enumerate(sorted(accuracies.items())):
        values = [result["standard"][k] for k in keys] + [result["legacy"]["AP"]]
        axis.bar(np.arange(len(values)) + index * width, values, width, label=precision)
    axis.set_xticks(np.arange(len(keys) + 1) + width * (len(accuracies) - 1) / 2, [*keys, "legacy AP"])
    axis.set(ylim=(0, 1), ylabel="average precision", title="COCO bbox average precision")
    axis.legend()
    save_figure(figure, path)


def plot_profile(benchmarks, path):
    """Stacked bars: each model's traced time per image, by model part."""
    profiled = {p: r for p, r in benchmarks.items() if r.get("profile")}
    figure, axis = plt.subplots(figsize=(8, 4))
    models = sorted(profiled, key=lambda p: (p == "fp32", p))
    bottoms = np.zeros(len(models))
    parts = list(next(iter(profiled.values()))["profile"]["by_part_ms"]) if profiled else []
    for part in parts:
        values = np.array([profiled[p]["profile"]["by_part_ms"][part] / profiled[p]["batch_size"] for p in models])
        axis.bar(models, values, bottom=bottoms, label=part)
        bottoms += values
    if profiled:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no profile (benchmark.profile_steps: 0)", ha="center", transform=axis.transAxes)
    axis.set(ylabel="ms per image (traced)", title="Where the time goes, by model part")
    save_figure(figure, path)


def plot_instances(benchmarks, instance_results, path):
    """Aggregate throughput per layout (instances x cores), one bar group per model."""
    table = layouts(benchmarks, instance_results)
    figure, axis = plt.subplots(figsize=(8, 4))
    counts = sorted({count for runs in table.values() for count in runs})
    width = 0.8 / max(len(table), 1)
    for index, model in enumerate(sorted(table, key=lambda p: (p == "fp32", p))):
        values = [table[model][count][1] if count in table[model] else np.nan for count in counts]
        axis.bar(np.arange(len(counts)) + index * width, values, width, label=model)
    if table:
        axis.set_xticks(np.arange(len(counts)) + width * (len(table) - 1) / 2, [f"{count} instance(s)" for count in counts])
        axis.legend()
    axis.set(ylabel="images/s (all instances)", title="Throughput by instances per node")
    save_figure(figure, path)


def plot_agreement(agreements, path):
    """Share of FP32 detections each INT8 model reproduces, per class and overall."""
    figure, axis = plt.subplots(figsize=(8, 4))
    classes = sorted({int(k) for result in agreements.values() for k in result["agreement_by_class"]})
    width = 0.8 / max(len(agreements), 1)
    for index, (model, result) in enumerate(sorted(agreements.items())):
        values = [result["agreement_by_class"].get(str(k), np.nan) for k in classes] + [result["agreement"]]
        axis.bar(np.arange(len(values)) + index * width, values, width, label=f"{model} (overall {result['agreement']:.3f})")
    if agreements:
        axis.set_xticks(np.arange(len(classes) + 1) + width * (len(agreements) - 1) / 2, [*map(str, classes), "all"])
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no INT8 model compared with FP32", ha="center", transform=axis.transAxes)
    axis.set(ylim=(0, 1.05), xlabel="COCO category id", ylabel="FP32 detections reproduced",
             title="Detection agreement with FP32 (same class, IoU >= 0.5)")  # fmt: skip
    save_figure(figure, path)


def plot_layer_drift(drifts, path):
    """Cosine with FP32 along the network, one line per INT8 model; block ends marked."""
    figure, axis = plt.subplots(figsize=(10, 4))
    ticks = {}
    for model, result in sorted(drifts.items()):
        layers = [layer for layer in result["layers"] if layer["cosine"] is not None]
        axis.plot(np.arange(len(layers)), [layer["cosine"] for layer in layers], marker=".", label=model)
        ticks.update({index: layer["layer"] for index, layer in enumerate(layers) if layer["block_end"] or layer["head"]})
    if drifts:
        axis.set_xticks(list(ticks), list(ticks.values()), rotation=45, ha="right", fontsize=8)
        axis.legend()
    else:
        axis.text(0.5, 0.5, "no INT8 model compared with FP32", ha="center", transform=axis.transAxes)
    axis.set(ylabel="cosine similarity with FP32", title="Layer drift: INT8 activations vs FP32, same images")
    save_figure(figure, path)


def conversion_detail(summary):
    """What the TFRecord holds of the annotations: the legacy ground truth is the records'."""
    dropped, total = summary.get("annotations_dropped"), summary.get("annotations")
    if dropped is None:
        return None
    return (f"ground truth: {summary['records']} images; {dropped} of {total} annotations dropped by "
            "create_coco_tf_record.py (boxes past the image's edge or of zero size), so the legacy ground truth "
            f"has {summary['objects']} objects")  # fmt: skip


def make_report(
    benchmark_paths, accuracy_paths, references, output_dir, cost_paths=(), quantization_paths=(), agreement_paths=(),
    drift_paths=(), instance_paths=(), conversion_path=None,
):  # fmt: skip
    benchmarks, accuracies = load_results(benchmark_paths), load_results(accuracy_paths)
    # resources/models/<precision>/quantization.json: named by their folder
    quantizations = {Path(path).parent.name: load_json(path) for path in quantization_paths}
    # results/diagnostics/<precision>_agreement.json
    agreements = {Path(path).stem.removesuffix("_agreement"): load_json(path) for path in agreement_paths}
    # results/diagnostics/<precision>_layer_drift.json
    drifts = {Path(path).stem.removesuffix("_layer_drift"): load_json(path) for path in drift_paths}
    # results/benchmark/instances/<precision>-<instances>.json
    instance_results = {}
    for path in instance_paths:
        precision, count = Path(path).stem.rsplit("-", 1)
        instance_results[(precision, int(count))] = load_json(path)
    # (title, note, header, rows) of the tables below the main one; those without rows are left out.
    sections = [
        ("Where the time goes", PROFILE_NOTE, *profile_rows(benchmarks)),
        ("Throughput by instances", INSTANCES_NOTE, *instance_rows(benchmarks, instance_results)),
        ("Layer drift", DRIFT_NOTE, *drift_rows(drifts)),
        ("Tuning history", TUNING_NOTE, TUNING_HEADER, tuning_rows(quantizations)),
        ("Cost per stage", COST_NOTE, COST_HEADER, stage_costs(cost_paths, set(benchmarks) | set(accuracies))),
    ]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    header, rows, details = table_rows(benchmarks, accuracies, references, quantizations, agreements)
    if conversion_path is not None and (detail := conversion_detail(load_json(conversion_path))):
        details.append(detail)
    outputs = {name: output_dir / name for name in ("summary.md", "summary.html", *PLOTS)}
    with atomic_file(outputs["latency_per_step.png"]) as per_step, atomic_file(outputs["latency_histogram.png"]) as hist:
        plot_latency(benchmarks, per_step, hist)
    with atomic_file(outputs["average_precision.png"]) as temporary:
        plot_precision(accuracies, temporary)
    with atomic_file(outputs["time_by_model_part.png"]) as temporary:
        plot_profile(benchmarks, temporary)
    with atomic_file(outputs["throughput_by_instances.png"]) as temporary:
        plot_instances(benchmarks, instance_results, temporary)
    with atomic_file(outputs["detection_agreement.png"]) as temporary:
        plot_agreement(agreements, temporary)
    with atomic_file(outputs["layer_drift.png"]) as temporary:
        plot_layer_drift(drifts, temporary)
    with atomic_file(outputs["summary.html"]) as temporary:
        temporary.write_text(html_page(header, rows, details, sections))
    with atomic_file(outputs["summary.md"]) as temporary:
        temporary.write_text(markdown(header, rows, details, sections))
    log.info("report in %s", output_dir)
    return header, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=Path, nargs="*", default=[], help="results/benchmark/<precision>.json")
    parser.add_argument("--accuracies", type=Path, nargs="*", default=[], help="results/accuracy/<precision>.json")
    parser.add_argument("--costs", type=Path, nargs="*", default=[], help="Snakemake benchmark files (benchmarks/)")
    parser.add_argument("--quantization", type=Path, nargs="*", default=[], help="quantize_graph reports")
    parser.add_argument("--agreements", type=Path, nargs="*", default=[], help="compare_detections results")
    parser.add_argument("--instances", type=Path, nargs="*", default=[], help="benchmark_instances results")
    parser.add_argument("--layer-drift", type=Path, nargs="*", default=[], help="measure_layer_drift results")
    parser.add_argument("--references", default="{}", help="published figures as JSON: {precision: {AP: ...}}")
    parser.add_argument("--conversion", type=Path, help="the TFRecord's summary.json (annotations dropped)")
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args()
    make_report(
        args.benchmarks, args.accuracies, json.loads(args.references), args.output_dir, args.costs, args.quantization,
        args.agreements, args.layer_drift, args.instances, args.conversion,
    )  # fmt: skip


if __name__ == "__main__":
    run_main(main)
