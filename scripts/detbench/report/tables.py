"""The main tables as pure functions, results in, rows out: the matrix (a row per model) and
the full table (a column per model, a row per figure), with the lines that explain them."""

import re

from detbench.intervals import holds
from detbench.job_runtime import INT8_FLAGS, int8_native
from detbench.report.results import ap_lost, column_order, matrix_order, throughput_ratio


def number(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def significant(value):
    return "n/a" if value is None else f"{value:.3g}"


def percent(value, digits=0):
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def with_interval(estimate, digits=2):
    """A median and its 95% interval, e.g. "1291.20 [1270.02, 1310.51]"."""
    return f"{estimate['median']:.{digits}f} [{estimate['low']:.{digits}f}, {estimate['high']:.{digits}f}]"


def benchmark_figure(benchmark, *keys, digits=2):
    """A benchmark's figure with its interval over rounds where it has one, e.g. ("latency_ms", "p50")."""
    if not benchmark:
        return "n/a"
    estimate = benchmark.get("over_rounds")
    for key in keys:
        estimate = None if estimate is None else estimate.get(key)
    if estimate is not None:
        return with_interval(estimate, digits)
    value = benchmark
    for key in keys:
        value = value.get(key)
    return number(value, digits)


MATRIX_HEADER = [
    "Model",
    "Architecture",
    "Precision",
    "Engine",
    "Latency p50 (ms)",
    "Throughput (images/s)",
    "AP",
    "Legacy AP",
    "Published AP",
    "Speed-up over reference",
    "Speed-up over TensorFlow",
    "AP lost",
    "Accuracy gate",
]


def matrix_rows(models, benchmarks, accuracies, quantizations=None, gate=None):
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
                    engine_label(models, name),
                    benchmark_figure(benchmark, "latency_ms", "p50"),
                    benchmark_figure(benchmark, "throughput_images_per_second"),
                    number(accuracy["standard"]["AP"]) if accuracy else "n/a",
                    number(accuracy["legacy"]["AP"]) + legacy_scope(accuracy) if accuracy else "n/a",
                    models[name]["published"].get("AP", "n/a"),
                    "reference" if reference is None else speedup(benchmarks, models, name, "n/a"),
                    engine_speedup(benchmarks, models, name),
                    "" if reference is None else number(None if lost is None else round(lost, 3) + 0.0),  # no "-0.000"
                    gate_text(accuracy_gate(models, accuracies, gate, name), reference) if gate else "",
                ],
            )
        )
    return rows


def accuracy_gate(models, accuracies, gate, name):
    """(PASS or FAIL, what was compared) of a model against its reference's figure (`gate`: the
    config's accuracy_gate); None for a reference, without a gate, or where a figure is missing."""
    reference = models[name]["reference"]
    if reference is None or not gate:
        return None
    metric = gate["metric"]
    value = value_at(accuracies, name, "standard", metric)
    if gate["reference"] == "published":
        published = re.match(r"\d*\.?\d+", models[reference]["published"].get(metric, ""))
        reference_value, source = (float(published.group()) if published else None), f"{reference}'s published"
    else:
        reference_value, source = value_at(accuracies, reference, "standard", metric), f"{reference}'s"
    if value is None or reference_value is None:
        return None
    target = gate["ratio"] * reference_value
    status = "PASS" if value >= target else "FAIL"
    return status, (
        f"{metric} {value:.3f}, target {target:.3f} ({100 * gate['ratio']:g}% of {source} {reference_value:.3f})"
    )


def gate_text(verdict, reference):
    if reference is None:
        return ""
    return "n/a" if verdict is None else f"{verdict[0]}: {verdict[1]}"


def gate_failures(models, accuracies, gate):
    """One line per model under its target: what the report says, or stops with."""
    verdicts = {name: accuracy_gate(models, accuracies, gate, name) for name in matrix_order(models)}
    return [f"{name} {verdict[1]}" for name, verdict in verdicts.items() if verdict and verdict[0] == "FAIL"]


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
    estimate = benchmarks.get(name, {}).get("speedup_over_rounds")
    if estimate is not None:
        text = f"{estimate['median']:.2f}x [{estimate['low']:.2f}, {estimate['high']:.2f}] over {reference}"
        return text + (": no difference measured" if holds(estimate) else "")
    ratio = throughput_ratio(benchmarks, models, name)
    return missing if ratio is None else f"{ratio:.2f}x over {reference}"


def engine_label(models, name):
    return models[name].get("engine", "tensorflow")


def engine_version(result):
    """e.g. "TensorFlow 2.21.0" or "OpenVINO 2026.4.1" (results from before engines: TensorFlow)."""
    if result.get("engine") == "openvino":
        return f"OpenVINO {result['engine_version'].split('-')[0]}"
    return f"TensorFlow {result['tensorflow_version']}"


def engine_speedup(benchmarks, models, name):
    """An openvino model's throughput over its TensorFlow peer's (the same precision from the
    same graph: registry.engine_peer), e.g. "0.71x [0.69, 0.74] over fp32"; "" for the others."""
    peer = models[name].get("engine_peer")
    if peer is None:
        return ""
    estimate = benchmarks.get(name, {}).get("engine_ratio_over_rounds")
    if estimate is None:
        return "n/a"
    text = f"{estimate['median']:.2f}x [{estimate['low']:.2f}, {estimate['high']:.2f}] over {peer}"
    return text + (": no difference measured" if holds(estimate) else "")


