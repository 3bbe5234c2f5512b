"""Where the time goes and how close to the machine's limit: profile, FLOPs, probe."""

import json

import numpy as np
import pytest

from performance import PART_NAMES, count_flops, model_part, probe_rates


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
            features = tf.nn.depthwise_conv2d(features, generator.random((3, 3, 8, 1), np.float32), [1, 1, 1, 1], "SAME")
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
        flops = count_flops(session, {"image_tensor:0": np.zeros((1, 10, 12, 3), np.float32)})
    conv = 2 * (10 * 12 * 8) * (3 * 3 * 3)
    depthwise = 2 * (10 * 12 * 8) * (3 * 3)
    matmul = 2 * (1 * 5) * 960
    assert flops["by_part"]["first_stage_feature_extractor"] == conv + depthwise
    assert flops["by_part"]["second_stage_box_predictor"] == matmul
    assert flops["total"] == conv + depthwise + matmul
    # The matmul in the while loop cannot be fetched from outside it: counted as skipped.
    assert flops["ops_counted"] == 3 and flops["ops_in_loops"] == 1


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("Preprocessor/map/while/ResizeImage/resize/ResizeBilinear", "preprocessing"),
        ("FirstStageFeatureExtractor/resnet_v1_101/resnet_v1_101/block1/unit_1/bottleneck_v1/conv1/Relu", "first_stage_feature_extractor"),
        ("Conv/Conv2D_eightbit_requantize", "rpn_box_predictor"),
        ("FirstStageBoxPredictor/ClassPredictor/BiasAdd", "rpn_box_predictor"),
        ("SecondStageFeatureExtractor/resnet_v1_101/block4/unit_3/bottleneck_v1/Relu", "second_stage_feature_extractor"),
        ("SecondStageBoxPredictor/map_1/while/CropAndResize", "second_stage_box_predictor"),
        ("SecondStagePostprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/NonMaxSuppressionV3", "postprocessing_nms"),
        ("CropAndResize", "other"),
    ],
)  # fmt: skip
def test_model_parts_come_from_name_scopes(name, part):
    assert model_part(name) == part


def test_probe_measures_a_positive_rate_on_the_given_threads():
    probe = probe_rates(threads=1, size=256, repeats=2)
    assert probe["threads"] == 1 and probe["gflops_per_second"]["fp32"] > 0
    if "avx512_vnni" in probe["cpu_flags"] or "amx_int8" in probe["cpu_flags"] or "avx_vnni" in probe["cpu_flags"]:
        assert probe["gflops_per_second"]["int8"] > 0


@pytest.mark.parametrize("precision", ("int8", "fp32", "int8_inc"))
def test_benchmark_json_has_the_profile_flops_and_roofline(finished_run, precision):
    result = json.loads((finished_run.workdir / f"results/benchmark/{precision}.json").read_text())
    profile = result["profile"]
    assert profile["traced_steps"] == 3 and set(profile["by_part_ms"]) == set(PART_NAMES)
    assert sum(profile["by_part_ms"].values()) == pytest.approx(profile["op_time_ms"])
    # The demo detectors' one 1x1 convolution, 3 to 7 channels, on a 320x240 image; quantized or not.
    assert result["flops"]["total"] == 2 * 320 * 240 * 7 * 3 and result["flops"]["ops_counted"] == 1
    roofline = result["roofline"]
    assert roofline["probe_precision"] == ("fp32" if precision == "fp32" or "int8" not in result["probe"]["gflops_per_second"] else "int8")
    assert roofline["achieved_gflops_per_second"] == pytest.approx(
        roofline["gflops_per_image"] * result["throughput_images_per_second"]
    )
    assert 0 < roofline["fraction_of_probe"] < 1
