"""The second engine: OpenVINO beside TensorFlow. The registry's openvino entries, the conversion
(our CombinedNonMaxSuppression against TensorFlow's, an op OpenVINO lacks named in one line),
NNCF's INT8, and the demo run's openvino models in every stage and in the report."""

import json

import numpy as np
import pytest
from helpers import error_lines, read_json, run_script

from detbench.config_schema import load_schema
from detbench.plan import Plan
from detbench.registry import checked_config, config_problems, engine_peer, reference_model
from tools.demo.demo_config import demo_config

OPENVINO_MODELS = ("openvino_fp32", "openvino_int8", "openvino_bf16")
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def demo_registry(demo_data):
    config = demo_config(demo_data, "http://127.0.0.1:9", openvino=True)
    assert checked_config(config, load_schema()) == []
    return config


def test_openvino_models_come_from_tensorflow_graphs(demo_data):
    config = demo_registry(demo_data)
    models = config["models"]
    # Compared with the TensorFlow FP32 (speed-up, agreement), and with the TensorFlow model of
    # their precision made from the same graph (the engines' ratio).
    assert {name: reference_model(models, name) for name in OPENVINO_MODELS} == dict.fromkeys(OPENVINO_MODELS, "fp32")
    assert reference_model(models, "fp32") is None
    assert [engine_peer(models, name) for name in OPENVINO_MODELS] == ["fp32", "int8_inc", "bf16"]
    assert engine_peer(models, "int8_inc") is None
    downloaded = {key: value for key, value in models["openvino_fp32"].items() if key != "graph_of"}
    downloaded["download"] = models["int8"]["download"]
    problems = config_problems({**config, "models": {**models, "openvino_fp32": downloaded}}, load_schema())
    assert problems == [
        "config key models.openvino_fp32.download: an openvino model is converted here: name graph_of "
        "(or quantize.from)"
    ]
    int8 = {**{key: value for key, value in models["openvino_int8"].items() if key != "quantize"}, "graph_of": "fp32"}
    tuned = {**models["openvino_int8"], "quantize": {"from": "fp32", "accuracy_tolerance": 0.01}}
    problems = config_problems(
        {
            **config,
            "models": {
                **models,
                "openvino_int8": int8,
                "openvino_bf16": {**models["openvino_bf16"], "graph_of": "openvino_fp32"},
            },
        },
        load_schema(),
    )
    assert (
        "config key models.openvino_int8.quantize: an openvino int8 model is quantized here by NNCF: give "
        in problems[0]
    )
    assert any("'openvino_fp32' is not a model with a graph of its own" in problem for problem in problems)
    problems = config_problems({**config, "models": {**models, "openvino_int8": tuned}}, load_schema())
    assert problems == [
        "config key models.openvino_int8.quantize.accuracy_tolerance: Neural Compressor's; NNCF (engine "
        "openvino) does not take it"
    ]


def test_the_plan_runs_an_openvino_model_from_its_ir(demo_data):
    plan = Plan(demo_registry(demo_data), native_bf16=True)
    assert plan.graph("openvino_fp32") == plan.graph("openvino_bf16") == "resources/openvino/fp32/model.xml"
    assert plan.graph("openvino_int8") == "resources/openvino/openvino_int8/model.xml"
    assert plan.openvino_converted == ["fp32"] and plan.openvino_quantized == ["openvino_int8"]
    assert plan.openvino_quantize_inputs("openvino_int8")["model"] == "resources/openvino/fp32/model.xml"
    assert "--calibration-images 4 --seed 0 --threads 0" == plan.openvino_quantize_options("openvino_int8")
    options = plan.runtime_options("openvino_bf16", 2)
    assert "--engine=openvino" in options and "--precision=bf16" in options and "--openvino-streams=1" in options
    # A TensorFlow job's command has no OpenVINO flag: changing them reruns none of its jobs.
    assert "openvino" not in plan.runtime_options("fp32", 2)
    # Agreement for every compared model; layer drift reads TensorFlow's activations only.
    assert set(OPENVINO_MODELS) <= set(plan.compared_models)
    assert not set(OPENVINO_MODELS) & set(plan.drift_models)


