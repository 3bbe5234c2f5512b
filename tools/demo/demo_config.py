"""The workflow config of a generated data folder (the demo's, the twin's), served at a URL.

Apart from the data generators, so that the config's shape can change without changing what
the twin is built from (make_twin.py digests make_demo_data.py).
"""

import json
from pathlib import Path

import yaml
from tools.demo.make_demo_data import FP32_ARCHIVE, FP32_MEMBER, INT8_GRAPH

DEMO_BENCHMARK = {"number_of_steps": 60, "warmup_steps": 10, "batch_size": 1, "repeats": 2}
DEMO_IMAGE_SIZE = [320, 320]
# LoadGen in seconds, not MLPerf's 10 minutes: early stopping's 90th percentile needs 64
# queries, so the demo's percentiles are 90 (MLPerf's MultiStream and Server hold 99).
# LoadGen on the demo: Intel-style INT8 and FP32 (the other two run the same code on the same
# graph kinds), and with the OpenVINO models, OpenVINO's FP32 (demo_config).
DEMO_LOADGEN = {
    "models": ["int8", "fp32"],
    "scenarios": ["SingleStream", "Offline"],
    "min_duration_ms": 500,
    "min_query_count": {"SingleStream": 64, "MultiStream": 64, "Server": 64, "Offline": 1},
    "warmup_queries": 5,
    "multi_stream_percentile": 90,
    "server": {"percentile": 90, "search_runs": 5},
}
# The twins take seconds a sample: R-FCN's FP32 and SSD's on each engine (Faster R-CNN's 2.8 s
# a sample does not fit CI; the tests' twin run keeps SSD's only), a few queries (too few for
# early stopping: the report says INVALID, and why).
TWIN_LOADGEN = {
    **DEMO_LOADGEN,
    "models": ["fp32", "ssd_fp32", "ssd_openvino_fp32"],
    "min_duration_ms": 0,
    "min_query_count": {"SingleStream": 6, "MultiStream": 6, "Server": 6, "Offline": 4},
    "warmup_queries": 2,
}
CONFIG = Path(__file__).resolve().parents[2] / "config"
# The twin's images are few: models quantized here calibrate on 4 of them.
TWIN_CALIBRATION_IMAGES = 4


def read_config(name):
    return yaml.safe_load((CONFIG / name).read_text())


def family_models(zoo_models):
    """config/zoo.yaml's models as the twin runs them (its files bear Intel's names): quantized
    on the twin's few images, BF16 allowed to be emulated so that it runs on every CPU."""
    models = {}
    for name, model in zoo_models.items():
        model = json.loads(json.dumps(model))  # YAML anchors make entries share their dicts
        if "quantize" in model:
            model["quantize"].update(calibration_images=TWIN_CALIBRATION_IMAGES, seed=0)
        if model["precision"] == "bf16":
            model["allow_emulation"] = True
        models[name] = model
    return models


def demo_models(image_size):
    """The registry of the demo and the twin: Intel-style INT8 and FP32 downloaded, INT8
    quantized here, and BF16 from the FP32 graph, allowed to be emulated so that it runs on
    every CPU (the report says which); then the same on OpenVINO (config.yaml's openvino_*)."""
    rfcn = {"architecture": "rfcn_resnet101", "input": {"image_size": image_size}}
    openvino = {**rfcn, "engine": "openvino"}
    return {
        "int8": {**rfcn, "precision": "int8", "download": INT8_GRAPH, "mem_mb": 4000,
                 "published": {"AP": "0.320-0.327"}},
        "fp32": {**rfcn, "precision": "fp32", "download": FP32_ARCHIVE, "member": FP32_MEMBER,
                 "published": {"AP": "0.347", "AP50": "0.532"}},
        "int8_inc": {**rfcn, "precision": "int8", "mem_mb": 4000,
                     "quantize": {"from": "fp32", "calibration_images": 4, "seed": 0}},
        "bf16": {**rfcn, "precision": "bf16", "graph_of": "fp32", "allow_emulation": True},
        "openvino_fp32": {**openvino, "precision": "fp32", "graph_of": "fp32"},
        "openvino_int8": {**openvino, "precision": "int8",
                          "quantize": {"from": "fp32", "calibration_images": 4, "seed": 0}},
        "openvino_bf16": {**openvino, "precision": "bf16", "graph_of": "fp32", "allow_emulation": True},
    }


def without_openvino(models):
    """The registry without its openvino models: for runs about the workflow itself (reruns,
    clusters), which the second engine would only lengthen."""
    return {name: model for name, model in models.items() if model.get("engine", "tensorflow") == "tensorflow"}


