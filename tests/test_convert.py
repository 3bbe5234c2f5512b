"""The TFRecord checks on their own; the full conversion runs in test_workflow.py."""

import json

import pytest
from convert_coco_to_tfrecord import check_records

from detbench.coco_data import val_record_files
from detbench.common import StageError


def test_both_output_layouts_are_recognised(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    (single / "coco_val.record").write_bytes(b"")
    (single / "coco_train.record").write_bytes(b"")
    assert [p.name for p in val_record_files(single)] == ["coco_val.record"]
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for index in (1, 0, 2):
        (sharded / f"coco_val.record-{index:05d}-of-00003").write_bytes(b"")
    assert [p.name[-14:] for p in val_record_files(sharded)] == ["00000-of-00003", "00001-of-00003", "00002-of-00003"]


def test_incomplete_shard_set_is_refused(tmp_path):
    (tmp_path / "coco_val.record-00000-of-00002").write_bytes(b"")
    with pytest.raises(StageError, match="incomplete shard set"):
        val_record_files(tmp_path)


def test_records_must_cover_every_image(tmp_path):
    import tensorflow as tf

    record = tmp_path / "coco_val.record"
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"1"]))
                for key in ("image/encoded", "image/filename", "image/source_id", "image/object/class/text")
            }
            | {
                key: tf.train.Feature(float_list=tf.train.FloatList(value=[0.5]))
                for key in (
                    "image/height",
                    "image/width",
                    "image/object/bbox/xmin",
                    "image/object/bbox/xmax",
                    "image/object/bbox/ymin",
                    "image/object/bbox/ymax",
                )
            }
        )
    )
    with tf.io.TFRecordWriter(str(record)) as writer:
        writer.write(example.SerializeToString())
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}]}))
    with pytest.raises(StageError, match="1 records for 2 images"):
        check_records([record], annotations)
    annotations.write_text(json.dumps({"images": [{"id": 1}]}))
    assert check_records([record], annotations)["records"] == 1


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub\\\\..\\\\x.jpg", "..", ""])
def test_image_file_name_leading_out_of_the_image_folder_is_refused(tmp_path, name):
    from convert_coco_to_tfrecord import convert

    annotations = tmp_path / "instances_val2017.json"
    annotations.write_text(json.dumps({"images": [{"id": 7, "file_name": name}]}))
    with pytest.raises(StageError, match=r"image 7 has file_name .*, which is not a file of the image folder"):
        convert(
            tmp_path / "models",
            tmp_path / "val2017",
            annotations,
            tmp_path / "e.json",
            tmp_path / "e",
            tmp_path / "out",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances_val2017.json"]


def test_missing_or_corrupt_image_is_named_before_the_converter_runs(tmp_path):
    from convert_coco_to_tfrecord import check_inputs
    from PIL import Image

    images = tmp_path / "val2017"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "000000000139.jpg")
    annotations = tmp_path / "instances_val2017.json"
    listed = [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 285, "file_name": "000000000285.jpg"}]
    annotations.write_text(json.dumps({"images": listed, "annotations": [{"id": 1}, {"id": 2}, {"id": 3}]}))
    with pytest.raises(
        StageError,
        match=rf"^image 285 \(000000000285.jpg\) of {annotations} is not in {images}: the "
        "images and the annotations do not match",
    ):
        check_inputs(annotations, images)
    (images / "000000000285.jpg").write_bytes(b"<html>not an image</html>")
    with pytest.raises(StageError, match=rf"^{images}/000000000285.jpg \(image 285\): not a readable image"):
        check_inputs(annotations, images)
    Image.new("L", (8, 8)).save(images / "000000000285.jpg")
    assert check_inputs(annotations, images) == (2, 3)


