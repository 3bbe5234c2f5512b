"""Quantization with Intel Neural Compressor: calibration images, the graph's preparation, and
accuracy-aware tuning in Neural Compressor's or layer drift's order (see scripts/quantize_graph.py)."""

import contextlib
import hashlib
import logging
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

from detbench.coco_data import coco_metrics, quiet_coco, read_examples, to_coco_results, val_record_files
from detbench.common import StageError, atomic_file
from detbench.detection_graph import (
    decode_image,
    default_interface,
    detect,
    list_images,
    load_graph_def,
    open_session,
    source_node,
)
from detbench.residual_bias import split_residual_biases

log = logging.getLogger("quantize_graph")

# Layer drift that orders the tuning's fallbacks runs on at most this many tuning images.
DRIFT_IMAGES = 8
FALLBACK_ORDERS = ("largest_drift", "nearest_outputs")
# Ops Neural Compressor quantizes in a detection graph; the rest stays FP32 anyway.
QUANTIZABLE_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "MaxPool", "AvgPool", "ConcatV2")


def calibration_images(image_dir, count, seed):
    """`count` JPEGs of `image_dir`, drawn with `seed` from its sorted listing (all if fewer)."""
    images = list_images(image_dir, "calibration images")
    if count >= len(images):
        return images
    return sorted(random.Random(seed).sample(images, count))


class CalibrationImages:
    """Neural Compressor's calibration data loader: (batch, label) pairs of one image each.

    Decoded up front: Neural Compressor swallows errors raised while it iterates, so an
    unreadable image must be named before it starts.
    """

    batch_size = 1

    def __init__(self, paths):
        self.images = []
        for path in paths:
            try:
                self.images.append(decode_image(path.read_bytes(), path.name)[None])
            except StageError as error:
                raise StageError(f"quantize_graph: calibration image {error}") from None

    def __iter__(self):
        for image in self.images:
            yield image, 0


