"""Run the January 2019 Object Detection API (PyPI object-detection 0.0.3) on TensorFlow 2.

That code was written for TensorFlow 1.12: `import tensorflow as tf` meant the TF1 API with
`tf.contrib`, and research/slim's `nets` sat on the path. `install()` recreates that world
in this process, from PyPI packages only:
- `tensorflow` is `tensorflow.compat.v1`, in graph mode with TF1 control flow (so loops
  export as Enter/Merge/Switch/NextIteration, as in Intel's graphs);
- `tf.contrib.slim` (and the parts of `tf.contrib.framework` and `tf.contrib.layers` the
  model uses) is `tf-slim`; research/slim's `nets` is `tf_slim.nets`;
- `nets.mobilenet_v1`, which tf-slim lacks, is the twin's own (mobilenet_v1.py);
- modules the twins' paths import but never call (TPU, quantization, other backbones) are
  stand-ins that raise if anything uses them;
- the compiled protos come from `compile_protos()`.
"""

import ast
import importlib
import importlib.abc
import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

from detbench.common import import_package

# Backbones of other feature extractors: model_builder imports them all, the twins use none.
ABSENT_NETS = (
    "nets.inception_resnet_v2",
    "nets.mobilenet",
    "nets.mobilenet.mobilenet",
    "nets.mobilenet.mobilenet_v2",
    "nets.nasnet",
    "nets.nasnet.nasnet",
    "nets.nasnet.nasnet_utils",
    "nets.nasnet.pnasnet",
)


class Unavailable:
    """Stands for a TF1-only API that the twin's code path imports but never calls."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Unavailable(f"{self._name}.{attribute}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{self._name} is not available on TensorFlow 2 (odapi_compat)")


class StandInModule(types.ModuleType):
    """A module whose every attribute is Unavailable (and which can hold submodules)."""

    def __init__(self, name):
        super().__init__(name)
        self.__path__ = []

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Unavailable(f"{self.__name__}.{attribute}")


class StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of `tensorflow.contrib...` and absent `nets...` modules get stand-ins."""

    def __init__(self, prefixes, names):
        self.prefixes = prefixes
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.names or fullname.startswith(self.prefixes):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return StandInModule(spec.name)

    def exec_module(self, module):
        pass


def slim_module():
    """tf.contrib.slim as the 2019 code knew it: tf-slim, with its data decoders at the top."""
    import tf_slim
    from tf_slim.data import parallel_reader, tfexample_decoder

    slim = types.ModuleType("tensorflow.contrib.slim")
    slim.__dict__.update(public_names(tf_slim))
    slim.tfexample_decoder = tfexample_decoder
    slim.parallel_reader = parallel_reader
    return slim


def public_names(module):
    return {name: value for name, value in vars(module).items() if not name.startswith("_")}


def framework_module(tf1):
    """tf.contrib.framework: its variable and arg_scope helpers live in tf-slim now."""
    import tf_slim

    framework = StandInModule("tensorflow.contrib.framework")
    framework.__dict__.update(public_names(tf_slim))
    framework.is_tensor = tf1.is_tensor
    framework.deprecated = lambda date, instructions: lambda function: function
    return framework


def layers_module():
    import tf_slim

    layers = StandInModule("tensorflow.contrib.layers")
    layers.__dict__.update(public_names(tf_slim.layers))
    return layers


def tfprof_module(tf1):
    """tf.contrib.tfprof, which the exporter uses to print parameter and FLOP counts."""
    options = tf1.profiler.ProfileOptionBuilder
    tfprof = StandInModule("tensorflow.contrib.tfprof")
    analyzer = types.ModuleType("tensorflow.contrib.tfprof.model_analyzer")
    analyzer.TRAINABLE_VARS_PARAMS_STAT_OPTIONS = options.trainable_variables_parameter()
    analyzer.FLOAT_OPS_OPTIONS = options.float_operation()

    def print_model_analysis(graph, tfprof_options):
        return tf1.profiler.profile(graph, cmd="scope", options=tfprof_options)

    analyzer.print_model_analysis = print_model_analysis
    tfprof.model_analyzer = analyzer
    return tfprof


