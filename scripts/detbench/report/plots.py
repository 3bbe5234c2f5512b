"""The report's plots, one function each, drawn from Results into a PNG (`PLOTS`: what
`--plot NAME=PATH` can draw)."""

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402

from detbench.performance import OTHER_PART
from detbench.report.results import ap_lost, group_by_architecture, throughput_ratio
from detbench.report.sections import layouts, part_order


def save_figure(figure, path, bottom=0.0):
    """`bottom`: the share of the figure kept below the panels (for a legend placed there)."""
    figure.tight_layout(rect=(0, bottom, 1, 1))
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def architecture_panels(results, names, height=3.2, width=5.0):
    """One panel per architecture that has a model in `names`, side by side, each with its own
    scale (SSD's milliseconds beside Faster R-CNN's seconds); {architecture: (axis, [names])}."""
    groups = {
        architecture: [name for name in group if name in names]
        for architecture, group in group_by_architecture(results.models).items()
    }
    groups = {architecture: group for architecture, group in groups.items() if group}
    count = max(len(groups), 1)
    figure, axes = plt.subplots(1, count, figsize=(min(max(width * count, 8), 16), height), squeeze=False)
    for axis, architecture in zip(axes[0], groups):
        axis.set_title(architecture, fontsize=10)
    return figure, {architecture: (axis, groups[architecture]) for axis, architecture in zip(axes[0], groups)}


def say_empty(figure, text):
    figure.axes[0].text(0.5, 0.5, text, ha="center", transform=figure.axes[0].transAxes)


def part_colours(parts):
    """A distinct colour per model part, the same in every panel; "other" grey."""
    palette = [colour for index, colour in enumerate(plt.get_cmap("tab10").colors) if index != 7]
    palette += list(plt.get_cmap("Set2").colors)
    named = [part for part in parts if part != OTHER_PART]
    colours = {part: palette[index % len(palette)] for index, part in enumerate(named)}
    return {**colours, OTHER_PART: (0.75, 0.75, 0.75)}


def plot_latency_per_step(results, path):
    figure, panels = architecture_panels(results, results.benchmarks)
    for axis, names in panels.values():
        for name in names:
            result = results.benchmarks[name]
            milliseconds = np.array(result["step_seconds"]) * 1000
            axis.plot(np.arange(len(milliseconds)), milliseconds, label=results.label(name), linewidth=0.8)
            axis.axvline(result["warmup_steps"] - 0.5, color="gray", linestyle=":", linewidth=0.8)
        axis.set(xlabel="step", ylabel="latency (ms)", yscale="log")
        axis.legend(fontsize=8)
    figure.suptitle("Latency per step (dotted: end of warm-up)")
    save_figure(figure, path)


