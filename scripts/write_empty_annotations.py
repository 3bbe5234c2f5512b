#!/usr/bin/env python3
"""Write the recipe's empty COCO annotations stub and empty image folder.

create_coco_tf_record.py converts train, val and test-dev in one call; the recipe
feeds it these empty inputs for train and test-dev so that only val is converted.
"""

import argparse
from pathlib import Path

from detbench.common import atomic_file, run_main

# Byte for byte what the recipe's `echo` writes.
EMPTY_ANNOTATIONS = '{ "images": {}, "categories": {}}\n'


def write_empty_annotations(json_path, image_dir):
    Path(image_dir).mkdir(parents=True, exist_ok=True)
    with atomic_file(json_path) as temporary:
        temporary.write_text(EMPTY_ANNOTATIONS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_path", type=Path, help="the stub to write (empty.json)")
    parser.add_argument("image_dir", type=Path, help="the empty image folder to create")
    args = parser.parse_args()
    write_empty_annotations(args.json_path, args.image_dir)


if __name__ == "__main__":
    run_main(main)
