"""Frozen detection graphs: loading, interface and kernel checks, sessions (FP32, INT8, or BF16
by oneDNN's automatic mixed precision), running them, tracing what ran, decoding images.

Shared by the stage scripts that check, benchmark and evaluate the graphs. How a job runs
(threads, pinning, provenance) is job_runtime's.
"""

import logging
import re
from collections import Counter
from pathlib import Path

from detbench.common import StageError
from detbench.job_runtime import onednn_enabled

log = logging.getLogger("detection_graph")

# What detect() returns, by the Object Detection API's names: the results format every stage
# reads. A graph's own tensor names (models.<name>.input and .outputs) map onto these.
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
OUTPUT_ROLES = ("boxes", "scores", "classes", "count")
# Intel's fused quantized ops have working CPU kernels only through oneDNN; without it
# TensorFlow accepts the graph and then fails with "Missing 0-th output".
ONEDNN_ONLY_PREFIXES = (
    "QuantizedConv2DWith",
    "QuantizedDepthwiseConv2DWith",
    "QuantizedMatMulWith",
    "QuantizedConv2DAndRelu",
    "QuantizedConv2DAndRequantize",
)
JPEG_SUFFIXES = (".jpg", ".jpeg")


def list_images(image_dir, purpose="images"):
    """The JPEGs of a folder in name order, whatever the case of their suffix (.jpg, .JPG,
    .jpeg), so that a folder copied from a camera or from Windows is read whole."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise StageError(f"{folder}: no such folder of {purpose}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in JPEG_SUFFIXES and p.is_file())
    if not images:
        raise StageError(f"{folder}: no .jpg or .jpeg {purpose} in it")
    return images


def load_graph_def(path, label=None):
    """Parse a frozen graph; a truncated or foreign file gives a one-line error naming `label`
    (default: the path)."""
    label = label or path
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except DecodeError as error:
        raise StageError(f"{label}: not a TensorFlow GraphDef, or truncated ({error})") from None
    if not graph_def.node:
        raise StageError(f"{label}: the GraphDef has no nodes")
    return graph_def


def source_node(input_name):
    """The node an input names: "scope/op:1" and the control input "^scope/op" are scope/op."""
    return input_name.lstrip("^").split(":")[0]


def op_counts(graph_def):
    return Counter(node.op for node in graph_def.node)


class Interface:
    """A graph's input tensor and its four detection outputs, by node name; `timed_from`: a
    tensor whose computation the benchmark runs before its timer (an untimed preprocessing)."""

    def __init__(self, input_tensor, outputs, timed_from=None):
        self.input = input_tensor
        self.outputs = dict(zip(OUTPUT_KEYS, outputs))
        self.timed_from = timed_from

    def feed(self, images):
        return {f"{self.input}:0": images}

    def fetches(self):
        return [f"{name}:0" for name in self.outputs.values()]

    def timed_feed(self, session, images):
        """What the timed run is fed: the images, or what they give at `timed_from`."""
        if not self.timed_from:
            return self.feed(images)
        tensor = f"{self.timed_from}:0"
        return {tensor: session.run(tensor, self.feed(images))}

    @classmethod
    def of_model(cls, model):
        """A registry entry's (models.<name>, defaults filled in). A model with a preprocessing
        graph runs joined to it (prepare_frozen_graph): images go to the preprocessor's input."""
        outputs = [model["outputs"][role] for role in OUTPUT_ROLES]
        preprocess = model.get("preprocess")
        if preprocess:
            return cls(preprocess["input"], outputs, None if preprocess["timed"] else preprocess["output"])
        return cls(model["input"]["tensor"], outputs)

    def arguments(self):
        """The flags that give this interface to a stage script: the one builder of them."""
        flags = [f"--input-tensor={self.input}", f"--outputs={','.join(self.outputs.values())}"]
        return flags + ([f"--timed-from={self.timed_from}"] if self.timed_from else [])


def add_interface_arguments(parser):
    """--input-tensor and --outputs; not given, the schema's defaults (the Object Detection API's)."""
    default = default_interface()
    group = parser.add_argument_group("graph interface")
    group.add_argument("--input-tensor", default=default.input, help="uint8 [N, H, W, 3] input node")
    group.add_argument(
        "--outputs",
        default=",".join(default.outputs.values()),
        help="the boxes, scores, classes and count nodes, comma-separated",
    )
    group.add_argument(
        "--timed-from",
        help="benchmark: compute this tensor before the timer and time the rest "
        "(an untimed preprocessing, models.<name>.preprocess.timed: false)",
    )


