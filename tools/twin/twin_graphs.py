"""The twin's graph steps: the Object Detection API unpacked and its FP32 model exported with
seeded weights, SSD's combined NMS, and the INT8 graph quantized by the workflow's own quantize
stage and checked for Intel's op family (make_twin.py runs each step in a process of its own)."""

import io
import logging
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from detbench.common import StageError
from detbench.detection_graph import OUTPUT_KEYS, default_interface, load_graph_def, op_counts

# Intel's INT8 graphs carry these (and fused quantized convolutions); a quantizer that gives
# anything else is not a twin of them.
INT8_OPS = ("QuantizeV2", "Dequantize")


FUSED_CONVOLUTION_PREFIX = "QuantizedConv2DWithBias"

log = logging.getLogger("make_twin")


def unpack_object_detection(wheel, protos_wheel, root):
    """object_detection/ from the 0.0.3 wheel, with protos compiled for today's protobuf from
    the descriptors in object-detection-0-1's generated modules (0.0.3 ships none)."""
    from tools.upstream.odapi_compat import compile_protos

    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith("object_detection/")]
        archive.extractall(root, members)
    old_protos = root / "old_protos"
    with zipfile.ZipFile(protos_wheel) as archive:
        members = [
            name
            for name in archive.namelist()
            if name.startswith("object_detection/protos/") and name.endswith("_pb2.py")
        ]
        archive.extractall(old_protos, members)
    compiled = compile_protos(sorted(old_protos.rglob("*_pb2.py")), root)
    shutil.rmtree(old_protos)
    log.info("object_detection 0.0.3 unpacked, %d protos compiled", len(compiled))


def calibrate_batch_norms(tf, session, image_tensor, images):
    """Set each BatchNorm's moving mean and variance to those of its input on `images`.

    In graph order, one layer at a time, so that each layer sees inputs already normalized
    by the layers before it: with random weights and unit statistics, activations would
    grow to ~1e8 by block4 and the scores saturate. Statistics shared by two BatchNorm ops
    (Faster R-CNN builds block4 a second time, with the same variables, for its final boxes;
    the export drops that copy) are those of the first, the one the export keeps.
    """
    graph = session.graph
    variables = {variable.op.name: variable for variable in tf.global_variables()}
    batch_norms = [op for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]
    calibrated = set()
    for op in batch_norms:
        names = [op.inputs[index].op.name.removesuffix("/read") for index in (3, 4)]
        if names[0] in calibrated:
            continue
        calibrated.update(names)
        values = session.run(op.inputs[0], {image_tensor: images})
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        for name, statistic in zip(names, (flat.mean(axis=0), flat.var(axis=0))):
            variables[name].load(statistic.astype(np.float32), session)
    return len(calibrated) // 2


def export_fp32(source_root, model_config, images_zip, output_dir, seed, combined_nms=False, batch_norm_images=1):
    """Build the model of `model_config` with the Object Detection API, give it weights, export
    it; with `combined_nms`, replace an SSD's post-processing by combined NMS."""
    from tools.upstream import odapi_compat

    odapi_compat.install(source_root)
    import tensorflow as tf  # tensorflow.compat.v1, as the 2019 code expects
    from google.protobuf import text_format
    from object_detection import exporter
    from object_detection.builders import model_builder
    from object_detection.protos import pipeline_pb2

    pipeline = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Merge(Path(model_config).read_text(), pipeline)
    images = read_images(images_zip, batch_norm_images)
    checkpoint = Path(output_dir) / "random" / "model.ckpt"
    checkpoint.parent.mkdir(parents=True)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        model = model_builder.build(pipeline.model, is_training=False)
        image_tensor = tf.placeholder(tf.uint8, [None, None, None, 3], name=default_interface().input)
        preprocessed, true_shapes = model.preprocess(tf.to_float(image_tensor))
        model.postprocess(model.predict(preprocessed, true_shapes), true_shapes)
        tf.train.get_or_create_global_step()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            started = time.perf_counter()
            for image in images:
                layers = calibrate_batch_norms(tf, session, image_tensor, image[None])
            log.info("%d BatchNorm layers calibrated in %.0f s", layers, time.perf_counter() - started)
            tf.train.Saver().save(session, str(checkpoint))
    with tf.Graph().as_default():
        exporter.export_inference_graph("image_tensor", pipeline, str(checkpoint), str(output_dir))
    shutil.rmtree(checkpoint.parent)
    if combined_nms:
        frozen = Path(output_dir) / "frozen_inference_graph.pb"
        nms = pipeline.model.ssd.post_processing.batch_non_max_suppression
        frozen.write_bytes(with_combined_nms(tf, load_graph_def(frozen), nms).SerializeToString())


