"""COCO data shared by the stages: the TFRecord the conversion writes, the graph's outputs
as COCO results, and pycocotools' scoring."""

import contextlib
import copy
import io
import re
from pathlib import Path

from common import StageError

VAL_RECORD = "coco_val.record"
SHARD_PATTERN = re.compile(re.escape(VAL_RECORD) + r"-(\d{5})-of-(\d{5})")
METRICS = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip


def val_record_files(folder):
    """The val records the upstream script wrote, in either layout, in shard order."""
    folder = Path(folder)
    single = folder / VAL_RECORD
    shards = sorted(p for p in folder.iterdir() if SHARD_PATTERN.fullmatch(p.name))
    if single.is_file() and shards:
        raise StageError(f"{folder} holds both {VAL_RECORD} and its shards")
    if single.is_file():
        return [single]
    if not shards:
        raise StageError(f"no {VAL_RECORD} or {VAL_RECORD}-*-of-* written in {folder}")
    counts = {SHARD_PATTERN.fullmatch(p.name).group(2) for p in shards}
    expected = int(counts.pop()) if len(counts) == 1 else None
    if expected != len(shards):
        raise StageError(f"incomplete shard set in {folder}: {[p.name for p in shards]}")
    return shards


def read_examples(files):
    """Yield each record of the files as a dict of feature name to list of values."""
    import tensorflow as tf

    for path in files:
        for raw in tf.data.TFRecordDataset(str(path)):
            example = tf.train.Example.FromString(raw.numpy())
            features = {}
            for key, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                features[key] = list(getattr(feature, kind).value) if kind else []
            yield features


def to_coco_results(image_id, height, width, outputs):
    """The graph's valid detections for one image as COCO result dicts."""
    results = []
    count = int(outputs["num_detections"][0])
    for box, score, category in zip(
        outputs["detection_boxes"][0][:count],
        outputs["detection_scores"][0][:count],
        outputs["detection_classes"][0][:count],
    ):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        results.append(
            {
                "image_id": image_id,
                "category_id": int(category),
                "bbox": [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
                "score": float(score),
            }
        )
    return results


def quiet_coco(dataset=None, annotation_file=None):
    """A pycocotools COCO index, without its chatter on stdout."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if annotation_file is not None:
            return COCO(str(annotation_file))
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        return coco


def box_results(ground_truth, detections):
    """pycocotools' loadRes for boxes, as the Object Detection API's COCOWrapper does it: the
    same area, ids and iscrowd, on new dicts (the caller's are left as they are; no deep copy
    of 1.5 M detections), without the polygon loadRes adds to every box, which bbox scoring
    never reads."""
    from pycocotools.coco import COCO

    known = set(ground_truth.getImgIds())
    unknown = {d["image_id"] for d in detections} - known
    if unknown:
        raise StageError(f"detections of {len(unknown)} images that the ground truth lacks, e.g. {min(unknown)}")
    results = COCO()
    results.dataset["images"] = list(ground_truth.dataset["images"])
    results.dataset["categories"] = copy.deepcopy(ground_truth.dataset["categories"])
    results.dataset["annotations"] = [
        {**d, "area": d["bbox"][2] * d["bbox"][3], "id": index, "iscrowd": 0} for index, d in enumerate(detections, 1)
    ]
    results.createIndex()
    return results


def coco_metrics(ground_truth, detections, image_ids):
    """COCOeval bbox on the given images; returns (the 12 metrics, the summary table)."""
    from pycocotools.cocoeval import COCOeval

    if not detections:
        raise StageError(f"no detections in {len(image_ids)} images: nothing to score")
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        results = box_results(ground_truth, detections)
        evaluation = COCOeval(ground_truth, results, "bbox")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    lines = [line for line in table.getvalue().splitlines() if line.lstrip().startswith("Average")]
    return dict(zip(METRICS, (float(v) for v in evaluation.stats))), "\n".join(lines)


def in_record_order(shards):
    """Image ids, record indices and detections of detection files together, in TFRecord
    order (an image's detections as detected): what one process over all their images writes."""
    record_index = {
        image_id: index for shard in shards for image_id, index in zip(shard["image_ids"], shard["record_indices"])
    }
    images = sorted(record_index, key=record_index.get)
    detections = sorted((d for shard in shards for d in shard["detections"]), key=lambda d: record_index[d["image_id"]])
    return images, [record_index[image_id] for image_id in images], detections
