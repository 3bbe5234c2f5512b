#!/usr/bin/env python3
"""Convert COCO val2017 to TFRecord with tensorflow/models' own create_coco_tf_record.py.

The upstream script is run unmodified, with the recipe's flags, under TensorFlow
2.x: it is given `tensorflow.compat.v1` as its `tensorflow` module, which still
has the TF1 API it uses (tf.app.flags, tf.gfile, tf.python_io, tf.logging,
tf.app.run). Both upstream output layouts are accepted: one `coco_val.record`
(the recipe's pin) or shards `coco_val.record-0000K-of-0000N` (later versions).
The records are then checked against the annotations file. Later checkouts whose script
has another interface (--image_dir, --object_annotations_file, --output_file_prefix,
--num_shards) are refused before they run: their records differ from those Intel's numbers
came from (crowds kept, other keys), so the legacy metrics would not be the recipe's.
"""

import argparse
import json
import logging
import re
import runpy
import sys
from pathlib import Path

from detbench.coco_data import read_examples, val_record_files
from detbench.common import StageError, atomic_directory, import_package, run_main

log = logging.getLogger("convert_coco_to_tfrecord")

UPSTREAM_SCRIPT = "research/object_detection/dataset_tools/create_coco_tf_record.py"
REQUIRED_KEYS = (
    "image/encoded",
    "image/height",
    "image/width",
    "image/filename",
    "image/source_id",
    "image/object/bbox/xmin",
    "image/object/bbox/xmax",
    "image/object/bbox/ymin",
    "image/object/bbox/ymax",
)
# The recipe's pin writes class ids, later versions class names: one of them must be there.
CLASS_KEYS = ("image/object/class/label", "image/object/class/text")
# The tensorflow/models commit the recipe pins (config/config.yaml's default; a test keeps them equal).
RECIPE_COMMIT = "7a9934df2afdf95be9405b4e9f1f2480d748dc40"
RECIPE_FLAGS = (
    "train_image_dir",
    "val_image_dir",
    "test_image_dir",
    "train_annotations_file",
    "val_annotations_file",
    "testdev_annotations_file",
    "output_dir",
)
NEWER_FLAGS = ("image_dir", "object_annotations_file", "output_file_prefix", "num_shards")
FLAG_DEFINITION = re.compile(r"""DEFINE_\w+\(\s*['"](\w+)['"]""")


def check_interface(script):
    """Refuse, in one line, a converter that does not take the recipe's flags (absl would stop
    it with "Unknown command line flag"), naming the interface found and the pins that work."""
    defined = set(FLAG_DEFINITION.findall(script.read_text()))
    missing = [name for name in RECIPE_FLAGS if name not in defined]
    if not missing:
        return
    if all(name in defined for name in NEWER_FLAGS):
        found = f"has the newer interface ({', '.join('--' + name for name in NEWER_FLAGS)})"
    else:
        found = f"takes no --{missing[0]}"
    raise StageError(
        f"{script} {found}; the workflow runs the recipe's (--train_image_dir ... --output_dir), whose records "
        f"Intel's numbers came from: set tensorflow_models.commit to the recipe's pin {RECIPE_COMMIT} "
        "or another commit whose create_coco_tf_record.py takes --train_image_dir"
    )


def upstream_script(models_dir):
    """The checkout's converter, if it is there and takes the recipe's flags."""
    script = Path(models_dir) / UPSTREAM_SCRIPT
    if not script.is_file():
        raise StageError(f"{UPSTREAM_SCRIPT} not found in {models_dir}")
    check_interface(script)
    return script


def run_upstream_converter(models_dir, flags):
    """Run the checkout's create_coco_tf_record.py in this process with TF1 semantics."""
    import tensorflow as tf

    models_dir = Path(models_dir).resolve()
    script = upstream_script(models_dir)
    sys.modules["tensorflow"] = tf.compat.v1
    # The recipe puts research/ on PYTHONPATH for this package; nothing else of it is needed.
    import_package(models_dir / "research", "object_detection")
    sys.argv = [str(script), "--logtostderr", *(f"--{name}={value}" for name, value in flags.items())]
    log.info("running %s", " ".join(sys.argv))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_status:
        if exit_status.code not in (None, 0):
            raise StageError(f"{UPSTREAM_SCRIPT} exited with {exit_status.code}") from None
    finally:
        sys.modules["tensorflow"] = tf