def plot_latency_histogram(results, path):
    figure, panels = architecture_panels(results, results.benchmarks)
    for axis, names in panels.values():
        for name in names:
            result = results.benchmarks[name]
            milliseconds = np.array(result["step_seconds"][result["warmup_steps"] :]) * 1000
            axis.hist(milliseconds, bins=30, alpha=0.6, label=results.label(name))
        axis.set(xlabel="latency (ms)", ylabel="steps")
        axis.legend(fontsize=8)
    figure.suptitle("Latency after warm-up")
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
    """Stacked horizontal bars per architecture: each model's traced time per image by part."""
    profiled = {name: result for name, result in results.benchmarks.items() if result.get("profile")}
    parts = part_order(result["profile"] for _, result in results.ordered(profiled))
    colours = part_colours(parts)
    figure, panels = architecture_panels(results, profiled, height=3.6)
    for axis, names in panels.values():
        lefts = np.zeros(len(names))
        labels = [results.label(name) for name in names]
        for part in parts:
            values = np.array(
                [
                    profiled[name]["profile"]["by_part_ms"].get(part, 0.0) / profiled[name]["batch_size"]
                    for name in names
                ]
            )
            if values.any():
                axis.barh(labels, values, left=lefts, color=colours[part], label=part)
            lefts += values
        axis.invert_yaxis()
        axis.set(xlabel="ms per image (traced)")
    if not profiled:
        say_empty(figure, "no profile (benchmark.profile_steps: 0)")
        save_figure(figure, path)
        return
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[part]) for part in parts]
    figure.legend(handles, parts, loc="lower center", ncol=min(len(parts), 4), fontsize=8, frameon=False)
    figure.suptitle("Where the time goes, by model part")
    save_figure(figure, path, bottom=0.06 * ((len(parts) + 3) // 4))


def plot_throughput_by_instances(results, path):
    """Aggregate throughput per layout (instances x cores), one bar group per model."""
    table = layouts(results.benchmarks, results.instances)
    counts = sorted({count for runs in table.values() for count in runs})
    figure, panels = architecture_panels(results, table)
    for axis, names in panels.values():
        width = 0.8 / len(names)
        for index, name in enumerate(names):
            values = [table[name][count][1] if count in table[name] else np.nan for count in counts]
            axis.bar(np.arange(len(counts)) + index * width, values, width, label=results.label(name))
        axis.set_xticks(np.arange(len(counts)) + width * (len(names) - 1) / 2, [f"{count} inst." for count in counts])
        axis.set(ylabel="images/s (all instances)")
        axis.legend(fontsize=8)
    figure.suptitle("Throughput by instances per node")
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


MARKERS = ("s", "^", "D", "v", "P", "X", "o")


def plot_speedup_vs_accuracy(results, path):
    """One point per model: speed-up over its reference against the AP it loses, with the
    speed-up's 95% interval over the benchmark's rounds; references are (0, 1), one star.
    Colour: architecture; marker: the model within it; filled: TensorFlow, hollow: OpenVINO.
    Up and to the left is better."""
    figure, axis = plt.subplots(figsize=(9, 5))
    colours = plt.get_cmap("tab10").colors
    references = False
    for index, (architecture, names) in enumerate(group_by_architecture(results.models).items()):
        points = [
            (
                name,
                ap_lost(results.accuracies, results.models, name),
                throughput_ratio(results.benchmarks, results.models, name),
            )
            for name in names
        ]
        points = [(name, lost, ratio) for name, lost, ratio in points if lost is not None and ratio is not None]
        references |= any(results.models[name]["reference"] is None for name, _, _ in points)
        compared = [point for point in points if results.models[point[0]]["reference"] is not None]
        for number, (name, lost, ratio) in enumerate(compared):
            engine = results.models[name].get("engine", "tensorflow")
            label = f"{results.label(name)} ({architecture}, {engine})"
            marker = MARKERS[number % len(MARKERS)]
            colour = colours[index % len(colours)]
            # The engine: filled for TensorFlow, hollow for OpenVINO.
            face = colour if engine == "tensorflow" else "none"
            axis.scatter(lost, ratio, facecolors=face, edgecolors=colour, marker=marker, s=50, alpha=0.85, label=label)
            estimate = results.benchmarks[name].get("speedup_over_rounds")
            if estimate is not None:  # its 95% interval over the benchmark's rounds
                below, above = ratio - estimate["low"], estimate["high"] - ratio
                axis.errorbar(lost, ratio, yerr=[[below], [above]], fmt="none", ecolor=colour, capsize=4, alpha=0.7)
    if references:
        axis.scatter(0, 1, color="black", marker="*", s=120, label="references (each architecture's FP32)")
    if axis.collections:
        axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        axis.text(0.5, 0.5, "no model with both a benchmark and an accuracy", ha="center", transform=axis.transAxes)
    axis.axhline(1.0, color="gray", linestyle=":", linewidth=0.8)
    axis.axvline(0.0, color="gray", linestyle=":", linewidth=0.8)
    # AP is reported to three decimals: an axis narrower than 0.01 would spread what rounds to 0.
    low, high = axis.get_xlim()
    if high - low < 0.01:
        axis.set_xlim((low + high) / 2 - 0.005, (low + high) / 2 + 0.005)
    axis.xaxis.set_major_formatter(FormatStrFormatter("%.3f"))
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
