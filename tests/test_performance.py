"""Where the time goes and how close to the machine's limit: profile, FLOPs, probe."""

import json

import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT

from detbench.performance import OTHER_PART, count_flops, model_part, probe_rates

# The family's architectures, as the configs give them: R-FCN's (the recipe) and the zoo's.
ARCHITECTURES = {
    name: architecture
    for config in ("config.yaml", "zoo.yaml")
    for name, architecture in yaml.safe_load((REPO_ROOT / "config" / config).read_text())["architectures"].items()
}
RFCN_PARTS = ARCHITECTURES["rfcn_resnet101"]["parts"]


def known_flops_graph():
    """A 3x3 convolution (3 to 8 channels), a 3x3 depthwise one and a matmul on a 10x12
    image, and a matmul inside a TF1 while loop: FLOPs known by hand."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    generator = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        image = tf1.placeholder(tf.float32, [None, None, None, 3], name="image_tensor")
        with tf.name_scope("FirstStageFeatureExtractor"):
            features = tf.nn.conv2d(image, generator.random((3, 3, 3, 8), np.float32), strides=1, padding="SAME")
            features = tf.nn.depthwise_conv2d(
                features, generator.random((3, 3, 8, 1), np.float32), [1, 1, 1, 1], "SAME"
            )
        with tf.name_scope("SecondStageBoxPredictor"):
            flat = tf.reshape(features, [1, 10 * 12 * 8])
            logits = tf.matmul(flat, generator.random((960, 5), np.float32))
        tf1.disable_control_flow_v2()
        try:
            looped = tf1.while_loop(lambda i, x: i < 2, lambda i, x: (i + 1, tf.matmul(x, tf.eye(5))), [0, logits])[1]
        finally:
            tf1.enable_control_flow_v2()
        tf.identity(looped, name="detection_scores")
    return graph


def test_flops_are_counted_from_executed_shapes():
    import tensorflow as tf

    graph = known_flops_graph()
    with tf.compat.v1.Session(graph=graph) as session:
        flops = count_flops(session, {"image_tensor:0": np.zeros((1, 10, 12, 3), np.float32)}, RFCN_PARTS)
    conv = 2 * (10 * 12 * 8) * (3 * 3 * 3)
    depthwise = 2 * (10 * 12 * 8) * (3 * 3)
    matmul = 2 * (1 * 5) * 960
    assert flops["by_part"]["first_stage_feature_extractor"] == conv + depthwise
    assert flops["by_part"]["second_stage_box_predictor"] == matmul
    assert flops["total"] == conv + depthwise + matmul
    # The matmul in the while loop cannot be fetched from outside it: counted as skipped.
    assert flops["ops_counted"] == 3 and flops["ops_in_loops"] == 1


@pytest.mark.parametrize(
    ("architecture", "name", "part"),
    [
        (architecture, name, part)
        for architecture, cases in {
            "rfcn_resnet101": [
                ("Preprocessor/map/while/ResizeImage/resize/ResizeBilinear", "preprocessing"),
                (
                    "FirstStageFeatureExtractor/resnet_v1_101/resnet_v1_101/block1/unit_1/bottleneck_v1/conv1/Relu",
                    "first_stage_feature_extractor",
                ),
                ("Conv/Conv2D_eightbit_requantize", "rpn_box_predictor"),
                ("FirstStageBoxPredictor/ClassPredictor/BiasAdd", "rpn_box_predictor"),
                (
                    "SecondStageFeatureExtractor/resnet_v1_101/block4/unit_3/bottleneck_v1/Relu",
                    "second_stage_feature_extractor",
                ),
                ("SecondStageBoxPredictor/map_1/while/CropAndResize", "second_stage_box_predictor"),
                (
                    "SecondStagePostprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/NonMaxSuppressionV3",
                    "postprocessing_nms",
                ),
                ("CropAndResize", "other"),
            ],
            "faster_rcnn_resnet50": [
                (
                    "FirstStageFeatureExtractor/resnet_v1_50/resnet_v1_50/block3/unit_6/bottleneck_v1/Relu",
                    "first_stage_feature_extractor",
                ),
                ("GridAnchorGenerator/Meshgrid/ExpandedShape/Reshape", "rpn_box_predictor"),
                (
                    "BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/NonMaxSuppressionV3",
                    "first_stage_nms",
                ),
                ("CropAndResize", "second_stage_feature_extractor"),
                (
                    "SecondStageFeatureExtractor/resnet_v1_50/block4/unit_1/bottleneck_v1/conv2/Conv2D",
                    "second_stage_feature_extractor",
                ),
                ("SecondStageBoxPredictor/ClassPredictor/MatMul", "second_stage_box_predictor"),
                ("SecondStagePostprocessor/BatchMultiClassNonMaxSuppression/map/while/Gather", "second_stage_nms"),
            ],
            "ssd_mobilenet_v1": [
                ("Preprocessor/sub", "preprocessing"),
                ("FeatureExtractor/MobilenetV1/Conv2d_7_depthwise/depthwise", "feature_extractor"),
                ("BoxPredictor_3/ClassPredictor/BiasAdd", "box_predictor"),
                ("Postprocessor/CombinedNonMaxSuppression/CombinedNonMaxSuppression", "postprocessing"),
                ("MultipleGridAnchorGenerator/Meshgrid_5/ExpandedShape/Reshape", "postprocessing"),
                ("detection_classes", "other"),
            ],
        }.items()
        for name, part in cases
    ],
)
def test_model_parts_come_from_name_scopes(architecture, name, part):
    assert model_part(name, ARCHITECTURES[architecture]["parts"]) == part


def test_probe_measures_a_positive_rate_on_the_given_threads():
    from detbench.job_runtime import BF16_FLAGS, INT8_FLAGS

    probe = probe_rates(threads=1, size=512, repeats=2)
    assert probe["threads"] == 1 and probe["gflops_per_second"]["fp32"] > 0
    rates, flags = probe["gflops_per_second"], set(probe["cpu_flags"])
    assert ("int8" in rates) is bool(flags & set(INT8_FLAGS)) and ("bf16" in rates) is bool(flags & set(BF16_FLAGS))
    assert all(rate > 0 for rate in rates.values())


@pytest.mark.parametrize("model", ("int8", "fp32", "int8_inc", "bf16"))
def test_benchmark_json_has_the_profile_flops_and_roofline(finished_run, model):
    result = json.loads((finished_run.workdir / f"results/benchmark/{model}.json").read_text())
    profile = result["profile"]
    assert profile["traced_steps"] == 3 and list(profile["by_part_ms"]) == [*RFCN_PARTS, OTHER_PART]
    assert sum(profile["by_part_ms"].values()) == pytest.approx(profile["op_time_ms"])
    # The demo detector's scopes: its convolution, its box finding, and the cast of the input.
    parts = profile["by_part_ms"]
    assert parts["first_stage_feature_extractor"] > 0 and parts["postprocessing_nms"] > 0
    assert parts["preprocessing"] > 0 and parts["second_stage_feature_extractor"] == 0
    assert result["flops"]["by_part"]["first_stage_feature_extractor"] == result["flops"]["total"]
    # The demo detectors' one 1x1 convolution, 3 to 7 channels, on a 320x240 image; quantized or not.
    assert result["flops"]["total"] == 2 * 320 * 240 * 7 * 3 and result["flops"]["ops_counted"] == 1
    roofline = result["roofline"]
    # Against the probe of the model's own precision, where this CPU has one.
    precision = result["precision"] if result["precision"] in result["probe"]["gflops_per_second"] else "fp32"
    assert roofline["probe_precision"] == precision
    assert roofline["achieved_gflops_per_second"] == pytest.approx(
        roofline["gflops_per_image"] * result["throughput_images_per_second"]
    )
    if precision == result["precision"]:
        assert 0 < roofline["fraction_of_probe"] < 1
    else:  # no probe of its own precision here: no share of a borrowed rate
        assert roofline["fraction_of_probe"] is None


@pytest.mark.slow
def test_two_instances_share_the_node_and_add_up(finished_run, tmp_path):
    from helpers import run_script

    workdir = finished_run.workdir
    output = tmp_path / "fp32-2.json"
    run = run_script(
        "benchmark_instances.py",
        "--instances",
        2,
        "--graph",
        workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--image-dir",
        workdir / "resources/coco/val2017",
        "--output",
        output,
        "--number-of-steps",
        300,
        "--warmup-steps",
        20,
        "--profile-steps",
        0,
        "--intra-op-threads",
        2,
        onednn=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["instances"] == 2 and result["cores_per_instance"] == 1
    parts = result["per_instance"]
    assert len({core for part in parts for core in part["cores"]}) == 2  # disjoint, one core each
    assert result["throughput_images_per_second"] == pytest.approx(
        sum(p["throughput_images_per_second"] for p in parts)
    )
    for part, alone in zip(parts, result["instance_results"]):
        assert alone["runtime"]["intra_op_threads"] == 1 and len(alone["step_seconds"]) == 300
        assert 0 < part["steps_in_window"] <= 280
        # Throughput inside the window is what the instance did there: its steps over the window.
        assert part["throughput_images_per_second"] == pytest.approx(part["steps_in_window"] / result["window_seconds"])
    pooled = result["latency_ms"]
    assert min(p["latency_ms"]["p50"] for p in parts) <= pooled["p50"] <= max(p["latency_ms"]["p50"] for p in parts)
    assert "[instance 0] " in run.stderr and "[instance 1] " in run.stderr and not list(tmp_path.glob(".instances-*"))


def test_layouts_plan_one_benchmark_job_each(finished_run):
    finished_run.config["benchmark"]["instances"] = [1, 2]
    try:
        assert finished_run.planned_jobs() == {"benchmark_instances": 7, "make_report": 1, "all": 1}
    finally:
        finished_run.config["benchmark"].pop("instances")


@pytest.mark.slow
def test_instances_sharing_a_job_write_the_same_detections(finished_run, tmp_path, demo_data, file_server):
    """Two shards, each a job of two pinned instances with one thread: the single-instance run's file."""
    from helpers import Workflow

    from tools.demo.demo_config import demo_config

    config = demo_config(demo_data, file_server.url)
    config["accuracy"].update(shards=2, instances_per_node=2)
    workflow = Workflow(tmp_path / "run", config)
    target = "results/accuracy/fp32_detections.json"
    workflow.run(target)
    folder = workflow.workdir / "results/accuracy/fp32"
    shards = [json.loads((folder / f"detections-{k}-of-2.json").read_text()) for k in (0, 1)]
    for k, shard in enumerate(shards):
        instances = shard["instances"]
        assert [(item["shard"], item["shards"]) for item in instances] == [(k, 4), (k + 2, 4)]
        (first, second) = [set(item["cores"]) for item in instances]
        assert len(first) == len(second) == 1 and not first & second
        assert [item["runtime"]["intra_op_threads"] for item in instances] == [1, 1]
        assert shard["record_indices"] == sorted(shard["record_indices"])
    assert not list(folder.glob(".*"))  # the parts are merged and gone
    assert (workflow.workdir / target).read_bytes() == (finished_run.workdir / target).read_bytes()
    log = (workflow.workdir / "logs/detect_objects/fp32-1-of-2.log").read_text()
    assert "[instance 0] " in log and "[instance 1] " in log


