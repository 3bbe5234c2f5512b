"""The inference engines behind one interface, as MLPerf's harness has one backend per runtime:
TensorFlow (a frozen graph in a TF1 session, detection_graph's) and OpenVINO (an IR compiled
for the CPU). The stages that run a model (benchmark, detection, LoadGen) open it with
`open_engine` and call only:

- `detect(images)`: the four outputs by OUTPUT_KEYS, as numpy arrays;
- `timed_input(images)` and `run(prepared)`: what the timer surrounds (an untimed
  preprocessing is applied by the first); `run` gives what `detect` does;
- `node_times(images, steps)`: [NodeTime] of traced runs, for the profile by part and kernel;
- `facts()`: the engine, its version and its settings, for the results' provenance.
"""

from detbench.common import StageError
from detbench.detection_graph import OUTPUT_KEYS, NodeTime, detect, open_checked_session, traced_node_times
from detbench.job_runtime import ENGINES

# OpenVINO's CPU plugin computes in these element types per precision: bf16 by its inference
# precision hint (its own conversion of the FP32 model), the rest as the model's weights say.
OPENVINO_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class TensorFlowEngine:
    """A TF1 session on a frozen graph (detection_graph.open_checked_session opens it)."""

    name = "tensorflow"

    def __init__(self, session, interface):
        self.session = session
        self.interface = interface

    def detect(self, images):
        return detect(self.session, self.interface, images)

    def timed_input(self, images):
        return self.interface.timed_feed(self.session, images)

    def run(self, prepared):
        return dict(zip(OUTPUT_KEYS, self.session.run(self.interface.fetches(), prepared)))

    def node_times(self, images, steps):
        return traced_node_times(self.session, self.interface, images, steps)

    def facts(self):
        import tensorflow as tf

        return {"engine": self.name, "engine_version": tf.__version__}


def openvino_settings(applied, threads):
    """OpenVINO's CPU properties from a job's runtime settings: its threads, streams, pinning,
    latency or throughput mode, and the inference precision of its model's precision."""
    return {
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": int(applied["openvino_streams"]),
        "PERFORMANCE_HINT": applied["openvino_mode"].upper(),
        "ENABLE_CPU_PINNING": bool(applied["openvino_pinning"]),
        "INFERENCE_PRECISION_HINT": OPENVINO_INFERENCE_PRECISION[applied["precision"]],
    }


def output_ports(compiled, interface, path):
    """The compiled model's output of each OUTPUT_KEYS role, found by the graph's tensor name."""
    ports = {}
    for key, node in interface.outputs.items():
        wanted = {node, f"{node}:0"}
        port = next((output for output in compiled.outputs if wanted & set(output.get_names())), None)
        if port is None:
            names = sorted(name for output in compiled.outputs for name in output.get_names())
            raise StageError(f"{path}: the OpenVINO model has no {node} output (it has {', '.join(names)})")
        ports[key] = port
    return ports


class OpenVINOEngine:
    name = "openvino"

    def __init__(self, model_path, applied, interface, threads=None):
        import openvino as ov

        from detbench.job_runtime import usable_cores

        self.path = model_path
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(model_path))
        except RuntimeError as error:
            raise StageError(f"{model_path}: not an OpenVINO IR ({first_line(error)})") from None
        self.settings = openvino_settings(applied, threads or applied["intra_op_threads"] or usable_cores())
        self.compiled = self.core.compile_model(self.model, "CPU", self.settings)
        self.request = self.compiled.create_infer_request()
        self.ports = output_ports(self.compiled, interface, model_path)
        self.profiled = None

    def detect(self, images):
        return self.run(images)

    def timed_input(self, images):
        return images

    def run(self, prepared):
        results = self.request.infer({0: prepared})
        return {key: results[port] for key, port in self.ports.items()}

    def node_times(self, images, steps):
        """Traced runs on a second compilation with OpenVINO's performance counters on, so that
        timed runs never count: each executed node, its primitive (exec type) and time."""
        if self.profiled is None:
            compiled = self.core.compile_model(self.model, "CPU", {**self.settings, "PERF_COUNT": True})
            self.profiled = compiled.create_infer_request()
        times = []
        for _ in range(steps):
            self.profiled.infer({0: images})
            for info in self.profiled.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                micros = info.real_time.total_seconds() * 1e6
                # Node names are the IR's: those the conversion made or fused (a convolution with its
                # BatchNorm is "Multiply_2731623") lost their graph scope, and count as "other".
                times.append(NodeTime(info.node_name, info.exec_type, micros, "bf16" in info.exec_type.lower()))
        return times

    def facts(self):
        import openvino as ov

        applied = {key: self.compiled.get_property(key) for key in self.settings}
        return {
            "engine": self.name,
            "engine_version": ov.get_version(),
            "openvino_properties": {key: str(value) for key, value in applied.items()},
        }


def first_line(error):
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def open_engine(model_path, applied, interface):
    """The model at `model_path` opened on the job's engine (runtime setting `engine`;
    tensorflow: a frozen graph; openvino: an IR)."""
    engine = applied["engine"]
    if engine == "tensorflow":
        return TensorFlowEngine(open_checked_session(model_path, applied, interface), interface)
    if engine == "openvino":
        return OpenVINOEngine(model_path, applied, interface)
    raise StageError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
