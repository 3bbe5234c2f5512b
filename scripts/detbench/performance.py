"""Where a detection graph's time goes and how much work it does, against what the cores can do.

- `profile`: traced steps (run after the timed ones) added up by model part, from the node
  name scopes of an Object Detection API export, and by kernel. oneDNN fuses a convolution
  with its bias and ReLU under a new kernel name, but the fused node keeps a name in the
  same scope, so the part view holds whatever the kernels are called.
- `count_flops`: 2 x multiply-accumulates of every convolution and matrix product, plain or
  quantized, from the shapes the graph executes on a given batch (not the TF profiler's
  static count, which misses every op whose shape is only known at run time).
- `probe_rates`: the attainable rate of the job's threads: an FP32 matmul, a BF16 one where
  the CPU has BF16 instructions, and an INT8 one (a 1x1 quantized convolution, the oneDNN
  kernel INT8 graphs run) where the CPU has VNNI or AMX.
"""

import json
import time
from collections import defaultdict

import numpy as np

from detbench.detection_graph import source_node
from detbench.job_runtime import bf16_native, cpu_flags, int8_native

OTHER_PART = "other"
TOP_KERNELS = 15


def model_part(node_name, parts):
    """The part (architectures.<name>.parts: part -> node-name prefixes) a node belongs to."""
    for part, prefixes in parts.items():
        if node_name.startswith(tuple(prefixes)):
            return part
    return OTHER_PART


def add_parts_argument(parser):
    parser.add_argument(
        "--parts",
        type=json.loads,
        default={},
        help="model parts as JSON, {part: [node-name prefixes]} (architectures.<name>.parts); "
        "not given, the profile has kernels only and every node is 'other'",
    )


def parts_arguments(parts):
    """The flag that gives an architecture's parts to a stage script: the one builder of it."""
    return [f"--parts={json.dumps(parts, separators=(',', ':'))}"]


def profile(node_times, steps, parts):
    """Milliseconds per step by model part (`parts`, as model_part takes them) and by kernel
    (the TOP_KERNELS largest)."""
    by_part, by_kernel = defaultdict(float), defaultdict(float)
    for node in node_times:
        by_part[model_part(node.name, parts)] += node.micros / 1000 / steps
        by_kernel[node.kernel or node.name] += node.micros / 1000 / steps
    kernels = sorted(by_kernel.items(), key=lambda item: -item[1])
    return {
        "traced_steps": steps,
        "op_time_ms": sum(by_part.values()),
        "by_part_ms": {part: by_part.get(part, 0.0) for part in (*parts, OTHER_PART)},
        "by_kernel_ms": dict(kernels[:TOP_KERNELS]),
        "other_kernels_ms": sum(ms for _, ms in kernels[TOP_KERNELS:]),
    }


def compute_kind(op):
    """'conv', 'depthwise', 'matmul' or None for an op type, quantized forms included."""
    if op == "Conv2D" or op.startswith("QuantizedConv2D"):
        return "conv"
    if op == "DepthwiseConv2dNative" or op.startswith("QuantizedDepthwiseConv2D"):
        return "depthwise"
    if op == "MatMul" or op.startswith("QuantizedMatMul"):
        return "matmul"
    return None


def nodes_in_loops(graph_def):
    """Names of the nodes inside TF1 while loops (from an Enter, up to an Exit): their
    tensors cannot be fetched from outside the loop."""
    consumers = defaultdict(list)
    for node in graph_def.node:
        for name in node.input:
            consumers[source_node(name)].append(node)
    inside, stack = set(), [node for node in graph_def.node if node.op == "Enter"]
    while stack:
        node = stack.pop()
        if node.name in inside or node.op == "Exit":
            continue
        inside.add(node.name)
        stack += consumers[node.name]
    return inside


def flops_of(kind, node, data_shape, filter_shape, output_shape):
    out = int(np.prod(output_shape, dtype=np.int64))
    if kind == "conv":
        return 2 * out * int(np.prod(filter_shape[:3], dtype=np.int64))
    if kind == "depthwise":
        return 2 * out * int(filter_shape[0]) * int(filter_shape[1])
    transpose_a = node.attr["transpose_a"].b if "transpose_a" in node.attr else False
    depth = data_shape[0] if transpose_a else data_shape[1]
    return 2 * out * int(depth)


