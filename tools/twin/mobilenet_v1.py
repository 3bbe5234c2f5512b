"""research/slim's `nets.mobilenet_v1`, which tf-slim does not ship: the two functions the
Object Detection API's SSD MobileNet v1 feature extractor calls, with upstream's layer names
and scopes (Conv2d_0, then Conv2d_<k>_depthwise and Conv2d_<k>_pointwise for k = 1..13), so
that the twin's nodes are named as in Intel's graphs. Written for the twin from the published
architecture (Howard et al. 2017, table 1); odapi_compat installs it as `nets.mobilenet_v1`.
"""

import contextlib

import tensorflow.compat.v1 as tf
import tf_slim as slim

# (kind, stride, depth) of the 14 layers: a full 3x3 convolution, then 13 depthwise-separable ones.
LAYERS = (("conv", 2, 32),) + tuple(
    ("separable", stride, depth)
    for stride, depth in (
        (1, 64),
        (2, 128),
        (1, 128),
        (2, 256),
        (1, 256),
        (2, 512),
        (1, 512),
        (1, 512),
        (1, 512),
        (1, 512),
        (1, 512),
        (2, 1024),
        (1, 1024),
    )
)


def fixed_padding(inputs, kernel_size):
    """Pads as SAME would for stride 1, so that VALID convolutions match TensorFlow's SAME ones
    whatever the input size (use_explicit_padding)."""
    total = kernel_size - 1
    before = total // 2
    return tf.pad(inputs, [[0, 0], [before, total - before], [before, total - before], [0, 0]])


@contextlib.contextmanager
def entered(scope, inputs):
    """The variable scope of the layers. A scope object (the SSD feature extractor passes its
    own "MobilenetV1") is re-entered under its original name scope: TensorFlow 2's compat.v1
    would open a nested one, and name the nodes MobilenetV1/MobilenetV1/..., unlike Intel's."""
    if isinstance(scope, tf.VariableScope):
        with tf.variable_scope(scope, auxiliary_name_scope=False), tf.name_scope(scope.original_name_scope):
            yield
    else:
        with tf.variable_scope(scope, "MobilenetV1", [inputs]):
            yield


def mobilenet_v1_base(
    inputs,
    final_endpoint="Conv2d_13_pointwise",
    min_depth=8,
    depth_multiplier=1.0,
    conv_defs=None,
    output_stride=None,
    use_explicit_padding=False,
    scope=None,
):
    """The convolutional body up to `final_endpoint`; returns (net, end_points)."""
    if conv_defs is not None or output_stride is not None:
        raise NotImplementedError("the twin's MobileNet v1 has upstream's layers at stride 32 only")
    if depth_multiplier <= 0:
        raise ValueError("depth_multiplier must be greater than zero")

    def depth(channels):
        return max(int(channels * depth_multiplier), min_depth)

    padding = "VALID" if use_explicit_padding else "SAME"
    end_points = {}
    with entered(scope, inputs):
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d], padding=padding):
            net = inputs
            for index, (kind, stride, channels) in enumerate(LAYERS):
                if use_explicit_padding:
                    net = fixed_padding(net, 3)
                if kind == "conv":
                    end_point = f"Conv2d_{index}"
                    net = slim.conv2d(net, depth(channels), [3, 3], stride=stride, scope=end_point)
                    end_points[end_point] = net
                else:
                    end_point = f"Conv2d_{index}_depthwise"
                    net = slim.separable_conv2d(net, None, [3, 3], depth_multiplier=1, stride=stride, scope=end_point)
                    end_points[end_point] = net
                    if end_point == final_endpoint:
                        return net, end_points
                    end_point = f"Conv2d_{index}_pointwise"
                    net = slim.conv2d(net, depth(channels), [1, 1], stride=1, scope=end_point)
                    end_points[end_point] = net
                if end_point == final_endpoint:
                    return net, end_points
    raise ValueError(f"unknown final_endpoint {final_endpoint}")


def mobilenet_v1_arg_scope(
    is_training=True,
    weight_decay=0.00004,
    stddev=0.09,
    regularize_depthwise=False,
    batch_norm_decay=0.9997,
    batch_norm_epsilon=0.001,
    batch_norm_updates_collections=tf.GraphKeys.UPDATE_OPS,
    normalizer_fn=slim.batch_norm,
):
    """Upstream's defaults: truncated-normal weights, ReLU6, batch norm after every convolution,
    L2 on full convolutions (and on depthwise ones with regularize_depthwise)."""
    batch_norm_params = {
        "center": True,
        "scale": True,
        "decay": batch_norm_decay,
        "epsilon": batch_norm_epsilon,
        "updates_collections": batch_norm_updates_collections,
    }
    if is_training is not None:
        batch_norm_params["is_training"] = is_training
    regularizer = slim.l2_regularizer(weight_decay)
    depthwise_regularizer = regularizer if regularize_depthwise else None
    with slim.arg_scope(
        [slim.conv2d, slim.separable_conv2d],
        weights_initializer=tf.truncated_normal_initializer(stddev=stddev),
        activation_fn=tf.nn.relu6,
        normalizer_fn=normalizer_fn,
    ):
        with slim.arg_scope([slim.batch_norm], **batch_norm_params):
            with slim.arg_scope([slim.conv2d], weights_regularizer=regularizer):
                with slim.arg_scope([slim.separable_conv2d], weights_regularizer=depthwise_regularizer) as scope:
                    return scope