def without_int8_instructions(result):
    """An INT8 benchmark on a CPU with none of INT8_FLAGS (its flags as the job recorded them)."""
    return result["precision"] == "int8" and not int8_native(result["cpu_flags"])


def precision_label(models, benchmarks, name):
    """The model's precision, and "emulated" where BF16 ran without BF16 instructions."""
    emulated = benchmarks.get(name, {}).get("emulated")
    return models[name]["precision"] + (" (emulated)" if emulated else "")


def value_at(results, name, *keys):
    """results[name][key][key]..., or None where the model or any key is missing or empty."""
    value = results.get(name)
    for key in keys:
        if not value:
            return None
        value = value.get(key)
    return value


def figure_rows(models, benchmarks, accuracies, agreements, names):
    """The full table's rows: one per figure, a value per model of `names`."""

    def row(label, values):
        return (label, [values(name) for name in names])

    rows = [
        row("Architecture", lambda name: models[name]["architecture"]),
        row("Precision", lambda name: precision_label(models, benchmarks, name)),
        row("Engine", lambda name: engine_label(models, name)),
        *(
            row(f"Latency {key} (ms)", lambda name, key=key: benchmark_figure(benchmarks.get(name), "latency_ms", key))
            for key in ("p50", "p90", "p99")
        ),
        row(
            "Throughput (images/s)", lambda name: benchmark_figure(benchmarks.get(name), "throughput_images_per_second")
        ),
        row(
            "Benchmark rounds",
            lambda name: str(
                value_at(benchmarks, name, "over_rounds", "throughput_images_per_second", "rounds") or "n/a"
            ),
        ),
        row("Speed-up over reference (throughput)", lambda name: speedup(benchmarks, models, name)),
        row("Speed-up over TensorFlow (same precision)", lambda name: engine_speedup(benchmarks, models, name)),
        row(
            "Op time in bfloat16 (traced)",
            lambda name: percent(value_at(benchmarks, name, "bfloat16", "op_time_fraction")),
        ),
        row(
            "GFLOPs per image (executed)",
            lambda name: significant(value_at(benchmarks, name, "roofline", "gflops_per_image")),
        ),
        row(
            "Achieved GFLOP/s (INT8: GOP/s)",
            lambda name: significant(value_at(benchmarks, name, "roofline", "achieved_gflops_per_second")),
        ),
        row(
            "Share of a matmul's rate (same threads, precision)",
            lambda name: percent(value_at(benchmarks, name, "roofline", "fraction_of_probe")),
        ),
    ]
    for key, label in STANDARD_METRICS:
        rows.append(row(label, lambda name, key=key: number(value_at(accuracies, name, "standard", key))))
    rows.append(row("Legacy AP (recipe's evaluator)", lambda name: number(value_at(accuracies, name, "legacy", "AP"))))
    rows.append(row("Legacy AP50", lambda name: number(value_at(accuracies, name, "legacy", "AP50"))))
    if agreements:
        compared = [name for name in names if name in agreements]
        for label, key, digits in AGREEMENT_ROWS:
            rows.append(
                row(
                    label,
                    lambda name, key=key, digits=digits: (
                        number(value_at(agreements, name, key), digits) if name in compared else ""
                    ),
                )
            )
    published = row(
        "Published (Intel)", lambda name: ", ".join(f"{k} {v}" for k, v in models[name]["published"].items())
    )
    rows.append((published[0], [value or "n/a" for value in published[1]]))
    return rows


STANDARD_METRICS = (
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
    ("AP_small", "AP small"),
    ("AP_medium", "AP medium"),
    ("AP_large", "AP large"),
)
AGREEMENT_ROWS = (
    ("Reference detections reproduced", "agreement", 3),
    ("Confident ones reproduced (score >= 0.5)", "confident_agreement", 3),
    ("Mean score drift vs reference", "mean_score_drift", 4),
)


def detail_lines(models, benchmarks, accuracies, quantizations, names):
    """The lines under the full table: how each model ran, and on what."""
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
                f"{engine_version(result)}, {result['cpu_model']} "
                f"({', '.join(result['cpu_flags']) or 'no listed vector flags'})"
            )
            if result.get("emulated"):
                details.append(
                    f"{name}: BF16 emulated by oneDNN (this CPU has neither avx512_bf16 nor amx_bf16): "
                    "its speed says nothing about BF16 hardware"
                )
            noisy = (result.get("machine") or {}).get("noisy")
            if noisy:
                details.append(f"{name}: NOISY run ({'; '.join(noisy)}): see Machine below")
            if without_int8_instructions(result):
                details.append(
                    f"{name}: this CPU has no INT8 instructions ({', '.join(INT8_FLAGS)}): oneDNN runs INT8 "
                    "on wider ones, so its speed says nothing about INT8 hardware, and its share of a matmul's "
                    "rate is not shown (there is no INT8 rate to compare with)"
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
    return details


def table_rows(models, benchmarks, accuracies, quantizations=None, agreements=None):
    """(header, rows, details): one column per model, one row per figure."""
    names = column_order(models)
    rows = figure_rows(models, benchmarks, accuracies, agreements or {}, names)
    return ["", *names], rows, detail_lines(models, benchmarks, accuracies, quantizations or {}, names)


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
