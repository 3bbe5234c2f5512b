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
import json
import logging
import os
from pathlib import Path

from detbench.common import StageError, atomic_file, keyed_paths, run_main
from detbench.report.document import to_html, to_markdown
from detbench.report.plots import PLOTS
from detbench.report.results import Results, load_json, load_keyed
from detbench.report.summary import GALLERY, summary_document
from detbench.report.tables import gate_failures

log = logging.getLogger("make_report")


def make_report(results, summary_path, html_path, plot_paths, cost_paths=None, conversion_path=None, gallery=None):
    """Draw the plots, then write the summary in Markdown and HTML from one document; returns
    the document. `gallery`: draw_gallery's picture, shown after the matrix."""
    unknown = sorted(set(plot_paths) - set(PLOTS))
    if unknown:
        raise StageError(f"no such plot: {', '.join(unknown)} (known: {', '.join(PLOTS)})")
    failures = gate_failures(results.models, results.accuracies, results.gate)
    if failures and results.gate["on_fail"] == "fail":
        raise StageError(
            f"accuracy gate: {'; '.join(failures)}: fix the model, or set accuracy_gate.on_fail: warn to report it"
        )
    for failure in failures:
        log.warning("accuracy gate FAIL: %s", failure)
    conversion = load_json(conversion_path) if conversion_path is not None else None
    for name, path in plot_paths.items():
        with atomic_file(path) as temporary:
            PLOTS[name](results, temporary)
    # Plots are linked from the summary by their path relative to it.
    links = {name: os.path.relpath(path, Path(summary_path).parent) for name, path in plot_paths.items()}
    if gallery is not None:
        links = {GALLERY: os.path.relpath(gallery, Path(summary_path).parent), **links}
    document = summary_document(results, links, cost_paths, conversion)
    with atomic_file(html_path) as temporary:
        temporary.write_text(to_html(document))
    with atomic_file(summary_path) as temporary:
        temporary.write_text(to_markdown(document))
    log.info("report in %s", summary_path)
    return document


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", required=True, help="the registry as JSON: {model: {architecture, precision, reference, published}}"
    )
    for kind, example in (
        ("benchmark", "results/benchmark/MODEL.json"),
        ("accuracy", "results/accuracy/MODEL.json"),
        ("repeat", "MODEL:R=results/benchmark/repeats/MODEL-R.json (rounds 2, 3, ...)"),
        ("instances", "MODEL:N=results/benchmark/instances/MODEL-N.json"),
        ("loadgen", "MODEL:SCENARIO=results/loadgen/MODEL/SCENARIO.json"),
        ("loadgen-accuracy", "results/loadgen/MODEL/accuracy.json"),
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
    parser.add_argument(
        "--accuracy-gate", type=json.loads, help="the config's accuracy_gate as JSON: ratio, metric, reference, on_fail"
    )
    args = parser.parse_args()
    try:
        models = json.loads(args.models)
    except json.JSONDecodeError as error:
        raise StageError(f"--models: not JSON ({error})") from None
    instances = {}
    for key, result in load_keyed(args.instances, "instances").items():
        name, _, count = key.partition(":")
        instances[(name, int(count))] = result
    repeats = {}
    for key, result in sorted(load_keyed(args.repeat, "repeat").items(), key=lambda item: item[1]["repeat"]):
        repeats.setdefault(key.partition(":")[0], []).append(result)
    loadgen = {tuple(key.split(":", 1)): result for key, result in load_keyed(args.loadgen, "loadgen").items()}
    results = Results(
        models,
        load_keyed(args.benchmark, "benchmark"),
        load_keyed(args.accuracy, "accuracy"),
        instances,
        load_keyed(args.agreement, "agreement"),
        load_keyed(args.layer_drift, "layer-drift"),
        load_keyed(args.quantization, "quantization"),
        args.accuracy_gate,
        loadgen,
        load_keyed(args.loadgen_accuracy, "loadgen-accuracy"),
        repeats,
    )
    unknown = sorted({*results.benchmarks, *results.accuracies, *(name for name, _ in loadgen)} - set(models))
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
