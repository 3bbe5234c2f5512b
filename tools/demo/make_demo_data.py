#!/usr/bin/env python3
"""Generate the offline demo and test inputs: a mini COCO, a tensorflow/models stand-in, two detectors.

Everything a real run downloads has a small twin here, under the same file names:
- `files/val2017.zip` and `files/annotations_trainval2017.zip` in COCO's archive layouts;
- `files/rfcn_resnet101_int8_coco_pretrained_model.pb`, a tiny detector built from Intel's
  quantized op family, and `files/rfcn_resnet101_fp32_coco_pretrained_model.tar.gz`, its
  FP32 twin, both with the Object Detection API interface;
- `tensorflow_models/`, a git repository holding real upstream Object Detection API code
  (the `object-detection==0.0.3` snapshot from PyPI) at two commits: the 2019 sharded layout,
  and the same script patched to the recipe pin's single-file `class/label` layout.

Data and detectors are designed together so the right detections are known exactly:
every object is a solid rectangle whose colour encodes its class, and the detectors
find each colour's pixels and box them. Gray objects are never detected.
`manifest.json` records checksums and commits for the demo config.
"""

import argparse
import hashlib
import io
import json
import logging
import sys
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


from detbench.common import StageError, atomic_directory, run_main

log = logging.getLogger("make_demo_data")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WHEEL = REPO_ROOT / ".cache" / "wheels" / "object_detection-0.0.3-py3-none-any.whl"

# COCO's 80 detection categories with their real ids (1..90, with gaps).
COCO_CATEGORIES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}

# The detectors' palette: corners of the RGB cube, each a class. A corner is the only
# colour that scores above zero on its own linear filter, so a 1x1 convolution finds it.
PALETTE = {
    1: (255, 0, 0),  # person: red
    3: (0, 255, 0),  # car: green
    18: (0, 0, 255),  # dog: blue
    44: (255, 255, 0),  # bottle: yellow
    62: (255, 0, 255),  # chair: magenta
    77: (0, 255, 255),  # cell phone: cyan
    90: (255, 255, 255),  # toothbrush: white
}
UNDETECTABLE = (128, 128, 128)  # gray: inside the cube, no linear filter singles it out

# (image id, width, height, grayscale, objects); an object is (category, x, y, w, h, colour, crowd).
MINI_COCO = [
    (139, 320, 240, False, [(1, 20, 30, 80, 100, None, 0), (3, 150, 40, 100, 60, None, 0),
                            (18, 60, 150, 120, 70, None, 0)]),
    (285, 300, 300, False, [(44, 30, 30, 60, 150, None, 0), (62, 150, 100, 120, 120, None, 0)]),
    (632, 256, 192, False, [(77, 10, 10, 100, 50, None, 0), (90, 130, 80, 100, 90, None, 0),
                            (1, 20, 100, 80, 80, None, 0)]),
    (724, 240, 240, True, [(90, 60, 60, 120, 100, None, 0)]),
    (776, 200, 160, False, []),
    (785, 320, 240, False, [(3, 30, 30, 90, 90, None, 0), (52, 180, 60, 100, 120, UNDETECTABLE, 0)]),
    (802, 320, 240, False, [(1, 200, 20, 90, 180, None, 0), (1, 20, 40, 120, 150, UNDETECTABLE, 1)]),
    (872, 280, 210, False, [(18, 40, 40, 200, 130, None, 0), (44, 240, 10, 24, 30, None, 0)]),
]

MASK_THRESHOLD = 64.0  # a pure palette colour scores 128 on its filter
DETECTION_SCORES = {category: 0.95 - 0.05 * rank for rank, category in enumerate(PALETTE)}

LABEL_MAP_PROTO = """\
syntax = "proto2";

package object_detection.protos;

message StringIntLabelMapItem {
  optional string name = 1;
  optional int32 id = 2;
  optional string display_name = 3;
};

message StringIntLabelMap {
  repeated StringIntLabelMapItem item = 1;
};
"""


def image_file_name(image_id):
    return f"{image_id:012d}.jpg"


def draw_image(width, height, grayscale, objects):
    pixels = np.zeros((height, width, 3), np.uint8)
    for category, x, y, w, h, colour, _ in objects:
        pixels[y : y + h, x : x + w] = colour or PALETTE[category]
    if grayscale:
        return Image.fromarray(pixels[:, :, 0], mode="L")
    return Image.fromarray(pixels, mode="RGB")