@pytest.mark.slow
def test_detection_instances_merge_in_record_order_and_keep_finished_parts(finished_run, tmp_path):
    """Instance 1's part, finished by an earlier run, is kept; instance 0 runs; the merged
    output has the single process's images and detections, in record order; the parts, and
    those of a run with another instance count, are gone."""
    from helpers import error_lines, run_script

    workdir = finished_run.workdir
    common = [
        "--graph",
        workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--records",
        workdir / "resources/coco_tfrecord",
        "--intra-op-threads",
        2,
    ]
    output = tmp_path / "detections.json"
    part = tmp_path / ".detections.instance-1-of-2.json"
    run = run_script("detect_objects.py", *common, "--output", part, "--shard", 1, "--shards", 2)
    assert run.returncode == 0, run.stderr[-2000:]
    stale = [tmp_path / ".detections.instance-2-of-3.json", tmp_path / "..detections.instance-2-of-3.json.checkpoint"]
    for path in stale:
        path.write_text("{}")  # left by an interrupted run with 3 instances
    run = run_script("detect_objects.py", *common, "--output", output, "--instances", 2)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "instance 1: its part was finished by an earlier run" in run.stderr
    assert "[instance 0] " in run.stderr and "[instance 1] " not in run.stderr
    merged = json.loads(output.read_text())
    single = json.loads((workdir / "results/accuracy/fp32/detections-0-of-1.json").read_text())
    for key in ("image_ids", "record_indices", "detections", "executed_kernels"):
        assert merged[key] == single[key], key
    assert not part.exists() and not any(path.exists() for path in stale)

    # A graph no instance can load: one line naming each instance's cause, and no output.
    broken = tmp_path / "broken.pb"
    broken.write_bytes(b"not a graph")
    run = run_script(
        "detect_objects.py", *common[2:], "--graph", broken, "--output", tmp_path / "o.json", "--instances", 2
    )
    assert run.returncode == 1 and not (tmp_path / "o.json").exists()
    (line,) = error_lines(run)
    assert line.startswith("error: 2 of 2 instances failed (instance 0: ") and "not a TensorFlow GraphDef" in line


def test_no_share_of_a_borrowed_rate():
    """INT8 on a CPU without INT8 instructions has no probe of its own: FP32's rate is named
    beside it, but no share (an INT8 rate over an FP32 one read 152-161%)."""
    from detbench.performance import roofline

    probe = {"gflops_per_second": {"fp32": 100.0}}
    own = roofline({"total": 2e9}, 1, 40.0, {"gflops_per_second": {"fp32": 100.0, "int8": 400.0}}, "int8")
    assert own["probe_precision"] == "int8" and own["fraction_of_probe"] == pytest.approx(0.2)
    borrowed = roofline({"total": 2e9}, 1, 80.0, probe, "int8")
    assert borrowed["probe_precision"] == "fp32" and borrowed["fraction_of_probe"] is None
    assert borrowed["achieved_gflops_per_second"] == pytest.approx(160.0)