def combined_nms_graph(folder, per_class, total, score_threshold, pad_per_class=False):
    """A graph of one CombinedNonMaxSuppression, its four outputs named as a detector's."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        boxes = tf1.placeholder(tf.float32, [1, None, 1, 4], name="boxes")
        scores = tf1.placeholder(tf.float32, [1, None, 5], name="scores")
        outputs = tf.image.combined_non_max_suppression(
            boxes,
            scores,
            per_class,
            total,
            iou_threshold=0.5,
            score_threshold=score_threshold,
            pad_per_class=pad_per_class,
            clip_boxes=True,
        )
        for name, output in zip(OUTPUTS, outputs):
            tf.identity(output, name=name)
    path = folder / f"nms-{per_class}-{total}-{score_threshold}-{pad_per_class}.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path, graph


@pytest.mark.parametrize(("per_class", "score_threshold"), [(40, 0.1), (40, 0.99), (3, 0.1)])
def test_our_combined_nms_gives_tensorflows_detections(tmp_path, per_class, score_threshold):
    """200 random boxes (some beyond the image, which clip_boxes clips), 5 classes: all 30 kept
    slots filled (threshold 0.1), or a few, the rest padded with zeros (0.99 or 3 per class);
    equal to the bit."""
    import openvino as ov
    import tensorflow as tf

    from detbench.openvino_ops import conversion_extensions

    path, graph = combined_nms_graph(tmp_path, per_class, 30, score_threshold)
    rng = np.random.default_rng(0)
    corners = rng.uniform(-0.1, 0.9, (1, 200, 1, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(0.05, 0.3, corners.shape).astype(np.float32)], -1)
    scores = rng.uniform(0, 1, (1, 200, 5)).astype(np.float32)
    with tf.compat.v1.Session(graph=graph) as session:
        expected = session.run([f"{name}:0" for name in OUTPUTS], {"boxes:0": boxes, "scores:0": scores})
    compiled = ov.Core().compile_model(ov.convert_model(str(path), extension=conversion_extensions()), "CPU")
    results = compiled([boxes, scores])
    found = [results[compiled.output(f"{name}:0")] for name in OUTPUTS]
    assert 0 < expected[3][0] <= 30 and (expected[3][0] < 30) == (score_threshold == 0.99 or per_class == 3)
    for name, want, got in zip(OUTPUTS, expected, found):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_an_op_openvino_cannot_convert_is_named_and_nothing_is_written(finished_run, tmp_path):
    """Intel's quantized ops (the demo's Intel-style INT8 graph) and a CombinedNonMaxSuppression
    our conversion refuses: one line each, no IR left."""
    workdir = finished_run.workdir
    run = run_script(
        "convert_to_openvino.py",
        "--graph",
        workdir / "resources/models/int8/frozen_inference_graph.pb",
        "--output-dir",
        tmp_path / "int8",
        "--check-images",
        workdir / "resources/coco/val2017",
        onednn=True,
    )
    assert run.returncode == 1 and len(error_lines(run)) == 1, run.stderr[-2000:]
    assert "OpenVINO 2026.4.1 cannot convert" in error_lines(run)[0]
    assert "QuantizedConv2DWithBiasAndReluAndRequantize (node " in error_lines(run)[0]
    path, _ = combined_nms_graph(tmp_path, 20, 30, 0.1, pad_per_class=True)
    run = run_script(
        "convert_to_openvino.py",
        "--graph",
        path,
        "--output-dir",
        tmp_path / "nms",
        "--check-images",
        workdir / "resources/coco/val2017",
        "--input-tensor=boxes",
        f"--outputs={','.join(OUTPUTS)}",
    )
    assert error_lines(run) == [
        f"error: {path}: CombinedNonMaxSuppression with pad_per_class: not converted (only pad to "
        "max_total_size); run this model on tensorflow"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in tmp_path.glob("*.pb"))


def test_every_openvino_model_has_a_benchmark_an_accuracy_and_an_agreement(finished_run):
    """On OpenVINO's own kernels; the demo's FP32 detections are TensorFlow's (the same boxes:
    agreement 1), and so is its AP."""
    fp32 = read_json(finished_run, "results/accuracy/fp32.json")
    for name in OPENVINO_MODELS:
        benchmark = read_json(finished_run, f"results/benchmark/{name}.json")
        assert benchmark["engine"] == "openvino" and benchmark["engine_version"].startswith("2026.4.1")
        assert benchmark["latency_ms"]["p50"] > 0 and benchmark["roofline"] is None
        assert benchmark["openvino_properties"]["INFERENCE_NUM_THREADS"] == "2"
        assert any(kernel.startswith(("jit_", "brgconv_", "ref_")) for kernel in benchmark["executed_kernels"])
        accuracy = read_json(finished_run, f"results/accuracy/{name}.json")
        agreement = read_json(finished_run, f"results/diagnostics/{name}_agreement.json")
        assert agreement["reference"].endswith("fp32_detections.json") and agreement["agreement"] > 0.9, name
        if name == "openvino_fp32":
            assert accuracy["standard"]["AP"] == pytest.approx(fp32["standard"]["AP"], abs=1e-9)
            assert agreement["agreement"] == 1.0 and abs(agreement["mean_score_drift"]) < 1e-5
    conversion = json.loads((finished_run.workdir / "resources/openvino/fp32/conversion.json").read_text())
    assert conversion["check"]["agreement"]["agreement"] == 1.0
    assert {f"{name}:0" for name in OUTPUTS} <= set(conversion["outputs"])
    quantization = json.loads((finished_run.workdir / "resources/openvino/openvino_int8/quantization.json").read_text())
    assert quantization["tool"] == "nncf" and quantization["fake_quantize_nodes"] >= 1
    assert len(quantization["calibration_images"]) == 4


def test_the_report_has_the_engine_and_the_engines_ratio(finished_run):
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| Model | Architecture | Precision |"))
    assert "| Engine |" in header and "| Speed-up over TensorFlow |" in header
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in summary.splitlines()
        if " | rfcn_resnet101 | " in line
    }
    column = header.split(" | ").index("Speed-up over TensorFlow")
    assert rows["openvino_int8"][3] == "openvino" and rows["int8_inc"][3] == "tensorflow"
    assert "] over int8_inc" in rows["openvino_int8"][column] and "] over fp32" in rows["openvino_fp32"][column]
    assert rows["int8_inc"][column] == ""