def with_combined_nms(tf, graph_def, nms):
    """An SSD export whose post-processing is one CombinedNonMaxSuppression, as in Intel's
    SSD-MobileNet graphs: the decoded boxes and sigmoid scores the Object Detection API hands
    its per-class NMS loop (`Postprocessor/raw_box_locations`, `raw_box_scores`) go to it
    instead, with the config's thresholds; classes are COCO ids, as the exporter's (+1)."""
    kept = type(graph_def)()
    kept.node.extend(node for node in graph_def.node if node.name not in OUTPUT_KEYS)
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(kept, name="")
        boxes = graph.get_tensor_by_name("Postprocessor/raw_box_locations:0")
        scores = graph.get_tensor_by_name("Postprocessor/raw_box_scores:0")
        with tf.name_scope("Postprocessor/CombinedNonMaxSuppression/"):
            selected = tf.image.combined_non_max_suppression(
                tf.expand_dims(boxes, 2),
                scores[:, :, 1:],
                nms.max_detections_per_class,
                nms.max_total_detections,
                nms.iou_threshold,
                nms.score_threshold,
                clip_boxes=True,
            )
        tf.identity(selected.nmsed_boxes, name="detection_boxes")
        tf.identity(selected.nmsed_scores, name="detection_scores")
        tf.add(selected.nmsed_classes, 1.0, name="detection_classes")
        tf.cast(selected.valid_detections, tf.float32, name="num_detections")
        return tf.graph_util.extract_sub_graph(graph.as_graph_def(), list(OUTPUT_KEYS))


def cut_before(graph_def, tensor, placeholder):
    """The part of a frozen graph after `tensor` (float32 [N, H, W, 3]), fed by a new
    placeholder: how Intel's INT8 SSD-MobileNet starts at `Preprocessor/subpart2`."""
    from tensorflow.compat.v1 import graph_util
    from tensorflow.core.framework import graph_pb2, types_pb2

    cut = graph_pb2.GraphDef()
    cut.versions.CopyFrom(graph_def.versions)
    feed = cut.node.add(name=placeholder, op="Placeholder")
    feed.attr["dtype"].type = types_pb2.DT_FLOAT
    for node in graph_def.node:
        copy = cut.node.add()
        copy.CopyFrom(node)
        for index, name in enumerate(copy.input):
            if name in (tensor, f"{tensor}:0"):
                copy.input[index] = placeholder
    return graph_util.extract_sub_graph(cut, list(OUTPUT_KEYS))


def subgraph_to(graph_def, tensor):
    """The part of a frozen graph that computes `tensor`: the twin's preprocessing graph."""
    from tensorflow.compat.v1 import graph_util

    return graph_util.extract_sub_graph(graph_def, [tensor])


def read_images(images_zip, count):
    """The first `count` images of the zip as RGB arrays. Decoded by Pillow: this process runs
    TensorFlow in graph mode, where the stages' eager decoder cannot run, and BatchNorm
    statistics need no particular decoder."""
    with zipfile.ZipFile(images_zip) as archive:
        names = sorted(name for name in archive.namelist() if name.endswith(".jpg"))[:count]
        return [np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB")) for name in names]


def quantize_int8(fp32_graph, images_zip, output, calibration_images, cut_at=None, cut_input=None):
    """Static post-training quantization of the FP32 graph, by the workflow's own quantize_graph
    stage (Intel Neural Compressor), calibrated on the first twin images; with `cut_at`, the
    quantized graph starts after that tensor, at a placeholder named `cut_input`."""
    from detbench.quantization import quantize

    folder = Path(output).parent / "calibration"
    folder.mkdir()
    with zipfile.ZipFile(images_zip) as archive:
        names = sorted(name for name in archive.namelist() if name.endswith(".jpg"))[:calibration_images]
        paths = [folder / Path(name).name for name in names]
        for name, path in zip(names, paths):
            path.write_bytes(archive.read(name))
    quantize(fp32_graph, paths, output)
    shutil.rmtree(folder)
    if cut_at:
        Path(output).write_bytes(cut_before(load_graph_def(output), cut_at, cut_input).SerializeToString())
    ops = {node.op for node in load_graph_def(output).node}
    missing = [op for op in INT8_OPS if op not in ops]
    if not any(op.startswith(FUSED_CONVOLUTION_PREFIX) for op in ops):
        missing.append(f"{FUSED_CONVOLUTION_PREFIX}* convolutions")
    if missing:
        raise StageError(f"the quantized graph lacks Intel's {', '.join(missing)}")


def graph_facts(path):
    graph_def = load_graph_def(path)
    ops = op_counts(graph_def)
    return {"bytes": Path(path).stat().st_size, "nodes": len(graph_def.node), "ops": dict(sorted(ops.items()))}
