"""The recipe's own code against the workflow's, number for number.

The legacy metrics are what Intel's published AP came from: the Object Detection API's
offline_eval_map_corloc with coco_detection_metrics over infer_detections' TFRecord. Here
that upstream code itself (object-detection 0.0.3, tools/upstream/upstream_eval.py)
scores generated detection sets, and the workflow's evaluate_detections must give the same
12 numbers exactly, on sets built to catch what differs: tied scores across images whose
ids sort differently as text and as numbers, duplicates, classes outside the label map,
an image without ground truth or detections, more detections on one image than COCOeval keeps.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from evaluate_detections import legacy_metrics
from helpers import REPO_ROOT, tool_environment

from detbench.coco_data import METRICS, read_examples, to_coco_results

UPSTREAM_EVAL = REPO_ROOT / "tools" / "upstream" / "upstream_eval.py"
# A few COCO categories, with a gap in the ids as COCO has.
CATEGORIES = [
    {"id": i, "name": name}
    for i, name in ((1, "person"), (2, "bicycle"), (3, "car"), (5, "airplane"), (13, "stop sign"), (18, "dog"))
]
OUTSIDE_LABEL_MAP = 12  # a gap in COCO's ids
# val2017's ids run from 139 to 581781: text order and number order disagree.
MIXED_DIGIT_IDS = [139, 285, 632, 724, 776, 1000, 1268, 9483, 11760, 22935, 87038, 100238, 581781]

SET_KINDS = (
    "random",
    "tied",
    "tied_coarse",
    "duplicates",
    "outside_label_map",
    "empty_image",
    "crowded",
    "mixed",
    "tied_mixed",
    "tiny",
    "many_images",
)
# Intel's SSD-MobileNet loop stopped after 4,952 of 5,000 records: the evaluator saw the first ones.
FIRST_RECORDS = 9


def random_box(generator, size=None):
    """A normalized float32 box [ymin, xmin, ymax, xmax]."""
    low = generator.uniform(0.0, 0.7, 2)
    high = low + generator.uniform(0.05, 0.3, 2) if size is None else low + size
    return np.array([low[0], low[1], min(high[0], 1.0), min(high[1], 1.0)], np.float32)


def detection_set(kind, seed):
    """Records of one set: (source_id, height, width, ground truth, graph outputs)."""
    generator = np.random.default_rng(seed)
    count = {"many_images": 13, "tiny": 2}.get(kind, 6)
    ids = generator.choice(MIXED_DIGIT_IDS, count, replace=False).tolist()
    records = []
    for index, image_id in enumerate(ids):
        height, width = int(generator.integers(300, 641)), int(generator.integers(300, 641))
        truth = [
            (random_box(generator), int(generator.choice([1, 2, 3, 5, 13, 18])))
            for _ in range(generator.integers(1, 6))
        ]
        if kind == "outside_label_map":
            truth.append((random_box(generator), OUTSIDE_LABEL_MAP))
        if kind == "empty_image" and index == 0:
            truth = []
        detections = []
        for box, label in truth:  # near the truth, and sometimes the wrong class
            noisy = np.clip(box + generator.normal(0, 0.02, 4).astype(np.float32), 0, 1)
            detections.append((noisy, label if generator.random() < 0.8 else 1))
        detections += [
            (random_box(generator), int(generator.choice([1, 2, 3, 18]))) for _ in range(generator.integers(0, 8))
        ]
        if kind == "duplicates" and detections:
            detections += detections[: len(detections) // 2 + 1]
        if kind == "outside_label_map":
            detections.append((random_box(generator), OUTSIDE_LABEL_MAP))
        if kind == "crowded" and index == 1:
            detections += [(random_box(generator), int(generator.choice([1, 3]))) for _ in range(150)]
        if kind == "empty_image" and index == 0:
            detections = []
        scores = generator.uniform(0.05, 1.0, len(detections))
        if kind in ("tied", "tied_mixed"):
            scores = generator.choice([0.9, 0.7, 0.5], len(detections))
        if kind == "tied_coarse":
            scores = np.round(scores, 1)
        if kind == "mixed":
            scores[::2] = 0.6
        records.append((str(image_id), height, width, truth, detections, np.array(scores, np.float32)))
    return records


def write_record(path, records):
    """A TFRecord as infer_detections writes it: the input example plus image/detection/*."""
    import tensorflow as tf

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    with tf.io.TFRecordWriter(str(path)) as writer:
        for source_id, height, width, truth, detections, scores in records:
            feature = {
                "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source_id.encode()])),
                "image/height": ints([height]),
                "image/width": ints([width]),
                "image/object/class/label": ints([label for _, label in truth]),
                "image/detection/label": ints([label for _, label in detections]),
                "image/detection/score": floats(scores.tolist()),
            }
            for corner, index in (("ymin", 0), ("xmin", 1), ("ymax", 2), ("xmax", 3)):
                feature[f"image/object/bbox/{corner}"] = floats([float(box[index]) for box, _ in truth])
                feature[f"image/detection/bbox/{corner}"] = floats([float(box[index]) for box, _ in detections])
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def workflow_detections(records):
    """What detect_objects writes for these graph outputs: COCO results, absolute boxes."""
    results = []
    for source_id, height, width, _, detections, scores in records:
        outputs = {
            "num_detections": np.array([len(detections)], np.float32),
            "detection_boxes": np.array([[box for box, _ in detections] or np.zeros((0, 4))], np.float32),
            "detection_scores": scores[None],
            "detection_classes": np.array([[label for _, label in detections]], np.float32),
        }
        results += to_coco_results(int(source_id), height, width, outputs)
    return results


@pytest.fixture(scope="module")
def upstream_scores(tmp_path_factory):
    """Every set, written as a TFRecord and scored by upstream's evaluator (one process)."""
    folder = tmp_path_factory.mktemp("fidelity")
    label_map = folder / "label_map.pbtxt"
    label_map.write_text("".join(f'item {{\n  id: {c["id"]}\n  name: "{c["name"]}"\n}}\n' for c in CATEGORIES))
    sets = {}
    for seed, kind in enumerate(SET_KINDS):
        records = detection_set(kind, seed)
        path = folder / f"{kind}.record"
        write_record(path, records)
        sets[kind] = (path, records)
    path = folder / "first_records.record"
    write_record(path, sets["many_images"][1][:FIRST_RECORDS])
    sets["first_records"] = (path, sets["many_images"][1][:FIRST_RECORDS])
    output = folder / "upstream.json"
    result = subprocess.run(
        [sys.executable, str(UPSTREAM_EVAL), str(label_map), str(output), *(str(p) for p, _ in sets.values())],
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(output.read_text())
    return {kind: (path, records, scores[str(path)]) for kind, (path, records) in sets.items()}


@pytest.mark.parametrize("kind", SET_KINDS)
def test_legacy_metrics_equal_the_recipes_evaluator(upstream_scores, kind):
    path, records, upstream = upstream_scores[kind]
    image_ids = sorted(int(record[0]) for record in records)
    ours, _ = legacy_metrics(read_examples([path]), workflow_detections(records), image_ids, CATEGORIES)
    assert [ours[name] for name in METRICS] == upstream  # exactly: 0 difference on all 12


def test_legacy_metrics_of_the_first_records_equal_the_evaluator_stopped_there(upstream_scores):
    """`legacy_images: N` (Intel's SSD-MobileNet: the first 4,952 records): the detections of
    every image, scored as the evaluator scores a loop that stopped after N records."""
    from evaluate_detections import first_records, legacy_columns_metrics

    from detbench.coco_data import detection_columns

    path, records, everything = upstream_scores["many_images"]
    stopped = upstream_scores["first_records"][2]
    image_ids = sorted(int(record[0]) for record in records)
    scope = first_records(
        list(read_examples([path])), detection_columns(workflow_detections(records)), image_ids, FIRST_RECORDS
    )
    ours, _ = legacy_columns_metrics(*scope, CATEGORIES)
    assert len(scope[2]) == FIRST_RECORDS and [ours[name] for name in METRICS] == stopped
    assert stopped != everything


def test_the_sets_test_what_they_claim(upstream_scores):
    """Ties across images whose ids order differently as text, and a numeric-order scorer
    would differ on them: the sets can catch the old integer keys."""
    from evaluate_detections import legacy_ground_truth, normalized

    from detbench.coco_data import detection_columns, score_columns

    differs = 0
    for kind in ("tied", "tied_mixed", "mixed"):
        path, records, upstream = upstream_scores[kind]
        ids = [int(record[0]) for record in records]
        assert sorted(ids) != sorted(ids, key=str)
        truth, sizes = legacy_ground_truth(read_examples([path]), ids, CATEGORIES)
        detections = normalized(detection_columns(workflow_detections(records)), sizes)
        truth["image"], detections["image"] = truth["image"].astype(int), detections["image"].astype(int)
        by_number, _ = score_columns(truth, detections, sorted(ids), [c["id"] for c in CATEGORIES])
        differs += [by_number[name] for name in METRICS] != upstream
    assert differs >= 1
    crowded = upstream_scores["crowded"][1]
    assert max(len(record[4]) for record in crowded) > 100


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_detections_equal_the_recipes_infer_detections(finished_run, tmp_path, precision):
    """The same pixels (TensorFlow's decoder) and the same graph give upstream's detections."""
    from helpers import upstream_inference_differences

    images, mismatches, worst_score, worst_box = upstream_inference_differences(
        finished_run.workdir, precision, tmp_path
    )
    assert images == 8 and mismatches == 0
    assert worst_score <= 1e-6 and worst_box <= 1e-6
