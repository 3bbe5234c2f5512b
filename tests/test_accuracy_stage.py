"""The accuracy stages on the demo: detections and their COCO metrics as designed, the recipe's
legacy evaluator, unreadable records, and detection's checkpoints."""

import json
import re
from pathlib import Path

import pytest
from helpers import DEMO_MODELS as MODELS
from helpers import (
    error_lines,
    result,
    run_script,
)

from detbench.coco_data import to_coco_results


@pytest.mark.parametrize("precision", MODELS)
def test_accuracy_is_what_the_data_was_designed_to_give(finished_run, precision):
    accuracy = result(finished_run, "accuracy", precision)
    assert accuracy["images"] == 8
    for key, value in EXPECTED_STANDARD.items():
        assert accuracy["standard"][key] == pytest.approx(value, abs=1e-9), key
    for key, value in EXPECTED_LEGACY.items():
        assert accuracy["legacy"][key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("precision", MODELS)
def test_metrics_equal_pycocotools_on_our_detections_file(finished_run, precision):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    workdir = finished_run.workdir
    ground_truth = COCO(str(workdir / "resources/coco/annotations/instances_val2017.json"))
    detections = ground_truth.loadRes(str(workdir / f"results/accuracy/{precision}_detections.json"))
    evaluation = COCOeval(ground_truth, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    ours = result(finished_run, "accuracy", precision)["standard"]
    assert list(ours.values()) == [float(v) for v in evaluation.stats]
    log = (workdir / f"logs/evaluate_accuracy/{precision}.log").read_text().rstrip().splitlines()
    assert len(log) > 12
    assert all(line.lstrip().startswith("Average") for line in log[-12:])
    assert log[-12].endswith(f"= {evaluation.stats[0]:0.3f}")


def test_detections_become_absolute_coco_boxes():
    import numpy as np

    outputs = {
        "num_detections": np.array([1.0]),
        "detection_boxes": np.array([[[0.25, 0.5, 0.75, 1.0], [0, 0, 0, 0]]]),
        "detection_scores": np.array([[0.9, 0.0]]),
        "detection_classes": np.array([[18.0, 1.0]]),
    }
    assert to_coco_results(139, 200, 400, outputs) == [
        {"image_id": 139, "category_id": 18, "bbox": [200.0, 50.0, 200.0, 100.0], "score": 0.9}
    ]


def test_unreadable_image_in_the_tfrecord_stops_detection_naming_it(finished_run, tmp_path):
    import tensorflow as tf

    source = finished_run.workdir / "resources/coco_tfrecord/coco_val.record"
    records = tmp_path / "records"
    records.mkdir()
    with tf.io.TFRecordWriter(str(records / "coco_val.record")) as writer:
        for index, serialized in enumerate(tf.data.TFRecordDataset(str(source)).as_numpy_iterator()):
            example = tf.train.Example.FromString(serialized)
            if index == 2:
                example.features.feature["image/encoded"].bytes_list.value[0] = b"\xff\xd8 garbage"
                image_id = example.features.feature["image/source_id"].bytes_list.value[0].decode()
            writer.write(example.SerializeToString())
    run = run_script(
        "detect_objects.py",
        "--graph",
        finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--records",
        records,
        "--output",
        tmp_path / "detections.json",
    )
    assert run.returncode == 1 and not (tmp_path / "detections.json").exists()
    assert len(error_lines(run)) == 1
    assert error_lines(run)[0].startswith(f"error: image {image_id} (record 2 of {records}): not a readable image")


def detect_with_checkpoint(finished_run, tmp_path, lines):
    """detect_objects.py on the demo FP32 graph with a checkpoint of these text lines in place."""
    from detect_objects import checkpoint_path

    output = tmp_path / "detections-0-of-1.json"
    checkpoint_path(output).write_text("".join(lines))
    run = run_script(
        "detect_objects.py",
        "--graph",
        finished_run.workdir / "resources/models/fp32/frozen_inference_graph.pb",
        "--records",
        finished_run.workdir / "resources/coco_tfrecord",
        "--output",
        output,
        "--checkpoint-every",
        2,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert not checkpoint_path(output).exists()
    return json.loads(output.read_text()), run.stderr


def fp32_identity(workdir):
    from detect_objects import job_identity

    return job_identity(
        workdir / "resources/models/fp32/frozen_inference_graph.pb", workdir / "resources/coco_tfrecord", 0, 0, 1
    )


def test_detection_resumes_from_its_checkpoint_with_the_same_result(finished_run, tmp_path):
    """A checkpoint as a killed job leaves it: the identity, three whole image lines, and a
    fourth cut short mid-write, which is dropped."""
    workdir = finished_run.workdir
    whole = json.loads((workdir / "results/accuracy/fp32/detections-0-of-1.json").read_text())
    lines = [json.dumps({"identity": fp32_identity(workdir)}) + "\n"]
    for position, (image_id, index) in enumerate(zip(whole["image_ids"][:4], whole["record_indices"])):
        image = {
            "image_id": image_id,
            "record_index": index,
            "detections": [d for d in whole["detections"] if d["image_id"] == image_id],
        }
        if position == 0:
            image["executed_kernels"] = whole["executed_kernels"]
        lines.append(json.dumps(image) + "\n")
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    resumed, log = detect_with_checkpoint(finished_run, tmp_path, lines)
    assert "3 images already done" in log
    assert "5 images run in this job, 3 taken from a checkpoint" in log
    for key in ("detections", "image_ids", "record_indices", "executed_kernels"):
        assert resumed[key] == whole[key], key


def test_checkpoint_of_another_job_is_ignored(finished_run, tmp_path):
    workdir = finished_run.workdir
    identity = fp32_identity(workdir)
    stale = [
        json.dumps({"identity": dict(identity, graph_sha256="0" * 64, max_images=3)}) + "\n",
        json.dumps({"image_id": 139, "record_index": 0, "detections": []}) + "\n",
    ]
    result, log = detect_with_checkpoint(finished_run, tmp_path, stale)
    assert "it is of another job (graph_sha256, max_images differ)" in log
    assert "8 images run in this job, 0 taken from a checkpoint" in log
    whole = json.loads((workdir / "results/accuracy/fp32/detections-0-of-1.json").read_text())
    assert result["detections"] == whole["detections"]


def test_a_checkpoint_save_costs_what_its_images_cost(tmp_path):
    """Saves append: the bytes written per save do not grow with the images done before."""
    from detect_objects import Checkpoint, load_checkpoint

    path = tmp_path / ".detections.json.checkpoint"
    identity = {"graph_sha256": "0" * 64, "shard": 0}
    checkpoint = Checkpoint(path, identity, load_checkpoint(path, identity))

    def bytes_written():  # by this process's write calls, whatever the file
        return int(re.search(r"^wchar: (\d+)$", Path("/proc/self/io").read_text(), re.M).group(1))

    written = []
    for image_id in range(1, 31):
        detections = [{"image_id": image_id, "category_id": 1, "bbox": [1.5, 2.5, 3.5, 4.5], "score": 0.5}] * 100
        checkpoint.add(image_id, image_id - 1, detections, ["Conv2D"] if image_id == 1 else ["ignored"])
        if image_id % 10 == 0:
            before = bytes_written()
            checkpoint.save()
            written.append(bytes_written() - before)
    assert max(written) < 1.1 * min(written)  # the third save writes no more than the first
    saved = load_checkpoint(path, identity)
    assert saved["image_ids"] == list(range(1, 31)) and len(saved["detections"]) == 3000
    assert saved["executed_kernels"] == ["Conv2D"]
    resumed = Checkpoint(path, identity, saved)  # a rerun carries on appending
    resumed.add(31, 30, [], ["Conv2D"])
    resumed.save()
    assert load_checkpoint(path, identity)["image_ids"] == list(range(1, 32))


# What the mini COCO and the detectors were designed to give (see make_demo_data.py): seven
# palette classes found exactly, the gray banana never (AP 0), the gray crowd ignored.
EXPECTED_STANDARD = {
    "AP": 7 / 8,
    "AP50": 7 / 8,
    "AP75": 7 / 8,
    "AP_small": 1.0,
    "AP_medium": 1.0,
    "AP_large": 4 / 5,
    "AR100": 7 / 8,
}


# The recipe's evaluator counts the crowd as a missed person: recall 3/4, so 76 of the 101
# recall points have precision 1; every area is "small".
PERSON_LEGACY_AP = 76 / 101


EXPECTED_LEGACY = {
    "AP": (6 + PERSON_LEGACY_AP) / 8,
    "AP_small": (6 + PERSON_LEGACY_AP) / 8,
    "AP_medium": -1.0,
    "AP_large": -1.0,
    "AR100": (6 + 3 / 4) / 8,
}
