"""TensorFlow ops that OpenVINO's TensorFlow frontend has no conversion rule for, converted by
conversion extensions of our own (convert_to_openvino passes them to openvino.convert_model).

CombinedNonMaxSuppression ends Intel's SSD-MobileNet graphs (ssdmobilenet_*_combinedNMS.pb).
OpenVINO's NonMaxSuppression computes it: per class, greedy NMS over the boxes shared by all
classes, stopping at max_output_size_per_class; the survivors of every class sorted by score
and cut at max_total_size. TensorFlow's outputs are then rebuilt: padded with zeros to
max_total_size, boxes clipped to [0, 1] when clip_boxes is set, classes as float indices.
(MulticlassNms, which cuts per class before NMS, took 260 ms on the SSD twin's 1,917 boxes and
91 classes; TensorFlow's op takes a few.)
"""

from detbench.common import StageError


def constant_input(node, index):
    """The value of an input that is a constant in the graph (MulticlassNms takes attributes)."""
    producer = node.get_input(index).get_node()
    if producer.get_type_name() != "Constant":
        raise StageError(f"CombinedNonMaxSuppression: input {index} is computed, not a constant: not converted")
    return producer.get_data().reshape(-1)[0]


def combined_nms(node):
    """CombinedNonMaxSuppression(boxes [B, N, 1, 4], scores [B, N, C], max_output_size_per_class,
    max_total_size, iou_threshold, score_threshold) for batch 1: nmsed boxes [1, T, 4], scores
    [1, T], classes [1, T], valid_detections [1]."""
    import numpy as np
    import openvino.opset13 as ops

    boxes, scores = node.get_input(0), node.get_input(1)
    per_class, total = int(constant_input(node, 2)), int(constant_input(node, 3))
    iou, score_threshold = float(constant_input(node, 4)), float(constant_input(node, 5))
    if node.get_attribute("pad_per_class"):
        raise StageError("CombinedNonMaxSuppression with pad_per_class: not converted (only pad to max_total_size)")
    shared_boxes = ops.squeeze(boxes, ops.constant(np.array([2], np.int64)))  # [1, N, 4]
    by_class = ops.transpose(scores, ops.constant(np.array([0, 2, 1], np.int64)))  # [1, C, N]
    # Per class, greedy NMS that stops at max_output_size_per_class (as TensorFlow's); the
    # survivors of every class sorted by score.
    selected = ops.non_max_suppression(
        shared_boxes,
        by_class,
        ops.constant(np.array([per_class], np.int64)),
        ops.constant(np.array([iou], np.float32)),
        ops.constant(np.array([score_threshold], np.float32)),
        sort_result_descending=True,
        output_type="i64",
    )
    kept = ops.minimum(selected.output(2), ops.constant(np.array([total], np.int64)))  # [1]

    def first_rows(table):
        zero, one = ops.constant(np.array([0], np.int64)), ops.constant(np.array([1], np.int64))
        return ops.slice(table, zero, kept, one, zero)

    indices, chosen = first_rows(selected.output(0)), first_rows(selected.output(1))  # (batch, class, box/score)

    def column(table, index):
        return ops.gather(table, ops.constant(np.array([index], np.int64)), 1)

    found_boxes = ops.gather(ops.squeeze(shared_boxes, ops.constant(np.array([0], np.int64))), column(indices, 2), 0)
    found_boxes = ops.reshape(found_boxes, ops.constant(np.array([-1, 4], np.int64)), False)
    rows = ops.concat([ops.convert(column(indices, 1), "f32"), column(chosen, 2), found_boxes], 1)  # [K, 6]
    valid = ops.convert(kept, "i32")
    found = ops.gather(ops.shape_of(rows, "i64"), ops.constant(np.array([0], np.int64)), 0)
    missing = ops.subtract(ops.constant(np.array([total], np.int64)), found)
    padded = ops.pad(
        rows,
        ops.concat([ops.constant(np.array([0], np.int64)), ops.constant(np.array([0], np.int64))], 0),
        ops.concat([missing, ops.constant(np.array([0], np.int64))], 0),
        "constant",
        ops.constant(np.float32(0)),
    )
    table = ops.reshape(padded, ops.constant(np.array([1, total, 6], np.int64)), False)

    def columns(start, stop):
        return ops.slice(
            table,
            ops.constant(np.array([start], np.int64)),
            ops.constant(np.array([stop], np.int64)),
            ops.constant(np.array([1], np.int64)),
            ops.constant(np.array([2], np.int64)),
        )

    nmsed_boxes = columns(2, 6)
    if node.get_attribute("clip_boxes"):
        nmsed_boxes = ops.clamp(nmsed_boxes, 0.0, 1.0)
    flat = ops.constant(np.array([1, total], np.int64))
    nmsed_scores = ops.reshape(columns(1, 2), flat, False)
    nmsed_classes = ops.reshape(columns(0, 1), flat, False)
    return [nmsed_boxes.output(0), nmsed_scores.output(0), nmsed_classes.output(0), valid.output(0)]


def conversion_extensions():
    from openvino.frontend import ConversionExtension

    return [ConversionExtension("CombinedNonMaxSuppression", combined_nms)]