def test_annotations_the_converter_drops_are_counted_and_reported(finished_run, tmp_path):
    """create_coco_tf_record.py silently skips a box past the image's edge: summary.json and
    the report count it."""
    from helpers import run_script

    workdir = finished_run.workdir
    annotations = json.loads((workdir / "resources/coco/annotations/instances_val2017.json").read_text())
    image = annotations["images"][0]
    box = next(a for a in annotations["annotations"] if a["image_id"] == image["id"])
    box["bbox"][2] = image["width"] - box["bbox"][0] + 5  # 5 pixels past the right edge
    changed = tmp_path / "instances_val2017.json"
    changed.write_text(json.dumps(annotations))
    output = tmp_path / "coco_tfrecord"
    empty = workdir / "resources/coco/empty"
    run = run_script(
        "convert_coco_to_tfrecord.py",
        "--models-dir",
        workdir / "resources/tensorflow_models",
        "--image-dir",
        workdir / "resources/coco/val2017",
        "--annotations",
        changed,
        "--empty-annotations",
        empty / "empty.json",
        "--empty-image-dir",
        empty / "images",
        "--output-dir",
        output,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())
    total = len(annotations["annotations"])
    assert (summary["annotations"], summary["annotations_dropped"], summary["objects"]) == (total, 1, total - 1)
    assert f"1 of {total} annotations dropped by create_coco_tf_record.py" in run.stderr
    original = json.loads((workdir / "resources/coco_tfrecord/summary.json").read_text())
    assert original["annotations_dropped"] == 0
    report = (workdir / "results/report/summary.md").read_text()
    assert f"0 of {total} annotations dropped by create_coco_tf_record.py" in report


def test_a_converter_with_the_newer_interface_is_refused_in_one_line(finished_run, tmp_path):
    """A recent tensorflow/models pin: its converter takes --image_dir, --object_annotations_file,
    --output_file_prefix and --num_shards. The stage names what it found and the pins that work,
    and writes nothing."""
    import subprocess
    import sys

    from convert_coco_to_tfrecord import RECIPE_COMMIT, UPSTREAM_SCRIPT
    from helpers import REPO_ROOT, error_lines, run_script, tool_environment

    from tools.demo.make_demo_data import git
    from tools.upstream.newer_converter import commit_newer_converter

    workdir = finished_run.workdir
    checkout = tmp_path / "tensorflow_models"
    git("clone", "--quiet", str(workdir / "resources/tensorflow_models"), str(checkout), cwd=tmp_path)
    commit_newer_converter(checkout)
    empty = workdir / "resources/coco/empty"
    recipe_flags = [
        f"--train_image_dir={empty / 'images'}",
        f"--val_image_dir={workdir / 'resources/coco/val2017'}",
        f"--output_dir={tmp_path / 'direct'}",
    ]
    # The stand-in is what the issue met: absl refuses the recipe's flags.
    direct = subprocess.run(
        [sys.executable, str(checkout / UPSTREAM_SCRIPT), *recipe_flags],
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    assert direct.returncode != 0 and "Unknown command line flag 'train_image_dir'" in direct.stderr
    output = tmp_path / "coco_tfrecord"
    run = run_script(
        "convert_coco_to_tfrecord.py",
        "--models-dir",
        checkout,
        "--image-dir",
        workdir / "resources/coco/val2017",
        "--annotations",
        workdir / "resources/coco/annotations/instances_val2017.json",
        "--empty-annotations",
        empty / "empty.json",
        "--empty-image-dir",
        empty / "images",
        "--output-dir",
        output,
    )
    assert run.returncode == 1
    assert error_lines(run) == [
        f"error: {checkout / UPSTREAM_SCRIPT} has the newer interface (--image_dir, --object_annotations_file, "
        "--output_file_prefix, --num_shards); the workflow runs the recipe's (--train_image_dir ... --output_dir), "
        f"whose records Intel's numbers came from: set tensorflow_models.commit to the recipe's pin {RECIPE_COMMIT} "
        "or another commit whose create_coco_tf_record.py takes --train_image_dir"
    ]
    assert not output.exists() and not any(p.name.startswith(".coco_tfrecord") for p in tmp_path.iterdir())
    config = (REPO_ROOT / "config/config.yaml").read_text()
    assert f"commit: {RECIPE_COMMIT}" in config  # the pin the message names is the recipe's default