def check_records(files, annotations_file):
    """One record per annotated image, with the expected keys; returns a summary."""
    with open(annotations_file) as stream:
        annotations = json.load(stream)
    expected_ids = {str(image["id"]) for image in annotations["images"]}
    seen_ids = set()
    objects = 0
    class_key = None
    for features in read_examples(files):
        missing = [key for key in REQUIRED_KEYS if key not in features]
        if missing:
            raise StageError(f"record without {', '.join(missing)} in {files[0].parent}")
        class_key = next((key for key in CLASS_KEYS if key in features), None)
        if class_key is None:
            raise StageError(f"record with neither {' nor '.join(CLASS_KEYS)}")
        source_id = features["image/source_id"][0].decode()
        if source_id in seen_ids:
            raise StageError(f"image {source_id} written twice")
        seen_ids.add(source_id)
        objects += len(features["image/object/bbox/xmin"])
    if seen_ids != expected_ids:
        raise StageError(
            f"{len(seen_ids)} records for {len(expected_ids)} images in {annotations_file}; "
            f"missing {len(expected_ids - seen_ids)}, unexpected {len(seen_ids - expected_ids)}"
        )
    return {
        "files": [path.name for path in files],
        "records": len(seen_ids),
        "objects": objects,
        "class_key": class_key,
    }


def check_inputs(annotations_file, image_dir):
    """What the upstream converter would stop on, named in one line before it runs: an image
    `file_name` that is not a plain file name (upstream joins it to the folder as it is, so
    `../x` would put a file from elsewhere into the records), an image missing from the
    folder, and an image Pillow cannot open (upstream opens each with it). Returns the
    annotations' image and annotation counts."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(annotations_file) as stream:
            annotations = json.load(stream)
        images = annotations["images"]
    except (ValueError, KeyError, TypeError) as error:
        raise StageError(f"{annotations_file}: not a COCO annotations file ({error}): extract it again") from None
    for image in images:
        name = str(image.get("file_name", ""))
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise StageError(
                f"{annotations_file}: image {image.get('id')} has file_name {name!r}, which is not a file of the "
                "image folder: the annotations are damaged or not COCO's; download them again"
            )
        path = Path(image_dir) / name
        if not path.is_file():
            raise StageError(
                f"image {image.get('id')} ({name}) of {annotations_file} is not in {image_dir}: the images and the "
                "annotations do not match (coco.images_archive, coco.annotations_archive); download both again"
            )
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError) as error:
            raise StageError(
                f"{path} (image {image.get('id')}): not a readable image ({error}): download the images again"
            ) from None
    return len(images), len(annotations.get("annotations", []))


def convert(models_dir, image_dir, annotations_file, empty_annotations, empty_image_dir, output_dir):
    output_dir = Path(output_dir)
    _, annotation_count = check_inputs(annotations_file, image_dir)
    with atomic_directory(output_dir) as work:
        run_upstream_converter(
            models_dir,
            {
                "train_image_dir": empty_image_dir,
                "val_image_dir": image_dir,
                "test_image_dir": empty_image_dir,
                "train_annotations_file": empty_annotations,
                "val_annotations_file": annotations_file,
                "testdev_annotations_file": empty_annotations,
                "output_dir": work,
            },
        )
        files = val_record_files(work)
        # The empty train and test-dev outputs are of no use downstream.
        for path in work.iterdir():
            if path not in files:
                path.unlink()
        summary = check_records(files, annotations_file)
        # Upstream drops boxes past the image's edge or of zero width or height, and says so
        # only in its log ("skipped N annotations"): the legacy ground truth lacks them.
        summary.update(annotations=annotation_count, annotations_dropped=annotation_count - summary["objects"])
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "%d records, %d objects, in %s; %d of %d annotations dropped by %s",
        summary["records"],
        summary["objects"],
        output_dir,
        summary["annotations_dropped"],
        annotation_count,
        Path(UPSTREAM_SCRIPT).name,
    )
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True, help="tensorflow/models checkout")
    parser.add_argument("--image-dir", type=Path, required=True, help="val2017 image folder")
    parser.add_argument("--annotations", type=Path, required=True, help="instances_val2017.json")
    parser.add_argument("--empty-annotations", type=Path, required=True, help="empty.json stub")
    parser.add_argument("--empty-image-dir", type=Path, required=True, help="empty image folder")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the val records")
    args = parser.parse_args()
    convert(
        args.models_dir,
        args.image_dir,
        args.annotations,
        args.empty_annotations,
        args.empty_image_dir,
        args.output_dir,
    )


if __name__ == "__main__":
    run_main(main)
