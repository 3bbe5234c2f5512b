"""box_scoring against pycocotools' COCOeval itself: the same precision, recall and score
arrays bit for bit, and the same 12 numbers, on sets built to reach each of COCOeval's rules."""

import contextlib
import io

import numpy as np
import pytest

from detbench.box_scoring import evaluate
from detbench.coco_data import METRICS, coco_metrics, detection_columns, quiet_coco, truth_columns

CATEGORIES = (1, 2, 3, 5, 13)
NOT_IN_TRUTH = 12  # a category the ground truth does not list: COCOeval drops its detections
SET_KINDS = (
    "random",
    "tied_scores",
    "crowds",
    "zero_id",
    "crowded_image",
    "subset_of_images",
    "large_objects",
    "empty_category",
    "duplicate_objects",
    "tiny",
)


def scored_set(kind, seed):
    """(COCO dataset, result dicts, evaluated image ids) of one kind."""
    generator = np.random.default_rng(seed)
    count = 3 if kind == "tiny" else 25
    ids = sorted(generator.choice(np.arange(1, 600000), count, replace=False).tolist())
    images = [{"id": image_id, "height": 480, "width": 640} for image_id in ids]
    scale = 600 if kind == "large_objects" else 160
    annotations, detections = [], []
    for image in images:
        for _ in range(generator.integers(0, 10)):
            x, y = generator.uniform(0, 500, 2)
            w, h = generator.uniform(1, scale, 2)
            annotations.append(
                {
                    "id": len(annotations) + (0 if kind == "zero_id" else 1),
                    "image_id": image["id"],
                    "category_id": int(generator.choice(CATEGORIES[:-1] if kind == "empty_category" else CATEGORIES)),
                    "bbox": [x, y, w, h],
                    "area": float(w * h * generator.uniform(0.4, 1.0)),
                    "iscrowd": int(generator.random() < (0.3 if kind == "crowds" else 0.03)),
                }
            )
    if kind == "duplicate_objects":  # equal IoU: the later copy wins, and with id 0 it counts as unmatched
        annotations += [{**a, "id": len(annotations) + 1 + i} for i, a in enumerate(annotations)]
        annotations.append({**annotations[0], "id": 0})
    crowded = ids[0]
    for image in images[:-2]:  # the last two images: ground truth only
        own = [a for a in annotations if a["image_id"] == image["id"]]
        for _ in range(250 if kind == "crowded_image" and image["id"] == crowded else 30):
            if own and generator.random() < 0.5:  # near an object, sometimes of another class
                annotation = own[generator.integers(len(own))]
                box = (np.array(annotation["bbox"]) + generator.normal(0, 6, 4)).tolist()
                category = annotation["category_id"] if generator.random() < 0.8 else NOT_IN_TRUTH
            else:
                box = [*generator.uniform(0, 500, 2), *generator.uniform(1, scale, 2)]
                category = int(generator.choice((*CATEGORIES, NOT_IN_TRUTH)))
            if kind == "crowded_image" and image["id"] == crowded:
                category = CATEGORIES[0]  # all in one category: more than COCOeval's 100 kept
            score = (
                round(float(generator.random()), 1) if kind in ("tied_scores", "crowds") else float(generator.random())
            )
            detections.append({"image_id": image["id"], "category_id": int(category), "bbox": box, "score": score})
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in CATEGORIES],
    }
    evaluated = ids[::2] if kind == "subset_of_images" else ids
    return dataset, detections, evaluated


def pycocotools_eval(dataset, detections, image_ids):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = quiet_coco(dataset)
        evaluation = COCOeval(ground_truth, ground_truth.loadRes([dict(d) for d in detections]), "bbox")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


@pytest.mark.parametrize("kind", SET_KINDS)
def test_arrays_and_numbers_equal_cocoeval(kind):
    dataset, detections, image_ids = scored_set(kind, SET_KINDS.index(kind))
    reference = pycocotools_eval(dataset, detections, image_ids)
    ground_truth = quiet_coco(dataset)
    ours = evaluate(
        truth_columns(dataset["annotations"]),
        detection_columns(detections),
        reference.params.imgIds,
        reference.params.catIds,
        reference.params,
    )
    for name in ("precision", "recall", "scores"):
        assert np.array_equal(ours[name], reference.eval[name]), name  # bit for bit, -1 where COCOeval leaves it
    metrics, table = coco_metrics(ground_truth, detections, image_ids)
    assert [metrics[name] for name in METRICS] == [float(value) for value in reference.stats]
    assert len(table.splitlines()) == 12


def test_the_sets_reach_the_rules():
    """Each rule a set is named for happens in it, so a scorer that broke it would differ."""
    tied = scored_set("tied_scores", SET_KINDS.index("tied_scores"))[1]
    assert len({d["score"] for d in tied}) < len(tied) / 10
    crowded = scored_set("crowded_image", SET_KINDS.index("crowded_image"))[1]
    per_group = np.unique([(d["image_id"], d["category_id"]) for d in crowded], axis=0, return_counts=True)[1]
    assert per_group.max() > 100  # more than maxDets in one image and category
    dataset = scored_set("zero_id", SET_KINDS.index("zero_id"))[0]
    assert min(a["id"] for a in dataset["annotations"]) == 0
    reference = pycocotools_eval(*scored_set("crowds", SET_KINDS.index("crowds")))
    assert sum(a["iscrowd"] for a in reference.cocoGt.dataset["annotations"]) > 10
    large = pycocotools_eval(*scored_set("large_objects", SET_KINDS.index("large_objects")))
    assert (large.eval["precision"][:, :, :, 3, :] > -1).any()  # objects in the "large" range


def test_bad_ground_truth_and_detections_are_one_line(tmp_path):
    import json

    from detbench.common import StageError

    dataset, detections, image_ids = scored_set("random", 0)
    detections.append({**detections[0], "image_id": 999999999})
    with pytest.raises(StageError, match="^detections of 1 images that the ground truth lacks, e.g. 999999999$"):
        coco_metrics(quiet_coco(dataset), detections, image_ids)
    dataset["annotations"].append(dict(dataset["annotations"][0]))
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(dataset))
    message = f"^{path}: annotation id 1 appears 2 times: COCO annotation ids must be unique$"
    with pytest.raises(StageError, match=message):
        quiet_coco(annotation_file=path)
