#!/usr/bin/env python3
"""A gallery of detections: a few scored images, each model's boxes drawn on the photo.

Which images: the first --count image ids (in id order) that every model scored and that have
ground truth, so that every run, a real COCO one included, shows the same ones for the same
data. One row per image: the ground truth first, then each model in the order given (the
report's: architecture by architecture, each reference first), with the class name and
score of every detection at or above --min-score.
"""

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from detbench.common import StageError, atomic_file, keyed_paths, run_main

log = logging.getLogger("draw_gallery")

# Colours by category id, so that a class has one colour in every panel.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#9a6324",
    "#800000",
    "#469990",
    "#000075",
    "#808000",
)


def read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise StageError(f"cannot read {what} {path}: {error}") from None


def by_image(detections):
    grouped = defaultdict(list)
    for detection in detections:
        grouped[detection["image_id"]].append(detection)
    return grouped


def chosen_images(ground_truth, scored, count):
    """The first `count` images scored by every model ({model: its image ids}) that have
    ground truth boxes."""
    annotated = {annotation["image_id"] for annotation in ground_truth["annotations"]}
    scored = set.intersection(*(set(ids) for ids in scored.values())) if scored else set()
    images = {image["id"]: image for image in ground_truth["images"]}
    return [images[image_id] for image_id in sorted(scored & annotated & images.keys())][:count]


def draw_panel(axis, pixels, boxes, names, title):
    """One photo with its boxes: [(category id, [x, y, w, h], score or None)]."""
    from matplotlib.patches import Rectangle

    axis.imshow(pixels)
    # The most confident last, on top: a box two classes share shows its best label.
    for category, (x, y, w, h), score in sorted(boxes, key=lambda box: box[2] or 0):
        colour = PALETTE[category % len(PALETTE)]
        axis.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.8))
        label = names.get(category, str(category)) + ("" if score is None else f" {score:.2f}")
        axis.text(
            x,
            y,
            label,
            fontsize=6,
            color="white",
            va="bottom",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.8, "alpha": 0.85},
        )
    axis.set_title(title, fontsize=8)
    axis.set_axis_off()


def draw_gallery(image_dir, annotations_path, detection_paths, output, count=4, min_score=0.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    ground_truth = read_json(annotations_path, "annotations")
    names = {category["id"]: category["name"] for category in ground_truth["categories"]}
    # Two passes, one file at a time: a model's detections on val2017 are 1.5 M objects, and a
    # run may have a dozen models. First which images each scored, then those drawn.
    scored = {model: {d["image_id"] for d in read_json(path, "detections")} for model, path in detection_paths.items()}
    images = chosen_images(ground_truth, scored, count)
    if not images:
        raise StageError(f"no image of {annotations_path} with ground truth was scored by every model")
    drawn = {image["id"] for image in images}
    detections = {
        model: by_image(d for d in read_json(path, "detections") if d["image_id"] in drawn)
        for model, path in detection_paths.items()
    }
    truth = by_image(ground_truth["annotations"])
    columns = 1 + len(detections)
    figure, axes = plt.subplots(len(images), columns, figsize=(2.6 * columns, 2.3 * len(images)), squeeze=False)
    for row, image in zip(axes, images):
        path = Path(image_dir) / image["file_name"]
        try:
            pixels = np.asarray(Image.open(path).convert("RGB"))
        except OSError as error:
            raise StageError(f"{path}: cannot read the image ({error})") from None
        boxes = [(a["category_id"], a["bbox"], None) for a in truth[image["id"]] if not a.get("iscrowd")]
        draw_panel(row[0], pixels, boxes, names, f"{image['file_name']}: ground truth")
        for axis, (model, found) in zip(row[1:], detections.items()):
            kept = [(d["category_id"], d["bbox"], d["score"]) for d in found[image["id"]] if d["score"] >= min_score]
            draw_panel(axis, pixels, kept, names, f"{model}: {len(kept)} at >= {min_score}")
    figure.tight_layout()
    with atomic_file(output) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
    log.info("gallery of %d images and %d models in %s", len(images), len(detections), output)
    return [image["file_name"] for image in images]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of the scored images (val2017)")
    parser.add_argument("--annotations", type=Path, required=True, help="instances_val2017.json")
    parser.add_argument(
        "--detections",
        nargs="+",
        required=True,
        metavar="MODEL=PATH",
        help="each model's COCO detections JSON, in the order of the columns",
    )
    parser.add_argument("--count", type=int, default=4, help="how many images (rows)")
    parser.add_argument("--min-score", type=float, default=0.5, help="draw detections at or above this score")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    if args.count < 1:
        raise StageError("draw_gallery: --count must be at least 1")
    draw_gallery(
        args.images,
        args.annotations,
        keyed_paths(args.detections, "detections"),
        args.output,
        args.count,
        args.min_score,
    )


if __name__ == "__main__":
    run_main(main)