def default_interface():
    """The Object Detection API's interface, as the schema's defaults give it."""
    from detbench.config_schema import schema_defaults

    return Interface.of_model(schema_defaults("models.*"))


def interface_of(args):
    outputs = args.outputs.split(",")
    if len(outputs) != len(OUTPUT_ROLES) or not all(outputs):
        raise StageError(f"--outputs {args.outputs!r}: give four node names, {', '.join(OUTPUT_ROLES)}")
    return Interface(args.input_tensor, outputs, args.timed_from)


def check_interface(graph_def, path, interface):
    """The graph has the interface's input and four outputs."""
    names = {node.name for node in graph_def.node}
    missing = [name for name in (interface.input, *interface.outputs.values()) if name not in names]
    if missing:
        raise StageError(
            f"{path}: not a detection graph, it has no {', '.join(missing)} node "
            "(models.<name>.input.tensor and outputs name a graph's own)"
        )


def join_preprocessing(preprocess_def, detector_def, preprocess_output, detector_input, label):
    """One graph: `preprocess_def`, then `detector_def` fed by its `preprocess_output` instead
    of its own `detector_input` placeholder (Intel's SSD-MobileNet INT8 graph and its separate
    preprocessing graph). Node names must not clash; errors name `label`."""
    from tensorflow.core.framework import graph_pb2

    preprocess_names = {node.name for node in preprocess_def.node}
    if preprocess_output not in preprocess_names:
        raise StageError(
            f"{label}: the preprocessing graph has no {preprocess_output} node (models.<name>.preprocess.output)"
        )
    detector_names = {node.name for node in detector_def.node}
    if detector_input not in detector_names:
        raise StageError(f"{label}: the graph has no {detector_input} node (models.<name>.input.tensor)")
    clashes = sorted((preprocess_names & detector_names) - {detector_input})
    if clashes:
        raise StageError(
            f"{label}: the graph and its preprocessing graph both have nodes named "
            f"{', '.join(clashes[:3])}{' ...' if len(clashes) > 3 else ''}"
        )
    joined = graph_pb2.GraphDef()
    joined.versions.CopyFrom(detector_def.versions)
    joined.library.CopyFrom(detector_def.library)
    joined.node.extend(preprocess_def.node)
    for node in detector_def.node:
        if node.name == detector_input:
            continue
        copy = joined.node.add()
        copy.CopyFrom(node)
        for index, name in enumerate(copy.input):
            if source_node(name) == detector_input:
                copy.input[index] = name.replace(detector_input, preprocess_output, 1)
    return joined


# Kernels registered for DEFAULT run on any device, CPU included: TF1 control flow and
# Assert have only those (NextIteration: DEFAULT, GPU, TPU; Assert: DEFAULT).
CPU_PLACEABLE_DEVICES = ("CPU", "DEFAULT")


def ops_without_cpu_kernel(graph_def):
    """(ops unknown to this TensorFlow, ops it knows but would not place on CPU)."""
    from tensorflow.python.framework import kernels, op_def_registry

    unknown, no_cpu_kernel = [], []
    for op in sorted(op_counts(graph_def)):
        if op_def_registry.get(op) is None:
            unknown.append(op)
        elif not any(
            kernel.device_type in CPU_PLACEABLE_DEVICES for kernel in kernels.get_registered_kernels_for_op(op).kernel
        ):
            no_cpu_kernel.append(op)
    return unknown, no_cpu_kernel


def check_kernels(graph_def, path):
    """Every op of the graph must run on CPU in this TensorFlow, before anything runs."""
    check_ops_run_on_cpu(graph_def, path)
    check_onednn(graph_def, path)


def check_ops_run_on_cpu(graph_def, path):
    """Ops unknown to this TensorFlow, or with kernels for other devices only, are named."""
    import tensorflow as tf

    unknown, no_cpu_kernel = ops_without_cpu_kernel(graph_def)
    problems = []
    if unknown:
        problems.append(f"ops unknown to TensorFlow {tf.__version__}: {', '.join(unknown)}")
    if no_cpu_kernel:
        problems.append(f"ops without a CPU kernel: {', '.join(no_cpu_kernel)}")
    if problems:
        raise StageError(f"{path}: " + "; ".join(problems))


def check_onednn(graph_def, path):
    needs_onednn = sorted(op for op in op_counts(graph_def) if op.startswith(ONEDNN_ONLY_PREFIXES))
    if needs_onednn and not onednn_enabled():
        raise StageError(f"{path}: {', '.join(needs_onednn)} run only with oneDNN: set TF_ENABLE_ONEDNN_OPTS=1")


