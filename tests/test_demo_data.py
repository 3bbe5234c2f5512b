"""The generated mini COCO looks like the real thing where the workflow cares."""

import io
import json
import zipfile

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from tools.demo.make_demo_data import COCO_CATEGORIES


def load(demo_data):
    with zipfile.ZipFile(demo_data / "files" / "annotations_trainval2017.zip") as archive:
        instances = json.loads(archive.read("annotations/instances_val2017.json"))
    images = zipfile.ZipFile(demo_data / "files" / "val2017.zip")
    return instances, images


def test_archives_have_cocos_layout_and_categories(demo_data):
    instances, images = load(demo_data)
    assert {f"val2017/{image['file_name']}" for image in instances["images"]} == set(images.namelist())
    ids = [category["id"] for category in instances["categories"]]
    assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90 and 12 not in ids
    assert COCO_CATEGORIES[18] == "dog"


def test_special_cases_are_present(demo_data):
    instances, images = load(demo_data)
    annotated = {a["image_id"] for a in instances["annotations"]}
    assert any(image["id"] not in annotated for image in instances["images"])
    modes = {Image.open(io.BytesIO(images.read(f"val2017/{i['file_name']}"))).mode for i in instances["images"]}
    assert modes == {"RGB", "L"}
    crowd = [a for a in instances["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1
    image = next(i for i in instances["images"] if i["id"] == crowd[0]["image_id"])
    rle = mask_utils.frPyObjects(crowd[0]["segmentation"], image["height"], image["width"])
    decoded = mask_utils.decode(rle)
    assert decoded.sum() == crowd[0]["area"]
    x, y, w, h = map(int, crowd[0]["bbox"])
    assert np.all(decoded[y : y + h, x : x + w] == 1)
    per_image = {}
    for a in instances["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert max(per_image.values()) >= 3