def count_flops(session, feed, parts):
    """FLOPs of one run on `feed`: {"total", "by_part" (`parts` as model_part takes them),
    "ops_counted", "ops_in_loops"}.

    Adds shape ops to the session's graph and runs them once.
    """
    import tensorflow as tf

    graph = session.graph
    graph_def = graph.as_graph_def()
    in_loops = nodes_in_loops(graph_def)
    counted, skipped, shapes = [], 0, []
    with graph.as_default():
        for node in graph_def.node:
            kind = compute_kind(node.op)
            if kind is None:
                continue
            if node.name in in_loops:
                skipped += 1
                continue
            operation = graph.get_operation_by_name(node.name)
            shapes.append(
                [tf.shape(operation.inputs[0]), tf.shape(operation.inputs[1]), tf.shape(operation.outputs[0])]
            )
            counted.append((kind, node))
    values = session.run(shapes, feed) if shapes else []
    by_part = defaultdict(int)
    for (kind, node), (data, weights, output) in zip(counted, values):
        by_part[model_part(node.name, parts)] += flops_of(kind, node, data, weights, output)
    return {
        "total": int(sum(by_part.values())),
        "by_part": {part: int(by_part.get(part, 0)) for part in (*parts, OTHER_PART)},
        "ops_counted": len(counted),
        "ops_in_loops": skipped,
    }


def probe_rates(threads, size=4096, repeats=5):
    """Best-of-`repeats` GFLOP/s of a size x size FP32 matmul on `threads` intra-op threads,
    of a BF16 one where the CPU has BF16 instructions and, where it accelerates INT8, GOP/s of
    an INT8 one: a 1x1 quantized convolution (64x64 positions, size / 2 channels in and out),
    the fused oneDNN kernel INT8 graphs run."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    flags = cpu_flags()
    generator = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        # Operands live in variables filled in the graph: the probe times the product, neither a
        # feed's copy nor Grappler folding constants of 64 MB (which took 20 s).
        def operands(dtype):
            return [
                tf1.get_variable(f"{name}_{dtype.name}", [size, size], dtype, tf1.random_uniform_initializer(seed=seed))
                for seed, name in enumerate("ab")
            ]

        a, b = operands(tf.float32)
        probes = {"fp32": (tf.reduce_sum(tf.matmul(a, b)[:1, :1]), 2 * size**3)}
        if bf16_native(flags):
            product = tf.matmul(*operands(tf.bfloat16))
            probes["bf16"] = (tf.reduce_sum(tf.cast(product[:1, :1], tf.float32)), 2 * size**3)
        if int8_native(flags):
            channels = size // 2
            x = tf1.get_variable("x", [1, 64, 64, channels], tf.float32, tf1.random_uniform_initializer(0, 255, seed=2))
            quantized = tf.raw_ops.QuantizeV2(input=x, min_range=0.0, max_range=255.0, T=tf.quint8, mode="SCALED")
            weights = generator.integers(-127, 127, (1, 1, channels, channels)).astype(np.int8)
            convolved = tf.raw_ops.QuantizedConv2DWithBiasAndReluAndRequantize(
                input=quantized[0],
                filter=tf.constant(weights, tf.qint8),
                bias=tf.zeros([channels]),
                min_input=quantized[1],
                max_input=quantized[2],
                min_filter=tf.constant(-127.0),
                max_filter=tf.constant(127.0),
                min_freezed_output=tf.constant(0.0),
                max_freezed_output=tf.constant(255.0),
                strides=[1, 1, 1, 1],
                padding="VALID",
                out_type=tf.quint8,
            )
            first = tf.cast(tf.bitcast(convolved[0], tf.uint8)[:, :1, :1, :1], tf.float32)
            probes["int8"] = (tf.reduce_sum(first), 2 * 64 * 64 * channels * channels)
        initialize = tf1.global_variables_initializer()
    config = tf1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    rates = {}
    with tf1.Session(graph=graph, config=config) as session:
        session.run(initialize)
        for precision, (fetch, operations) in probes.items():
            session.run(fetch)  # oneDNN primitive creation
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                session.run(fetch)
                seconds.append(time.perf_counter() - started)
            rates[precision] = operations / min(seconds) / 1e9
    return {"matmul_size": size, "threads": threads, "cpu_flags": flags, "gflops_per_second": rates}


def roofline(flops, batch_size, throughput, probe, precision):
    """Achieved rate of the benchmarked graph against the probe of its precision, per image and
    per second. Where the CPU has no probe of the graph's precision (INT8 without VNNI or AMX),
    FP32's rate is given beside it but no share: an INT8 rate over an FP32 one is no share of
    anything (it read 150% and more)."""
    own = precision in probe["gflops_per_second"]
    probe_precision = precision if own else "fp32"
    achieved = flops["total"] / batch_size * throughput / 1e9
    attainable = probe["gflops_per_second"][probe_precision]
    return {
        "gflops_per_image": flops["total"] / batch_size / 1e9,
        # GOP/s for an INT8 graph: its convolutions' multiply-accumulates, counted alike.
        "achieved_gflops_per_second": achieved,
        "probe_precision": probe_precision,
        "probe_gflops_per_second": attainable,
        "fraction_of_probe": achieved / attainable if own else None,
    }