# The real-weights data (make_real_data.py): the COCO SSDLite-MobileNetV2 of a TF.js package.
REAL_GRAPH = "ssdlite_mobilenet_v2_coco.pb"
REAL_ARCHITECTURES = {
    "ssdlite_mobilenet_v2": {
        "parts": {
            "preprocessing": ["Preprocessor/", "ToFloat"],
            "feature_extractor": ["FeatureExtractor/"],
            "box_predictor": ["BoxPredictor_"],
            "postprocessing": ["Postprocessor/", "MultipleGridAnchorGenerator/", "concat", "Squeeze"],
        },
        "layer_drift": {
            # Each of MobileNetV2's 17 inverted-residual blocks ends at its projection's BatchNorm
            # offset, or at the residual sum the exporter merged that offset into.
            "units": "MobilenetV2/(expanded_conv(?:_\\d+)?)/(?:project/BatchNorm/batchnorm/add_1|ArithmeticOptimizer/AddOpsRewrite_add)$",
            "heads": {
                "box_encodings_0": "BoxPredictor_0/BoxEncodingPredictor/BiasAdd",
                "class_logits_0": "BoxPredictor_0/ClassPredictor/BiasAdd",
                "box_encodings_5": "BoxPredictor_5/BoxEncodingPredictor/BiasAdd",
                "class_logits_5": "BoxPredictor_5/ClassPredictor/BiasAdd",
            },
        },
    }
}


def real_models():
    """FP32 as converted, INT8 quantized here on the photos (the evaluation set, as most
    published INT8 results are calibrated), and BF16 from the FP32 graph. Not on OpenVINO:
    2026.4.1 crashes on this model's FP32 IR (SIGSEGV in a TBB worker of its CPU plugin in 5 of
    8 two-thread runs over these photos' sizes; heap corruption in 1 of 3 NNCF calibrations on
    one core); docs/measurements.md has what it gave when it ran."""
    ssdlite = {"architecture": "ssdlite_mobilenet_v2", "input": {"image_size": [300, 300]}, "mem_mb": 2000}
    return {
        "ssdlite_fp32": {**ssdlite, "precision": "fp32", "download": REAL_GRAPH},
        "ssdlite_int8": {**ssdlite, "precision": "int8",
                         "quantize": {"from": "ssdlite_fp32", "calibration_images": 15, "seed": 0}},
        "ssdlite_bf16": {**ssdlite, "precision": "bf16", "graph_of": "ssdlite_fp32", "allow_emulation": True},
    }


def demo_config(data_dir, base_url, layout="single_file", openvino=False):
    """A workflow config that takes every input from the demo data, served at `base_url`.

    A data folder's manifest may hold `benchmark` settings of its own (the twin's do); what
    is left unsaid takes the schema's defaults. `openvino`: keep the registry's openvino models
    (the demo's, the twin's and the real-weights'; runs about the workflow itself leave them out).
    """
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    downloads = {
        name: {"url": f"{base_url.rstrip('/')}/{name}", "md5": md5}
        for name, md5 in manifest["md5"].items()
    }
    benchmark = dict(manifest.get("benchmark", DEMO_BENCHMARK))
    benchmark.pop("image_size", None)  # an older twin's manifest has it; it is a model's now
    recipe = read_config("config.yaml")
    architectures, models = recipe["architectures"], demo_models(DEMO_IMAGE_SIZE)
    if "architectures" in manifest:  # the twin: the recipe's sizes, and the family of config/zoo.yaml
        zoo = read_config("zoo.yaml")
        models = {**demo_models(recipe["models"]["fp32"]["input"]["image_size"]), **family_models(zoo["models"])}
        architectures = {**architectures, **zoo["architectures"]}
    drift_images = 2
    loadgen = TWIN_LOADGEN if "architectures" in manifest else DEMO_LOADGEN
    if openvino and "architectures" not in manifest:
        # LoadGen through the OpenVINO backend on one model of the demo's three.
        loadgen = {**loadgen, "models": [*loadgen["models"], "openvino_fp32"]}
    if manifest.get("registry") == "real":
        architectures, models, drift_images = REAL_ARCHITECTURES, real_models(), 4
        # A model that sees: LoadGen's accuracy log scored (its scenarios are the demo's code again).
        loadgen = {**DEMO_LOADGEN, "models": None, "scenarios": [], "accuracy": True}
    return {
        "downloads": downloads,
        "download_settings": {"retries": 2, "backoff_seconds": 0.2, "connect_timeout": 5, "read_timeout": 30},
        "coco": {
            "images_archive": "val2017.zip",
            "images_member": "val2017",
            "annotations_archive": "annotations_trainval2017.zip",
            "annotations_member": "annotations/instances_val2017.json",
        },
        "tensorflow_models": {
            "repository": f"file://{(Path(data_dir) / 'tensorflow_models').resolve()}",
            "commit": manifest["commits"][layout],
        },
        "architectures": architectures,
        "models": models if openvino else without_openvino(models),
        "benchmark": benchmark,
        "loadgen": json.loads(json.dumps(loadgen)),
        "accuracy": {"max_images": 0, "shards": 1},
        "diagnostics": {"layer_drift_images": drift_images},
    }