def kept_in_fp32(graph_def, patterns):
    """Names of the quantizable nodes that a pattern finds (re.search on the node name)."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return sorted(
        node.name
        for node in graph_def.node
        if node.op in QUANTIZABLE_OPS and any(pattern.search(node.name) for pattern in compiled)
    )


def quantization_config(weight_granularity, fp32_nodes):
    from neural_compressor.tensorflow import StaticQuantConfig

    config = StaticQuantConfig(weight_granularity=weight_granularity)
    for name in fp32_nodes:
        # Neural Compressor reads the name as a pattern (re.match): "Conv2D" would take "Conv2D_1" too.
        config.set_local(f"{re.escape(name)}$", StaticQuantConfig(weight_dtype="fp32", act_dtype="fp32"))
    return config


class TuningSubset:
    """The first `count` images of the TFRecord and their COCO ground truth: the tuning metric."""

    def __init__(self, record_dir, annotations_file, count, interface=None):
        self.interface = interface or default_interface()
        self.images = []
        for index, features in enumerate(read_examples(val_record_files(record_dir))):
            if index >= count:
                break
            image_id = int(features["image/source_id"][0])
            name = f"quantize_graph: tuning image {image_id} (record {index} of {record_dir})"
            self.images.append((image_id, decode_image(features["image/encoded"][0], name)[None]))
        if not self.images:
            raise StageError(f"quantize_graph: no images in the TFRecord {record_dir}")
        self.ground_truth = quiet_coco(annotation_file=annotations_file)
        self.known = {}

    def average_precision(self, graph_def):
        """COCO AP (pycocotools) of the graph on the subset; each graph is run once."""
        key = hashlib.sha256(graph_def.SerializeToString(deterministic=True)).hexdigest()
        if key not in self.known:
            session = open_session(graph_def, 0, 1)
            detections = []
            for image_id, image in self.images:
                detections += to_coco_results(
                    image_id, image.shape[1], image.shape[2], detect(session, self.interface, image)
                )
            session.close()
            image_ids = [image_id for image_id, _ in self.images]
            self.known[key] = coco_metrics(self.ground_truth, detections, image_ids)[0]["AP"] if detections else 0.0
        return self.known[key]


def fallback_candidates(graph_def, kept):
    """Convolutions and matrix products not kept in FP32 already, nearest the outputs first."""
    ops = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
    return [node.name for node in reversed(graph_def.node) if node.op in ops and node.name not in kept]


class TuningRun:
    """Neural Compressor's tuning loop (autotune), with a record of every trial."""

    def __init__(self, model, calibration, subset, weight_granularity, fp32_nodes, tolerance):
        self.model, self.calibration, self.subset = model, calibration, subset
        self.weight_granularity, self.fp32_nodes, self.tolerance = weight_granularity, fp32_nodes, tolerance
        self.baseline = None
        self.trials = []  # {"trial", "kept_in_fp32", "ap", ...} in the order they ran

    def within_tolerance(self, ap):
        return ap >= self.baseline * (1 - self.tolerance)

    def run(self, fallbacks, units=None):
        """One autotune pass over trials that each keep `fallbacks[i]` (and the configured
        nodes) in FP32, `units[i]` naming why; returns (best quantized model, its trial) of this pass."""
        from neural_compressor.common.base_tuning import TuningConfig
        from neural_compressor.tensorflow.quantization import autotune

        pending = list(zip(fallbacks, units or [None] * len(fallbacks)))
        first = len(self.trials) + 1
        baseline_done = []  # autotune evaluates the FP32 model first in every pass

        def evaluate(candidate):
            ap = self.subset.average_precision(candidate.graph_def)
            if not baseline_done:
                baseline_done.append(True)
                if self.baseline is None:
                    self.baseline = ap
                    log.info("tuning baseline: FP32 AP %.4f on %d images", ap, len(self.subset.images))
            elif pending:
                kept, kept_units = pending.pop(0)
                self.trials.append(
                    {
                        "trial": len(self.trials) + 1,
                        "kept_in_fp32": kept,
                        "ap": ap,
                        "within_tolerance": self.within_tolerance(ap),
                    }
                )
                if kept_units is not None:
                    self.trials[-1]["units_in_fp32"] = kept_units
                log.info(
                    "trial %d: AP %.4f with %d convolutions in FP32: %s",
                    len(self.trials),
                    ap,
                    len(kept),
                    ", ".join(kept) or "none",
                )
            return ap

        configs = [quantization_config(self.weight_granularity, [*self.fp32_nodes, *kept]) for kept in fallbacks]
        tuning = TuningConfig(config_set=configs, tolerable_loss=self.tolerance, max_trials=len(configs))
        quantized = autotune(
            self.model,
            tuning,
            eval_fn=evaluate,
            calib_dataloader=self.calibration,
            calib_iteration=len(self.calibration.images),
        )
        ran = self.trials[first - 1 :]
        best = max(ran, key=lambda trial: trial["ap"]) if ran else None
        return quantized, best