def jpeg_bytes(image):
    buffer = io.BytesIO()
    # No chroma subsampling, so colour edges stay within a pixel of where they were drawn.
    image.save(buffer, format="JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


def uncompressed_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def annotation(annotation_id, image_id, width, height, category, x, y, w, h, crowd):
    if crowd:
        mask = np.zeros((height, width), np.uint8)
        mask[y : y + h, x : x + w] = 1
        segmentation = uncompressed_rle(mask)
    else:
        segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category,
        "bbox": [float(x), float(y), float(w), float(h)],
        "area": float(w * h),
        "iscrowd": crowd,
        "segmentation": segmentation,
    }


def mini_coco(layout=MINI_COCO, draw=draw_image, description="mini COCO val2017 for the R-FCN workflow demo"):
    """The annotations file (as a dict) and the JPEG bytes of each image, by file name.

    `layout` lists (image id, width, height, grayscale, objects) as MINI_COCO does; `draw`
    turns one entry into a PIL image.
    """
    images, annotations, jpegs = [], [], {}
    for image_id, width, height, grayscale, objects in layout:
        name = image_file_name(image_id)
        images.append(
            {"id": image_id, "file_name": name, "width": width, "height": height, "license": 1,
             "coco_url": f"http://images.cocodataset.org/val2017/{name}",
             "date_captured": "2013-11-14 17:02:52"}
        )
        jpegs[name] = jpeg_bytes(draw(width, height, grayscale, objects))
        for category, x, y, w, h, _, crowd in objects:
            annotations.append(
                annotation(len(annotations) + 1, image_id, width, height, category, x, y, w, h, crowd)
            )
    categories = [
        {"id": category, "name": name, "supercategory": "object"}
        for category, name in COCO_CATEGORIES.items()
    ]
    instances = {
        "info": {"description": description, "version": "1.0"},
        "licenses": [{"id": 1, "name": "generated", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return instances, jpegs


def write_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def build_detector(precision, extra_conv_layers=0, extra_channels=32, control_flow=False):
    """A frozen GraphDef with the Object Detection API interface that boxes palette colours.

    `extra_conv_layers` adds a tower of 3x3 convolutions over the image whose result is
    folded into the scores with a negligible weight: the same detections, at a real
    model's cost (about 1.4 GFLOPs per layer on a 320x240 image with 32 channels), for
    measuring the harness. `control_flow` reads the images through TF1 control flow, as
    Object Detection API exports do: a while loop over the batch into a TensorArray, and
    an Assert (the same detections).
    """
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    tf1 = tf.compat.v1
    if control_flow and control_flow_util.ENABLE_CONTROL_FLOW_V2:
        tf1.disable_control_flow_v2()
        try:
            return build_detector(precision, extra_conv_layers, extra_channels, control_flow)
        finally:
            tf1.enable_control_flow_v2()
    categories = list(PALETTE)
    filters = np.array([[1 if c else -1 for c in PALETTE[k]] for k in categories], np.float32).T
    biases = np.array([128.0 - sum(PALETTE[k]) for k in categories], np.float32)
    graph = tf.Graph()
    with graph.as_default():
        image = tf1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        # Scoped as an Object Detection API export is, so that time and FLOPs map to model parts.
        with tf.name_scope("Preprocessor"):
            pixels = tf1_control_flow_cast(image) if control_flow else tf.cast(image, tf.float32)
        with tf.name_scope("FirstStageFeatureExtractor"):
            kernel = filters.reshape(1, 1, 3, len(categories))
            if precision == "fp32":
                scores = tf.nn.relu(
                    tf.nn.bias_add(tf.nn.conv2d(pixels, kernel, strides=1, padding="VALID"), biases)
                )
            else:
                quantized, low, high = tf.raw_ops.QuantizeV2(
                    input=pixels, min_range=0.0, max_range=255.0, T=tf.quint8, mode="MIN_FIRST"
                )
                convolved, out_low, out_high = tf.raw_ops.QuantizedConv2DWithBiasAndReluAndRequantize(
                    input=quantized,
                    filter=tf.constant(kernel.astype(np.int8), tf.qint8),
                    bias=tf.constant(biases),
                    min_input=low,
                    max_input=high,
                    min_filter=tf.constant(-127.0),
                    max_filter=tf.constant(127.0),
                    min_freezed_output=tf.constant(0.0),
                    max_freezed_output=tf.constant(255.0),
                    strides=[1, 1, 1, 1],
                    padding="VALID",
                    out_type=tf.quint8,
                )
                scores = tf.raw_ops.Dequantize(
                    input=convolved, min_range=out_low, max_range=out_high, mode="MIN_FIRST"
                )
        # Named as an Object Detection API export names its RPN objectness: the tensor the
        # layer drift diagnostic compares across precisions.
        scores = tf.identity(scores, name="FirstStageBoxPredictor/ClassPredictor/BiasAdd")
        if extra_conv_layers:
            scores += 1e-30 * conv_tower(pixels, extra_conv_layers, extra_channels)
        with tf.name_scope("SecondStagePostprocessor"):
            mask = tf.cast(scores > MASK_THRESHOLD, tf.float32)  # [N, H, W, K]
            rows = tf.reduce_max(mask, axis=2)  # [N, H, K]
            columns = tf.reduce_max(mask, axis=1)  # [N, W, K]
            height = tf.cast(tf.shape(image)[1], tf.float32)
            width = tf.cast(tf.shape(image)[2], tf.float32)

            def first(hits):
                return tf.cast(tf.argmax(hits, axis=1), tf.float32)

            ymin = first(rows) / height
            ymax = (height - first(tf.reverse(rows, axis=[1]))) / height
            xmin = first(columns) / width
            xmax = (width - first(tf.reverse(columns, axis=[1]))) / width
            found = tf.reduce_max(rows, axis=1)  # [N, K]
            boxes = tf.stack([ymin, xmin, ymax, xmax], axis=-1) * found[..., None]
            class_scores = found * tf.constant([DETECTION_SCORES[k] for k in categories])
            sorted_scores, order = tf.nn.top_k(class_scores, k=len(categories))
            class_ids = tf.gather(tf.constant(categories, tf.float32), order)
        tf.identity(tf.gather(boxes, order, batch_dims=1), name="detection_boxes")
        tf.identity(sorted_scores, name="detection_scores")
        tf.identity(class_ids, name="detection_classes")
        tf.identity(tf.reduce_sum(found, axis=1), name="num_detections")
    return graph.as_graph_def()


def tf1_control_flow_cast(images):
    """uint8 images to float32 through a TF1 while loop (Enter, Merge, Switch, NextIteration,
    Exit), a TensorArray and an Assert: the ops whose kernels are registered for DEFAULT."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    count = tf.shape(images)[0]

    def cast_one(index, array):
        return index + 1, array.write(index, tf.cast(images[index], tf.float32))

    _, array = tf1.while_loop(lambda index, _: index < count, cast_one, [0, tf1.TensorArray(tf.float32, size=count)])
    pixels = array.stack()
    check = tf1.Assert(tf.reduce_all(pixels >= 0.0), ["negative pixel values"])
    with tf.control_dependencies([check]):
        return tf.identity(pixels)


def conv_tower(pixels, layers, channels):
    """3x3 ReLU convolutions with fixed random weights, reduced to one number per image."""
    import tensorflow as tf

    generator = np.random.default_rng(0)
    with tf.name_scope("SecondStageFeatureExtractor"):
        features = pixels / 255.0
        for _ in range(layers):
            weights = generator.normal(0, 0.1, (3, 3, features.shape[-1], channels)).astype(np.float32)
            features = tf.nn.relu(tf.nn.conv2d(features, weights, strides=1, padding="SAME"))
        return tf.reduce_mean(features, axis=[1, 2, 3])[:, None, None, None]


def git(*args, cwd):
    environment = dict(
        os.environ,
        GIT_AUTHOR_NAME="demo",
        GIT_AUTHOR_EMAIL="demo@example.invalid",
        GIT_COMMITTER_NAME="demo",
        GIT_COMMITTER_EMAIL="demo@example.invalid",
        GIT_AUTHOR_DATE="2019-01-15T12:00:00+00:00",
        GIT_COMMITTER_DATE="2019-01-15T12:00:00+00:00",
    )
    result = subprocess.run(["git", *args], cwd=cwd, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"git {args[0]} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def patch_to_single_file_layout(script):
    """Rewrite the 2019 script's output as the recipe's pin writes it: one file, class ids."""
    replacements = [
        (
            "    output_tfrecords = tf_record_creation_util.open_sharded_output_tfrecords(\n"
            "        tf_record_close_stack, output_path, num_shards)\n",
            "    writer = tf_record_close_stack.enter_context(\n"
            "        tf.python_io.TFRecordWriter(output_path))\n"
            "    output_tfrecords = [writer] * num_shards\n",
        ),
        (
            "      'image/object/class/text':\n"
            "          dataset_util.bytes_list_feature(category_names),\n",
            "      'image/object/class/label':\n"
            "          dataset_util.int64_list_feature(category_ids),\n",
        ),
    ]
    text = script.read_text()
    for old, new in replacements:
        if old not in text:
            raise StageError(f"{script}: unexpected upstream text, cannot patch")
        text = text.replace(old, new)
    script.write_text(text)


def make_models_repository(wheel, repository):
    """A git stand-in for tensorflow/models; returns the commit of each output layout."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise StageError(f"no {wheel}: fetch it with `make wheels` (pip download object-detection==0.0.3)")
    package = repository / "research" / "object_detection"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("object_detection/") and not name.endswith("/"):
                target = package / name[len("object_detection/") :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    (package / "protos" / "string_int_label_map.proto").write_text(LABEL_MAP_PROTO)
    (repository / "README.md").write_text(
        "Stand-in for tensorflow/models: research/object_detection from PyPI object-detection 0.0.3.\n"
    )
    git("init", "--quiet", "--initial-branch=master", cwd=repository)
    # Let clients fetch a single commit with only the blobs they need, as GitHub does.
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repository)
    git("config", "uploadpack.allowFilter", "true", cwd=repository)
    git("add", "--all", cwd=repository)
    git("commit", "--quiet", "-m", "object_detection from object-detection 0.0.3", cwd=repository)
    sharded = git("rev-parse", "HEAD", cwd=repository)
    patch_to_single_file_layout(package / "dataset_tools" / "create_coco_tf_record.py")
    git("commit", "--quiet", "-am", "create_coco_tf_record: one output file, class ids", cwd=repository)
    single_file = git("rev-parse", "HEAD", cwd=repository)
    return {"sharded": sharded, "single_file": single_file}


def md5_of(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


FP32_ARCHIVE = "rfcn_resnet101_fp32_coco_pretrained_model.tar.gz"
FP32_MEMBER = "rfcn_resnet101_fp32_coco/frozen_inference_graph.pb"
INT8_GRAPH = "rfcn_resnet101_int8_coco_pretrained_model.pb"


def write_coco_archives(files, instances, jpegs):
    """val2017.zip and annotations_trainval2017.zip in COCO's layouts."""
    write_zip(files / "val2017.zip", {f"val2017/{name}": data for name, data in jpegs.items()})
    write_zip(
        files / "annotations_trainval2017.zip",
        {"annotations/instances_val2017.json": json.dumps(instances)},
    )


def write_fp32_archive(files, graph_path, archive=FP32_ARCHIVE, member=FP32_MEMBER):
    """The FP32 graph in a tarball, where Intel's tarball holds it."""
    with tarfile.open(files / archive, "w:gz") as tar:
        tar.add(graph_path, arcname=member)


def write_manifest(work, files, wheel, **extra):
    """The tensorflow/models stand-in, then manifest.json: checksums, commits and `extra`."""
    repository = work / "tensorflow_models"
    repository.mkdir()
    commits = make_models_repository(wheel, repository)
    manifest = {
        "md5": {path.name: md5_of(path) for path in sorted(files.iterdir())},
        "commits": commits,
        **extra,
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def make_demo_data(output, wheel=DEFAULT_WHEEL):
    """Write everything under `output` (replaced whole); returns the manifest."""
    output = Path(output)
    with atomic_directory(output) as work:
        files = work / "files"
        files.mkdir()
        write_coco_archives(files, *mini_coco())
        (files / INT8_GRAPH).write_bytes(build_detector("int8").SerializeToString())
        fp32_graph = work / "frozen_inference_graph.pb"
        fp32_graph.write_bytes(build_detector("fp32").SerializeToString())
        write_fp32_archive(files, fp32_graph)
        fp32_graph.unlink()
        manifest = write_manifest(work, files, wheel)
    # The repository moved with the folder; git finds it by path, so nothing to fix.
    log.info("demo data in %s", output)
    return manifest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder to create (replaced if present)")
    parser.add_argument("--object-detection-wheel", type=Path, default=DEFAULT_WHEEL, help="object-detection 0.0.3 wheel")
    args = parser.parse_args()
    make_demo_data(args.output, args.object_detection_wheel)


if __name__ == "__main__":
    run_main(main)
