"""The residual sums an exporter merged with a BatchNorm offset, reordered before quantization."""

import numpy as np
import pytest

from detbench.residual_bias import split_residual_biases


def residual_block(tf, seed=0):
    """conv -> AddN(conv, shortcut) -> Add(offset, .): the shape TensorFlow's arithmetic optimizer
    gives a MobileNetV2 block whose projection's BatchNorm offset meets the shortcut."""
    generator = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 4], name="images")
        shortcut = tf.nn.relu6(images, name="shortcut")
        weights = tf.constant(generator.normal(0, 0.5, (1, 1, 4, 4)).astype(np.float32))
        conv = tf.nn.conv2d(shortcut, weights, [1, 1, 1, 1], "SAME", name="project/Conv2D")
        merged = tf.math.add_n([conv, shortcut], name="AddOpsRewrite_Leaf_1_add")
        offset = tf.constant(generator.normal(0, 1, 4).astype(np.float32), name="project/offset")
        tf.add(offset, merged, name="AddOpsRewrite_add")
    return graph.as_graph_def()


def run(tf, graph_def, images):
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run("AddOpsRewrite_add:0", {"images:0": images})


def test_a_merged_residual_sum_becomes_a_biased_convolution_then_the_shortcut():
    tf = pytest.importorskip("tensorflow")
    graph_def = residual_block(tf)
    rewritten, names = split_residual_biases(graph_def)
    assert names == ["AddOpsRewrite_add"]
    nodes = {node.name: node for node in rewritten.node}
    assert "AddOpsRewrite_Leaf_1_add" not in nodes
    assert nodes["project/Conv2D/bias_add"].op == "BiasAdd"
    assert list(nodes["project/Conv2D/bias_add"].input) == ["project/Conv2D", "project/offset"]
    assert nodes["AddOpsRewrite_add"].op == "AddV2"
    assert list(nodes["AddOpsRewrite_add"].input) == ["project/Conv2D/bias_add", "shortcut"]
    images = np.random.default_rng(1).normal(0, 3, (2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(run(tf, rewritten, images), run(tf, graph_def, images), rtol=1e-5, atol=1e-5)


def test_sums_that_are_not_a_bias_and_a_shortcut_are_left_alone():
    tf = pytest.importorskip("tensorflow")
    graph_def = residual_block(tf)
    for node in graph_def.node:
        if node.name == "project/offset":  # a scalar is no per-channel offset
            node.attr["value"].tensor.tensor_shape.ClearField("dim")
            node.attr["value"].tensor.tensor_content = np.float32(0.5).tobytes()
    rewritten, names = split_residual_biases(graph_def)
    assert names == [] and rewritten is graph_def