def nearest_outputs_first(run, graph_def, fp32_nodes, max_trials):
    """Neural Compressor's own order: each convolution alone in FP32, nearest the outputs first
    (up to half the trials), then the ones whose fallback helped most, together."""
    candidates = fallback_candidates(graph_def, set(fp32_nodes))
    singles = candidates[: (max_trials - 1) // 2 if max_trials > 2 else max_trials - 1]
    quantized, best = run.run([[], *[[name] for name in singles]])
    remaining = max_trials - len(run.trials)
    if not best["within_tolerance"] and remaining > 0 and singles:
        single_ap = {trial["kept_in_fp32"][0]: trial["ap"] for trial in run.trials[1:]}
        ranked = sorted(single_ap, key=lambda name: -single_ap[name])
        growing = [ranked[:count] for count in range(2, min(len(ranked), remaining + 1) + 1)]
        if growing:
            cumulative, cumulative_best = run.run(growing)
            if cumulative_best is not None and cumulative_best["ap"] > best["ap"]:
                quantized, best = cumulative, cumulative_best
    return quantized, best, None


def unit_convolutions(graph_def, tensor, stops):
    """The convolutions and matrix products computing `tensor` since the nearest `stops` upstream."""
    nodes = {node.name: node for node in graph_def.node}
    found, queue, seen = [], [tensor], set()
    while queue:
        name = queue.pop(0)
        node = nodes.get(name)
        if node is None or name in seen or (name in stops and name != tensor):
            continue
        seen.add(name)
        if node.op in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
            found.append(name)
        queue += [source_node(i) for i in node.input if not i.startswith("^")]
    return found


def largest_drift_first(run, graph_def, fp32_nodes, max_trials, units, heads):
    """Layer drift's order: trial 1 quantizes everything; its drift from FP32 on the tuning
    images ranks the units (and heads) by how much cosine each loses over its upstream one;
    each next trial keeps one more of them in FP32, with every convolution inside it."""
    from detbench.layer_drift import drift_of_graphs

    quantized, best = run.run([[]])
    if best["within_tolerance"] or max_trials < 2:
        return quantized, best, None
    images = [(str(image_id), image) for image_id, image in run.subset.images[:DRIFT_IMAGES]]
    drift = drift_of_graphs(graph_def, quantized.graph_def, images, run.subset.interface, units, heads)
    layers = [layer for layer in drift["layers"] if layer["cosine"] is not None]
    for layer in layers:
        layer["loss"] = layer["cosine_drop"] if layer["cosine_drop"] is not None else 1 - layer["cosine"]
    ranked = sorted(layers, key=lambda layer: -layer["loss"])
    stops = {layer["reference_tensor"].split(":")[0] for layer in layers}
    fallbacks, labels, kept = [], [], []
    for layer in ranked:
        if len(fallbacks) >= max_trials - 1:
            break
        added = [
            name
            for name in unit_convolutions(graph_def, layer["reference_tensor"].split(":")[0], stops)
            if name not in fp32_nodes and name not in kept
        ]
        if not added:
            continue
        kept = kept + added
        fallbacks.append(kept)
        labels.append((labels[-1] if labels else []) + [layer["layer"]])
    log.info(
        "layer drift of trial 1, largest loss first: %s",
        ", ".join(f"{layer['layer']} {layer['loss']:.4f}" for layer in ranked[:8]),
    )
    if fallbacks:
        guided, guided_best = run.run(fallbacks, labels)
        if guided_best is not None and guided_best["ap"] > best["ap"]:
            quantized, best = guided, guided_best
    ranking = [{"unit": layer["layer"], "cosine": layer["cosine"], "loss": layer["loss"]} for layer in ranked]
    return quantized, best, ranking


def tune(
    model,
    graph_def,
    calibration,
    subset,
    weight_granularity,
    fp32_nodes,
    tolerance,
    max_trials,
    order="nearest_outputs",
    units=None,
    heads=None,
    on_miss="fail",
):
    """Accuracy-aware quantization; returns (quantized model, nodes it kept in FP32, tuning history).

    `order`: which convolutions go back to FP32 first, layer drift's (`largest_drift`, needs
    the architecture's `units` and `heads`) or Neural Compressor's (`nearest_outputs`).
    `on_miss`: `fail` when no trial is within the tolerance, or `keep` the best one.
    """
    baseline = subset.average_precision(graph_def)
    if baseline == 0:
        # A relative drop from zero means nothing (and Neural Compressor divides by it).
        raise StageError(
            f"quantize_graph: FP32's COCO AP on the {len(subset.images)} tuning images is 0: nothing for "
            "the tolerance to hold; use more tuning_images, or no accuracy_tolerance"
        )
    run = TuningRun(model, calibration, subset, weight_granularity, fp32_nodes, tolerance)
    if order == "largest_drift":
        quantized, best, ranking = largest_drift_first(run, graph_def, fp32_nodes, max_trials, units, heads or {})
    else:
        quantized, best, ranking = nearest_outputs_first(run, graph_def, fp32_nodes, max_trials)
    history = {
        "tolerance": tolerance,
        "max_trials": max_trials,
        "tuning_images": len(subset.images),
        "fp32_ap": run.baseline,
        "fallback_order": order,
        "drift_ranking": ranking,
        "trials": run.trials,
        "chosen_trial": best["trial"],
        "met_tolerance": best["within_tolerance"],
        "on_miss": on_miss,
    }
    if not best["within_tolerance"]:
        missed = (
            f"quantize_graph: no trial within {tolerance} of FP32's AP {run.baseline:.4f}: the best of "
            f"{len(run.trials)}, trial {best['trial']}, reached AP {best['ap']:.4f}"
        )
        if on_miss == "fail":
            raise StageError(
                f"{missed}; allow more max_trials or a larger accuracy_tolerance, "
                "or set on_tolerance_miss: keep to keep it (marked in the report)"
            )
        log.warning("%s; kept, as on_tolerance_miss: keep asks (the report marks it)", missed)
    return quantized, best["kept_in_fp32"], history


def quantize(
    graph_path, image_paths, output, weight_granularity="per_tensor", keep_fp32=(), tuning=None, interface=None
):
    """Quantize `graph_path` into `output`; returns what was done (for the report).

    `tuning`: None, or {"subset": TuningSubset, "tolerance": float, "max_trials": int, and
    optionally "order", "units", "heads", "on_miss" (tune's arguments)}.
    """
    from neural_compressor.tensorflow import quantize_model
    from neural_compressor.tensorflow.utils import Model

    graph_def, split_sums = split_residual_biases(load_graph_def(graph_path))
    if split_sums:
        log.info(
            "%d residual sums reordered so that their convolutions keep a bias (residual_bias.py)", len(split_sums)
        )
    quantizable = Counter(node.op for node in graph_def.node if node.op in QUANTIZABLE_OPS)
    if not quantizable.get("Conv2D") and not quantizable.get("MatMul"):
        raise StageError(f"quantize_graph: {graph_path} has no Conv2D or MatMul: nothing to quantize")
    fp32_nodes = kept_in_fp32(graph_def, keep_fp32)
    if keep_fp32:
        log.info("kept in FP32 (%d nodes): %s", len(fp32_nodes), ", ".join(fp32_nodes))
    calibration = CalibrationImages(image_paths)
    started = time.perf_counter()
    history, tuned_fp32 = None, []
    # Neural Compressor makes ./nc_workspace in the current directory (and resets any other
    # choice after each quantization): run it in a temporary one.
    with tempfile.TemporaryDirectory(prefix="nc_workspace.") as workspace, contextlib.chdir(workspace):
        prepared_path = Path(workspace) / "prepared_fp32.pb"
        prepared_path.write_bytes(graph_def.SerializeToString())
        model = Model(str(prepared_path))
        interface = interface or default_interface()
        model.input_tensor_names = [interface.input]
        model.output_tensor_names = list(interface.outputs.values())
        try:
            if tuning is None:
                quantized = quantize_model(
                    model,
                    quantization_config(weight_granularity, fp32_nodes),
                    calibration,
                    calib_iteration=len(image_paths),
                )
            else:
                quantized, tuned_fp32, history = tune(
                    model,
                    graph_def,
                    calibration,
                    tuning["subset"],
                    weight_granularity,
                    fp32_nodes,
                    tuning["tolerance"],
                    tuning["max_trials"],
                    tuning.get("order", "nearest_outputs"),
                    tuning.get("units"),
                    tuning.get("heads"),
                    tuning.get("on_miss", "fail"),
                )
        except StageError:
            raise
        except Exception as error:  # Neural Compressor's own failures, whatever their type
            raise StageError(
                f"quantize_graph: Neural Compressor failed on {graph_path}: {type(error).__name__}: {error}"
            ) from None
    seconds = time.perf_counter() - started
    if quantized is None:
        raise StageError(f"quantize_graph: Neural Compressor returned no graph for {graph_path}")
    result = quantized.graph_def
    ops = Counter(node.op for node in result.node)
    quantized_convolutions = sum(count for op, count in ops.items() if op.startswith("Quantized") and "Conv" in op)
    # Tuning may rightly give every convolution back to FP32; plain quantization may not.
    if not quantized_convolutions and not ops.get("QuantizedMatMulWithBiasAndDequantize") and not tuned_fp32:
        raise StageError(f"quantize_graph: Neural Compressor quantized nothing in {graph_path}")
    with atomic_file(output) as temporary:
        temporary.write_bytes(result.SerializeToString())
    convolutions = quantizable["Conv2D"] + quantizable["DepthwiseConv2dNative"]
    log.info("%d of %d convolutions quantized in %.0f s", quantized_convolutions, convolutions, seconds)
    return {
        "source_graph": str(graph_path),
        "weight_granularity": weight_granularity,
        "calibration_images": [path.name for path in image_paths],
        "kept_in_fp32": [*fp32_nodes, *tuned_fp32],
        "tuning": history,
        "residual_sums_reordered": split_sums,
        "convolutions": convolutions,
        "quantized_convolutions": quantized_convolutions,
        "quantized_ops": {op: count for op, count in sorted(ops.items()) if "Quantize" in op or op == "Dequantize"},
        "seconds": round(seconds, 1),
    }
