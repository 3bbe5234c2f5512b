"""The diagnostics stages on the demo: agreement with the FP32 reference, and layer drift's
one-line errors."""

import json

import pytest
from helpers import (
    agreement_with_fp32,
    error_lines,
    layer_drift,
    rfcn_drift_arguments,
    run_script,
    scale_weight_range,
)


@pytest.mark.parametrize("model", ("int8", "int8_inc", "bf16"))
def test_every_model_reproduces_every_fp32_detection_on_the_demo(finished_run, model):
    agreement = json.loads((finished_run.workdir / f"results/diagnostics/{model}_agreement.json").read_text())
    assert agreement["reference_detections"] == 13 and agreement["agreement"] == 1.0
    # BF16 keeps 8 bits of mantissa: the scores move a little, the detections do not.
    assert agreement["mean_score_drift"] == 0.0 if model != "bf16" else agreement["mean_score_drift"] < 0.01
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    assert "| Reference detections reproduced |" + " 1.000 |" * 6 + "  |" in summary
    # The demo names its one activation as an export names the RPN objectness: Intel's INT8
    # keeps that name on a Dequantize, Neural Compressor's fused it into the convolution, and
    # BF16 runs the FP32 graph itself.
    drift = json.loads((finished_run.workdir / f"results/diagnostics/{model}_layer_drift.json").read_text())
    (layer,) = drift["layers"]
    assert layer["layer"] == "rpn_objectness" and layer["images"] == 2 and layer["cosine"] > 0.9999
    assert layer["dequantized_here"] is (model == "int8_inc") and drift["unmatched"] == []
    assert drift["candidate_precision"] == finished_run.config["models"][model]["precision"]
    assert "| rpn_objectness | 1.0000 | 1.0000 | 1.0000 |" in summary


def test_a_perturbed_int8_graph_agrees_less(finished_run, tmp_path):
    """A wrong weight scale in the one quantized convolution: fewer FP32 detections reproduced."""
    from detbench.detection_graph import load_graph_def

    workdir = finished_run.workdir
    int8_inc = workdir / "resources/models/int8_inc/frozen_inference_graph.pb"
    convolution = next(
        node.name for node in load_graph_def(int8_inc).node if node.op == "QuantizedConv2DWithBiasAndReluAndRequantize"
    )
    # Shrinking the weights' range shrinks every output of the layer.
    graph = scale_weight_range(int8_inc, tmp_path / "perturbed.pb", convolution, 0.3)
    assert agreement_with_fp32(workdir, graph, tmp_path)["agreement"] < 1.0
    drift = layer_drift(workdir, graph, tmp_path / "drift.json")
    assert drift["lowest_cosine"] == "rpn_objectness" and drift["layers"][0]["cosine"] < 0.99


def test_layer_drift_bad_inputs_are_one_line(finished_run, tmp_path):
    models = finished_run.workdir / "resources/models"
    arguments = [
        "--reference",
        models / "fp32/frozen_inference_graph.pb",
        "--output",
        tmp_path / "drift.json",
        *rfcn_drift_arguments(),
    ]
    run = run_script("measure_layer_drift.py", *arguments, "--candidate", tmp_path / "none.pb", "--images", tmp_path)
    assert error_lines(run) == [f"error: measure_layer_drift: no such graph: {tmp_path / 'none.pb'}"]
    run = run_script(
        "measure_layer_drift.py",
        *arguments,
        "--candidate",
        models / "int8/frozen_inference_graph.pb",
        "--images",
        tmp_path,
    )
    assert error_lines(run) == [f"error: {tmp_path}: no .jpg or .jpeg images in it"]
    run = run_script(
        "measure_layer_drift.py",
        *arguments,
        "--candidate",
        models / "int8/frozen_inference_graph.pb",
        "--images",
        tmp_path,
        "--units",
        "(block",
    )
    assert error_lines(run) == [
        "error: measure_layer_drift: --units '(block' is not a regular expression "
        "(missing ), unterminated subpattern at position 0)"
    ]
    assert not (tmp_path / "drift.json").exists()
