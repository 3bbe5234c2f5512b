"""COCO data shared by the stages: the TFRecord the conversion writes, the graph's outputs
as COCO results, and pycocotools' scoring."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from detbench.common import StageError

VAL_RECORD = "coco_val.record"
SHARD_PATTERN = re.compile(re.escape(VAL_RECORD) + r"-(\d{5})-of-(\d{5})")
METRICS = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


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
        # Batched: one eager step per record would cost more than parsing it.
        for batch in tf.data.TFRecordDataset(str(path)).batch(256).as_numpy_iterator():
            for raw in batch:
                example = tf.train.Example.FromString(raw)
                features = {}
                for key, feature in example.features.feature.items():
                    kind = feature.WhichOneof("kind")
                    features[key] = list(getattr(feature, kind).value) if kind else []
                yield features


def selected_records(record_dir, max_images=0, shard=0, shards=1):
    """Yield (index in the TFRecord, features) of the records a job handles: the first
    `max_images` (0: all), every `shards`-th from the `shard`-th, in order."""
    for index, features in enumerate(read_examples(val_record_files(record_dir))):
        if max_images and index >= max_images:
            return
        if index % shards == shard:
            yield index, features


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
    """A pycocotools COCO index, without its chatter on stdout. An annotation file whose
    annotation ids repeat is refused: pycocotools looks objects up by id, so it would score
    the last object of an id in place of each of the others."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if annotation_file is not None:
            coco = COCO(str(annotation_file))
        else:
            coco = COCO()
            coco.dataset = dataset
            coco.createIndex()
    ids, counts = np.unique([a["id"] for a in coco.dataset.get("annotations", [])], return_counts=True)
    if len(ids) and counts.max() > 1:
        repeated = ids[counts.argmax()]
        where = annotation_file or "the ground truth"
        raise StageError(
            f"{where}: annotation id {repeated} appears {counts.max()} times: COCO annotation ids must be unique"
        )
    return coco


def truth_columns(annotations):
    """COCO ground-truth annotations as the columns box_scoring reads."""
    return {
        "image": np.array([a["image_id"] for a in annotations]),
        "category": np.array([a["category_id"] for a in annotations], np.int64),
        "box": np.array([a["bbox"] for a in annotations], np.float64).reshape(-1, 4),
        "area": np.array([a["area"] for a in annotations], np.float64),
        "iscrowd": np.array([bool(a["iscrowd"]) for a in annotations], bool),
        "id": np.array([a["id"] for a in annotations], np.float64),
    }


def detection_columns(detections):
    """COCO result dicts as the columns box_scoring reads."""
    return {
        "image": np.array([d["image_id"] for d in detections]),
        "category": np.array([d["category_id"] for d in detections], np.int64),
        "box": np.array([d["bbox"] for d in detections], np.float64).reshape(-1, 4),
        "score": np.array([d["score"] for d in detections], np.float64),
    }


def score_columns(truth, detections, image_ids, category_ids):
    """COCO bbox metrics, number for number pycocotools' COCOeval: (the 12 metrics by name,
    the summary table)."""
    from detbench.box_scoring import score_boxes

    if not len(detections["score"]):
        raise StageError(f"no detections in {len(image_ids)} images: nothing to score")
    stats, table = score_boxes(truth, detections, image_ids, category_ids)
    lines = [line for line in table.splitlines() if line.lstrip().startswith("Average")]
    return dict(zip(METRICS, stats)), "\n".join(lines)


def coco_metrics(ground_truth, detections, image_ids):
    """Metrics of COCO result dicts against a pycocotools COCO index, on the given images."""
    return standard_metrics(ground_truth, detection_columns(detections), image_ids)


def standard_metrics(ground_truth, detections, image_ids):
    """Metrics of detection columns against a pycocotools COCO index, on the given images."""
    known = np.array(sorted(ground_truth.getImgIds()))
    unknown = np.setdiff1d(detections["image"], known)
    if len(unknown):
        raise StageError(f"detections of {len(unknown)} images that the ground truth lacks, e.g. {unknown.min()}")
    truth = truth_columns(ground_truth.dataset["annotations"])
    return score_columns(truth, detections, sorted(image_ids), ground_truth.getCatIds())


def in_record_order(shards):
    """Image ids, record indices and detections of detection files together, in TFRecord
    order (an image's detections as detected): what one process over all their images writes."""
    record_index = {
        image_id: index for shard in shards for image_id, index in zip(shard["image_ids"], shard["record_indices"])
    }
    images = sorted(record_index, key=record_index.get)
    detections = sorted((d for shard in shards for d in shard["detections"]), key=lambda d: record_index[d["image_id"]])
    return images, [record_index[image_id] for image_id in images], detections