def open_session(graph_def, intra_op_threads=0, inter_op_threads=0, precision="fp32"):
    """A TF1 session on the imported graph; 0 threads means TensorFlow's default. For bf16,
    Grappler's oneDNN automatic mixed precision rewrites the FP32 graph when the session
    first runs it (Intel's zoo ran its BF16 models this way): the ops oneDNN computes well in
    bfloat16 get bfloat16 inputs through added casts, the rest stays FP32."""
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    config = tf1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
    )
    if precision == "bf16":
        rewrites = config.graph_options.rewrite_options
        rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    return tf1.Session(graph=graph, config=config)


def open_checked_session(graph_path, applied, interface):
    """Load a frozen graph, check its interface and kernels, and open a session with the
    runtime's threads and precision: what every job that runs a graph does first."""
    graph_def = load_graph_def(graph_path)
    check_interface(graph_def, graph_path, interface)
    check_kernels(graph_def, graph_path)
    return open_session(graph_def, applied["intra_op_threads"], applied["inter_op_threads"], applied["precision"])


def detect(session, interface, images, run_options=None, run_metadata=None):
    """Run the graph on a uint8 [N, H, W, 3] batch; returns the four outputs by OUTPUT_KEYS."""
    outputs = session.run(interface.fetches(), interface.feed(images), options=run_options, run_metadata=run_metadata)
    return dict(zip(OUTPUT_KEYS, outputs))


class NodeTime:
    """One node's execution in a traced step."""

    def __init__(self, name, kernel, micros, bfloat16):
        self.name, self.kernel, self.micros, self.bfloat16 = name, kernel, micros, bfloat16


def traced_node_times(session, interface, images, steps=1):
    """[NodeTime] of `steps` fully traced runs on `images`: node, kernel, microseconds, and
    whether it produced bfloat16 (what the BF16 rewrite converted, its casts included)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    bfloat16_type = tf.bfloat16.as_datatype_enum
    times = []
    for _ in range(steps):
        metadata = tf1.RunMetadata()
        detect(session, interface, images, tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE), metadata)
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                # timeline_label reads "[allocation] name = Kernel(inputs)".
                label = node.timeline_label.split("] ")[-1]
                kernel = label.split(" = ", 1)[1].split("(")[0] if " = " in label else None
                bfloat16 = any(output.tensor_description.dtype == bfloat16_type for output in node.output)
                times.append(NodeTime(node.node_name, kernel, node.all_end_rel_micros, bfloat16))
    return times


def kernels_in(node_times):
    """The kernels that ran, e.g. _MklQuantizedConv2DWithBiasAndReluAndRequantize."""
    return sorted({node.kernel for node in node_times if node.kernel})


# The casts the BF16 rewrite adds are named "<node>-0-CastToBf16-0-AutoMixedPrecision".
AMP_CAST_MARK = "AutoMixedPrecision"


def bfloat16_share(node_times):
    """How much of the traced steps ran in bfloat16: nodes (casts apart) and their op time."""
    casts = [node for node in node_times if AMP_CAST_MARK in node.name]
    computed = [node for node in node_times if node.bfloat16 and AMP_CAST_MARK not in node.name]
    total = sum(node.micros for node in node_times) or 1
    return {
        "nodes": len({node.name for node in computed}),
        "kernels": sorted({node.kernel for node in computed if node.kernel}),
        "casts": len({node.name for node in casts}),
        "op_time_fraction": sum(node.micros for node in computed) / total,
        "cast_time_fraction": sum(node.micros for node in casts) / total,
    }


def decode_image(encoded, name="image"):
    """Image bytes to uint8 [H, W, 3] as the recipe's infer_detections decodes them:
    `tf.image.decode_image(channels=3)`, TensorFlow's default JPEG DCT (not libjpeg's
    accurate one, which Pillow uses: up to 15 levels apart, enough to change detections),
    grayscale replicated to 3 channels. Every stage decodes with it, so calibration and
    layer drift see the pixels detection sees. An unreadable image is a StageError naming it."""
    import tensorflow as tf

    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    except tf.errors.OpError as error:
        # TensorFlow's text wraps the cause in the op's names: "{{function_node ...}} cause [Op:...]".
        message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", error.message or "").strip()
        if message.startswith("Unknown image file format"):
            message = "not a JPEG or another known format"
        elif "Invalid JPEG data" in message:
            message = "a truncated or damaged JPEG"
        raise StageError(f"{name}: not a readable image ({message or type(error).__name__})") from None
