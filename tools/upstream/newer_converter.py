#!/usr/bin/env python3
"""A tensorflow/models stand-in commit whose create_coco_tf_record.py has the newer interface.

Later tensorflow/models converters take --image_dir, --object_annotations_file,
--output_file_prefix and --num_shards, write shards named PREFIX-00000-of-00032.tfrecord and
leave the image/object/bbox/* keys out of images without objects. This writes such a
converter (a small one of our own with that interface, not upstream's code) over the demo
stand-in's script and commits it, so tests can pin a "recent" commit.

    python tools/upstream/newer_converter.py REPOSITORY   # prints the new commit
"""

import argparse
import shutil
from pathlib import Path

from detbench.common import run_main
from tools.demo.make_demo_data import git

SCRIPT = "research/object_detection/dataset_tools/create_coco_tf_record.py"

NEWER_CONVERTER = '''r"""COCO to sharded TFRecords, with the newer tensorflow/models interface (a test stand-in)."""
import json
import os

from absl import app, flags
import tensorflow as tf

flags.DEFINE_string("image_dir", "", "Folder of the images.")
flags.DEFINE_string("object_annotations_file", "", "COCO instances JSON.")
flags.DEFINE_string("caption_annotations_file", "", "COCO captions JSON (unused here).")
flags.DEFINE_string("output_file_prefix", "/tmp/train", "Path prefix of the shards.")
flags.DEFINE_integer("num_shards", 32, "Number of shards.")
FLAGS = flags.FLAGS


def feature(kind, values):
    lists = {"bytes": tf.train.BytesList, "int64": tf.train.Int64List, "float": tf.train.FloatList}
    return tf.train.Feature(**{kind + "_list": lists[kind](value=values)})


def main(_):
    with open(FLAGS.object_annotations_file) as stream:
        coco = json.load(stream)
    objects = {}
    for annotation in coco["annotations"]:
        objects.setdefault(annotation["image_id"], []).append(annotation)
    writers = [tf.io.TFRecordWriter("%s-%05d-of-%05d.tfrecord" % (FLAGS.output_file_prefix, i, FLAGS.num_shards))
               for i in range(FLAGS.num_shards)]
    for index, image in enumerate(coco["images"]):
        with open(os.path.join(FLAGS.image_dir, image["file_name"]), "rb") as stream:
            encoded = stream.read()
        width, height = image["width"], image["height"]
        example = {
            "image/encoded": feature("bytes", [encoded]),
            "image/source_id": feature("bytes", [str(image["id"]).encode()]),
            "image/height": feature("int64", [height]),
            "image/width": feature("int64", [width]),
        }
        found = objects.get(image["id"], [])
        if found:  # images without objects carry no box keys at all
            x, y, w, h = zip(*(a["bbox"] for a in found))
            example["image/object/bbox/xmin"] = feature("float", [v / width for v in x])
            example["image/object/bbox/ymin"] = feature("float", [v / height for v in y])
            example["image/object/bbox/xmax"] = feature("float", [(a + b) / width for a, b in zip(x, w)])
            example["image/object/bbox/ymax"] = feature("float", [(a + b) / height for a, b in zip(y, h)])
            example["image/object/class/label"] = feature("int64", [a["category_id"] for a in found])
            example["image/object/is_crowd"] = feature("int64", [a["iscrowd"] for a in found])
        record = tf.train.Example(features=tf.train.Features(feature=example))
        writers[index % FLAGS.num_shards].write(record.SerializeToString())
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    app.run(main)
'''


def commit_newer_converter(repository):
    """Commit the newer-interface converter in `repository`; returns the commit."""
    (Path(repository) / SCRIPT).write_text(NEWER_CONVERTER)
    git("commit", "--quiet", "-am", "create_coco_tf_record: the newer interface", cwd=repository)
    return git("rev-parse", "HEAD", cwd=repository)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path, help="a clone of the demo's tensorflow_models stand-in")
    parser.add_argument("--copy-from", type=Path, help="clone this repository into REPOSITORY first")
    args = parser.parse_args()
    if args.copy_from:
        shutil.rmtree(args.repository, ignore_errors=True)
        git("clone", "--quiet", str(args.copy_from), str(args.repository), cwd=Path.cwd())
    print(commit_newer_converter(args.repository))


if __name__ == "__main__":
    run_main(main)
