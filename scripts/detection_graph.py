"""Frozen Object Detection API graphs: loading, interface and kernel checks, sessions, runtime.

Shared by the stage scripts that check, benchmark and evaluate the graphs.
"""

import argparse
import glob
import json
import logging
import os
import re
import resource
import shutil
import sys
from collections import Counter
from pathlib import Path

from common import StageError, file_digests

log = logging.getLogger("detection_graph")

INPUT_NODE = "image_tensor"
OUTPUT_NODES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
# Intel's fused quantized ops have working CPU kernels only through oneDNN; without it
# TensorFlow accepts the graph and then fails with "Missing 0-th output".
ONEDNN_ONLY_PREFIXES = (
    "QuantizedConv2DWith",
    "QuantizedDepthwiseConv2DWith",
    "QuantizedMatMulWith",
    "QuantizedConv2DAndRelu",
    "QuantizedConv2DAndRequantize",
)
RELAUNCHED = "RFCN_RUNTIME_APPLIED"
RUNTIME_SETTINGS = "RFCN_RUNTIME_SETTINGS"
TCMALLOC_PATTERNS = ("libtcmalloc.so.4", "libtcmalloc.so", "libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
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


def check_interface(graph_def, path):
    """The Object Detection API interface: image_tensor in, the four detection outputs."""
    names = {node.name for node in graph_def.node}
    missing = [name for name in (INPUT_NODE, *OUTPUT_NODES) if name not in names]
    if missing:
        raise StageError(f"{path}: not a detection graph, it has no {', '.join(missing)} node")


def onednn_enabled():
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") == "1"


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
            kernel.device_type in CPU_PLACEABLE_DEVICES
            for kernel in kernels.get_registered_kernels_for_op(op).kernel
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
        raise StageError(
            f"{path}: {', '.join(needs_onednn)} run only with oneDNN: set TF_ENABLE_ONEDNN_OPTS=1"
        )


def open_session(graph_def, intra_op_threads=0, inter_op_threads=0):
    """A TF1 session on the imported graph; 0 threads means TensorFlow's default."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    config = tf1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
    )
    return tf1.Session(graph=graph, config=config)


def open_checked_session(graph_path, applied):
    """Load a frozen graph, check its interface and kernels, and open a session with the
    runtime's thread counts: what every job that runs a graph does first."""
    graph_def = load_graph_def(graph_path)
    check_interface(graph_def, graph_path)
    check_kernels(graph_def, graph_path)
    return open_session(graph_def, applied["intra_op_threads"], applied["inter_op_threads"])


FETCHES = [f"{name}:0" for name in OUTPUT_NODES]


def detect(session, images, run_options=None, run_metadata=None):
    """Run the graph on a uint8 [N, H, W, 3] batch; returns the four outputs by name."""
    outputs = session.run(
        FETCHES, {f"{INPUT_NODE}:0": images}, options=run_options, run_metadata=run_metadata
    )
    return dict(zip(OUTPUT_NODES, outputs))


def traced_node_times(session, images, steps=1):
    """[(node name, kernel or None, microseconds)] of `steps` fully traced runs on `images`."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    times = []
    for _ in range(steps):
        metadata = tf1.RunMetadata()
        detect(session, images, tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE), metadata)
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                # timeline_label reads "[allocation] name = Kernel(inputs)".
                label = node.timeline_label.split("] ")[-1]
                kernel = label.split(" = ", 1)[1].split("(")[0] if " = " in label else None
                times.append((node.node_name, kernel, node.all_end_rel_micros))
    return times


def kernels_in(node_times):
    """The kernels that ran, e.g. _MklQuantizedConv2DWithBiasAndReluAndRequantize."""
    return sorted({kernel for _, kernel, _ in node_times if kernel})


def executed_kernels(session, images):
    """The kernels one traced run executed."""
    return kernels_in(traced_node_times(session, images))


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


def find_tcmalloc():
    for directory in LIBRARY_DIRS:
        for pattern in TCMALLOC_PATTERNS:
            found = sorted(glob.glob(os.path.join(directory, pattern)))
            if found:
                return found[0]
    return None


def usable_cores():
    return len(os.sched_getaffinity(0))


def runtime_environment(settings):
    """The environment a job runs in: threads, OpenMP, oneDNN, TCMalloc.

    settings: intra_op_threads, inter_op_threads, omp_num_threads (0 = all usable cores),
    kmp_blocktime, kmp_affinity, onednn, tcmalloc.
    """
    environment = dict(os.environ)
    cores = usable_cores()
    applied = {
        "intra_op_threads": settings["intra_op_threads"] or cores,
        "inter_op_threads": settings["inter_op_threads"] or 1,
        "omp_num_threads": settings["omp_num_threads"] or settings["intra_op_threads"] or cores,
        "kmp_blocktime": settings["kmp_blocktime"],
        "kmp_affinity": settings["kmp_affinity"],
        "onednn": bool(settings["onednn"]),
        "tcmalloc": None,
        "numa_socket": settings.get("numa_socket"),
    }
    environment["OMP_NUM_THREADS"] = str(applied["omp_num_threads"])
    environment["KMP_BLOCKTIME"] = str(applied["kmp_blocktime"])
    environment["KMP_AFFINITY"] = str(applied["kmp_affinity"])
    environment["TF_ENABLE_ONEDNN_OPTS"] = "1" if applied["onednn"] else "0"
    if settings["tcmalloc"]:
        library = find_tcmalloc()
        if library:
            preload = environment.get("LD_PRELOAD", "")
            environment["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
            applied["tcmalloc"] = library
        else:
            log.warning("TCMalloc requested but not installed (libtcmalloc); running without it")
    environment[RUNTIME_SETTINGS] = json.dumps(applied)
    return environment, applied


def apply_runtime(settings):
    """Re-execute this script under its runtime environment (once); returns what was applied.

    Thread counts, OpenMP, oneDNN and LD_PRELOAD only take effect in a new process.
    """
    if os.environ.get(RELAUNCHED) == "1":
        return json.loads(os.environ[RUNTIME_SETTINGS])
    environment, applied = runtime_environment(settings)
    environment[RELAUNCHED] = "1"
    command = [sys.executable, *sys.argv]
    socket = settings.get("numa_socket")
    if socket is not None:
        numactl = shutil.which("numactl")
        if numactl is None:
            raise StageError(f"numa_socket is {socket} but numactl is not installed")
        command = [numactl, f"--cpunodebind={socket}", f"--membind={socket}", *command]
    log.info("runtime: %s", json.dumps(applied))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environment)


def add_runtime_arguments(parser):
    group = parser.add_argument_group("runtime")
    group.add_argument("--intra-op-threads", type=int, default=0, help="0: all usable cores")
    group.add_argument("--inter-op-threads", type=int, default=1)
    group.add_argument("--omp-num-threads", type=int, default=0, help="0: as intra-op threads")
    group.add_argument("--kmp-blocktime", type=int, default=1)
    group.add_argument("--kmp-affinity", default="granularity=fine,compact,1,0")
    group.add_argument("--onednn", action=argparse.BooleanOptionalAction, default=True, help="TF_ENABLE_ONEDNN_OPTS")
    group.add_argument("--tcmalloc", action=argparse.BooleanOptionalAction, default=False, help="LD_PRELOAD TCMalloc")
    group.add_argument("--numa-socket", type=int, help="bind to one socket with numactl")


def runtime_settings(args):
    return {
        "intra_op_threads": args.intra_op_threads,
        "inter_op_threads": args.inter_op_threads,
        "omp_num_threads": args.omp_num_threads,
        "kmp_blocktime": args.kmp_blocktime,
        "kmp_affinity": args.kmp_affinity,
        "onednn": args.onednn,
        "tcmalloc": args.tcmalloc,
        "numa_socket": args.numa_socket,
    }


def runtime_arguments(settings):
    """The command-line flags that give `settings` back (for a child process)."""
    arguments = [
        f"--intra-op-threads={settings['intra_op_threads']}",
        f"--inter-op-threads={settings['inter_op_threads']}",
        f"--omp-num-threads={settings['omp_num_threads']}",
        f"--kmp-blocktime={settings['kmp_blocktime']}",
        f"--kmp-affinity={settings['kmp_affinity']}",
        "--onednn" if settings["onednn"] else "--no-onednn",
        "--tcmalloc" if settings["tcmalloc"] else "--no-tcmalloc",
    ]
    if settings["numa_socket"] is not None:
        arguments.append(f"--numa-socket={settings['numa_socket']}")
    return arguments


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def tcmalloc_loaded():
    """Whether TCMalloc is mapped into this process (LD_PRELOAD took effect)."""
    try:
        return "tcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def memory_policy():
    """This process's NUMA memory policy as the kernel reports it ("default", "bind:0", ...)."""
    try:
        first = Path("/proc/self/numa_maps").read_text().split("\n", 1)[0]
        return first.split()[1]
    except (OSError, IndexError):
        return None


def environment_facts(graph_path, applied, graph_sha256=None):
    """What a result must say about where it came from (`graph_sha256`: if already known)."""
    import tensorflow as tf

    return {
        "graph": str(graph_path),
        "graph_sha256": graph_sha256 or file_digests(graph_path, ("sha256",))["sha256"],
        "tensorflow_version": tf.__version__,
        "onednn": onednn_enabled(),
        "cpu_model": cpu_model(),
        "usable_cores": usable_cores(),
        "runtime": applied,
        "tcmalloc_loaded": tcmalloc_loaded(),
        "memory_policy": memory_policy(),
        # Peak resident memory of the job so far: graph, session and images.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