def resnet_v1_module():
    """research/slim's resnet_v1 API on tf-slim's: R-FCN passes spatial_squeeze, which tf-slim's
    builders lack; with num_classes=None there are no logits to squeeze, so it is dropped."""
    from tf_slim.nets import resnet_v1

    module = types.ModuleType("nets.resnet_v1")
    module.__dict__.update(public_names(resnet_v1))

    def without_spatial_squeeze(builder):
        def build(*args, spatial_squeeze=True, **kwargs):
            if kwargs.get("num_classes") and spatial_squeeze:
                raise NotImplementedError("spatial_squeeze with logits is not supported")
            return builder(*args, **kwargs)

        return build

    for depth in (50, 101, 152, 200):
        name = f"resnet_v1_{depth}"
        if hasattr(resnet_v1, name):
            setattr(module, name, without_spatial_squeeze(getattr(resnet_v1, name)))
    return module


def install(source_root):
    """Make `import object_detection` (from `source_root`) work as it did on TensorFlow 1."""
    import tensorflow as tf
    import tf_keras.src.legacy_tf_layers as legacy_tf_layers
    from tf_slim import nets as slim_nets

    tf1 = tf.compat.v1
    tf1.disable_v2_behavior()
    tf1.disable_control_flow_v2()
    # TF 2.21's tf.layers import tf_keras.legacy_tf_layers, which tf-keras ships under src/.
    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
    for name in ("base", "convolutional", "core", "normalization", "pooling", "variable_scope_shim"):
        try:
            module = importlib.import_module(f"tf_keras.src.legacy_tf_layers.{name}")
        except ImportError:
            continue
        sys.modules.setdefault(f"tf_keras.legacy_tf_layers.{name}", module)

    contrib = StandInModule("tensorflow.contrib")
    contrib.slim = slim_module()
    contrib.framework = framework_module(tf1)
    contrib.layers = layers_module()
    contrib.tfprof = tfprof_module(tf1)
    tf1.contrib = contrib
    sys.modules["tensorflow.contrib"] = contrib
    sys.modules["tensorflow.contrib.slim"] = contrib.slim
    sys.meta_path.insert(0, StandInFinder(("tensorflow.contrib.",), ABSENT_NETS))

    nets = types.ModuleType("nets")
    nets.__path__ = list(slim_nets.__path__)
    sys.modules["nets"] = nets
    for name in ("resnet_utils", "inception_v2", "inception_v3"):
        module = importlib.import_module(f"tf_slim.nets.{name}")
        sys.modules[f"nets.{name}"] = module
        setattr(nets, name, module)
    nets.resnet_v1 = sys.modules["nets.resnet_v1"] = resnet_v1_module()
    nets.mobilenet_v1 = sys.modules["nets.mobilenet_v1"] = importlib.import_module("tools.twin.mobilenet_v1")

    sys.modules["tensorflow"] = tf1
    import_package(source_root, "object_detection")


def serialized_descriptor(pb2_source):
    """The FileDescriptorProto bytes an old generated `_pb2.py` holds (`serialized_pb=_b('...')`)."""
    for node in ast.walk(ast.parse(pb2_source)):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = node.value
            if isinstance(value, ast.Call) and value.args:
                value = value.args[0]
            literal = ast.literal_eval(value)
            return literal if isinstance(literal, bytes) else literal.encode("latin-1")
    raise ValueError("no serialized_pb in the generated module")


def compile_protos(old_pb2_files, output_root):
    """Regenerate `_pb2.py` modules for today's protobuf from old ones' embedded descriptors.

    The 2019 modules build descriptors by hand, which protobuf 4+ refuses; the descriptors
    they carry go into a descriptor set that protoc turns into current modules.
    """
    from google.protobuf import descriptor_pb2

    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for path in old_pb2_files:
        descriptor_set.file.add().ParseFromString(serialized_descriptor(Path(path).read_text()))
    set_path = Path(output_root) / "object_detection_protos.desc"
    set_path.write_bytes(descriptor_set.SerializeToString())
    names = [file.name for file in descriptor_set.file]
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--descriptor_set_in={set_path}",
        f"--python_out={output_root}",
        *names,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    set_path.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed: {result.stderr.strip()}")
    return names
