#!/usr/bin/env python3
"""Run a frozen detection graph on the val TFRecord and write its detections.

Detections are in the COCO results format (absolute [x, y, w, h], category ids,
scores). `--max-images N` keeps the first N records (smoke runs); `--shard I
--shards K` keeps every K-th of those, starting at the I-th, so that K jobs
together cover each image once. The graph's ops are checked for CPU kernels
before anything runs.

A long job is resumable: every `--checkpoint-every` images (and at least every
few minutes) the images done since the last save are appended to a hidden
checkpoint beside the output (JSON Lines: the job's identity, then one line per
image, so a save costs what those images cost, not what the whole job has done).
A rerun of the same job (the same graph, records, shard and max_images) carries
on from it, and writes the same output as an uninterrupted run; a checkpoint of
another job is ignored, with a log line saying why; a line cut short by a kill is
dropped.

`--instances N` splits the job's cores into N equal sets and runs N copies of
this script at once, each pinned to its set with cores / N threads, over every
N-th of the shard's images. The output is the one a single process writes (its
images in record order); where each instance ran is listed under "instances".
An instance that fails does not stop the others: a rerun keeps the parts that
finished and resumes the rest from their checkpoints.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from detbench.coco_data import in_record_order, selected_records, to_coco_results, val_record_files
from detbench.common import StageError, atomic_file, file_digests, run_main
from detbench.config_schema import schema_defaults
from detbench.detection_graph import (
    add_interface_arguments,
    decode_image,
    interface_of,
    kernels_in,
)
from detbench.engines import open_engine
from detbench.job_runtime import (
    add_runtime_arguments,
    apply_runtime,
    core_sets,
    environment_facts,
    job_cores,
    run_pinned,
    runtime_arguments,
    runtime_settings,
)

log = logging.getLogger("detect_objects")


CHECKPOINT_SECONDS = 300  # at most this much work is lost when a job is killed


def checkpoint_path(output):
    """Beside the output, hidden, and not one of Snakemake's outputs (which it deletes)."""
    output = Path(output)
    return output.with_name(f".{output.name}.checkpoint")


def job_identity(graph_path, record_dir, max_images, shard, shards):
    """What a checkpoint must match to be resumed: the same graph, records and selection."""
    records = [
        {"name": path.name, "bytes": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
        for path in val_record_files(record_dir)
    ]
    graph_sha256 = file_digests(graph_path, ("sha256",))["sha256"]
    return {
        "graph_sha256": graph_sha256,
        "records": records,
        "max_images": max_images,
        "shard": shard,
        "shards": shards,
    }


def load_checkpoint(path, identity):
    """The progress saved at `path` if it is this job's: a dict of image_ids, record_indices,
    detections, executed_kernels and the byte length of its whole lines; otherwise None (and
    why, in the log)."""
    if not path.is_file():
        return None
    saved = {"image_ids": [], "record_indices": [], "detections": [], "executed_kernels": None, "length": 0}
    try:
        with open(path, "rb") as stream:
            header = json.loads(stream.readline())
            differs = [key for key in identity if header["identity"].get(key) != identity[key]]
            saved["length"] = stream.tell()
            for line in stream:
                if not line.endswith(b"\n"):
                    break  # cut short by a kill
                image = json.loads(line)
                saved["image_ids"].append(image["image_id"])
                saved["record_indices"].append(image["record_index"])
                saved["detections"] += image["detections"]
                saved["executed_kernels"] = saved["executed_kernels"] or image.get("executed_kernels")
                saved["length"] += len(line)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("ignoring checkpoint %s: unreadable (%s)", path, error)
        return None
    if differs:
        log.warning("ignoring checkpoint %s: it is of another job (%s differ)", path, ", ".join(differs))
        return None
    log.info("resuming from checkpoint %s: %d images already done", path, len(saved["image_ids"]))
    return saved


class Checkpoint:
    """Appends the images done since the last save to the job's checkpoint."""

    def __init__(self, path, identity, saved):
        self.path, self.kernels_saved = path, bool(saved and saved["executed_kernels"])
        if saved:
            os.truncate(path, saved["length"])  # drop a line a kill cut short
            self.pending = []
        else:  # a new checkpoint, written at the first save (one of another job goes)
            path.unlink(missing_ok=True)
            self.pending = [json.dumps({"identity": identity}) + "\n"]

    def add(self, image_id, record_index, detections, kernels):
        line = {"image_id": image_id, "record_index": record_index, "detections": detections}
        if not self.kernels_saved:
            line["executed_kernels"], self.kernels_saved = kernels, True
        self.pending.append(json.dumps(line) + "\n")

    def save(self):
        with open(self.path, "a") as stream:
            stream.writelines(self.pending)
            stream.flush()
            os.fsync(stream.fileno())
        self.pending = []


def detect_objects(
    graph_path,
    interface,
    record_dir,
    applied,
    output,
    max_images=0,
    shard=0,
    shards=1,
    checkpoint_every=50,
):
    if not 0 <= shard < shards:
        raise StageError(f"shard {shard} is not in 0..{shards - 1}")
    engine = open_engine(graph_path, applied, interface)
    checkpoint = checkpoint_path(output)
    identity = job_identity(graph_path, record_dir, max_images, shard, shards)
    saved = load_checkpoint(checkpoint, identity)
    progress = Checkpoint(checkpoint, identity, saved)
    saved = saved or {}
    detections = saved.get("detections", [])
    image_ids, record_indices = saved.get("image_ids", []), saved.get("record_indices", [])
    kernels = saved.get("executed_kernels")
    done, ran, last_saved = len(image_ids), 0, time.monotonic()
    records = selected_records(record_dir, max_images, shard, shards)
    for position, (index, features) in enumerate(
        tqdm(records, desc="detecting", unit="image", file=sys.stderr, mininterval=10, ascii=True)
    ):
        if position < done:
            continue  # detected before the job was interrupted
        image_id = int(features["image/source_id"][0])
        # A missing image would change the AP: an unreadable one always stops the job.
        name = f"image {image_id} (record {index} of {record_dir})"
        image = decode_image(features["image/encoded"][0], name)[None]
        height, width = image.shape[1:3]
        if kernels is None:
            kernels = kernels_in(engine.node_times(image, 1))
        found = to_coco_results(image_id, height, width, engine.detect(image))
        detections.extend(found)
        image_ids.append(image_id)
        record_indices.append(index)
        progress.add(image_id, index, found, kernels)
        ran += 1
        if ran % checkpoint_every == 0 or time.monotonic() - last_saved > CHECKPOINT_SECONDS:
            progress.save()
            last_saved = time.monotonic()
    log.info("%d images run in this job, %d taken from a checkpoint", ran, done)
    if not image_ids:
        # More shards than images (a smoke run): an empty shard is still a complete one.
        log.warning("no images for shard %d of %d (max_images %d)", shard, shards, max_images)
    log.info("%d detections in %d images (shard %d of %d)", len(detections), len(image_ids), shard, shards)
    # The checkpoint identity has hashed the graph already (217 MB for R-FCN).
    facts = {**environment_facts(graph_path, applied, identity["graph_sha256"]), **engine.facts()}
    result = write_detections(output, identity, image_ids, record_indices, kernels, facts, detections)
    checkpoint.unlink(missing_ok=True)
    return result


def write_detections(output, identity, image_ids, record_indices, kernels, facts, detections):
    """The detections file: which images of which job, where they ran, then the detections."""
    result = {
        "shard": identity["shard"],
        "shards": identity["shards"],
        "max_images": identity["max_images"],
        "image_ids": image_ids,
        "record_indices": record_indices,
        "executed_kernels": kernels,
        "identity": identity,
        **facts,
        "detections": detections,
    }
    with atomic_file(output) as temporary:
        temporary.write_text(json.dumps(result) + "\n")
    return result


def instance_output(output, instance, instances):
    """An instance's part of the output: hidden beside it until the parts are merged."""
    output = Path(output)
    return output.with_name(f".{output.stem}.instance-{instance}-of-{instances}.json")


def finished_part(path, identity):
    """The part at `path` if an earlier run finished it for this very selection; else None."""
    try:
        part = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return part if isinstance(part, dict) and part.get("identity") == identity else None


def detect_with_instances(
    graph_path,
    interface_flags,
    record_dir,
    settings,
    output,
    instances,
    max_images=0,
    shard=0,
    shards=1,
    checkpoint_every=50,
):
    """Run `instances` pinned copies over the shard's images; merge their parts into `output`."""
    if not 0 <= shard < shards:
        raise StageError(f"shard {shard} is not in 0..{shards - 1}")
    if settings["numa_socket"] is not None:
        raise StageError("numa_socket binds a whole socket; with several instances each is pinned to its own cores")
    sets = core_sets(job_cores(settings["intra_op_threads"]), instances)
    # Instance k takes the records of sub-shard shard + k * shards of shards * instances:
    # together, exactly this shard's records.
    selections = [(shard + k * shards, shards * instances) for k in range(instances)]
    parts = [instance_output(output, k, instances) for k in range(instances)]
    identity = job_identity(graph_path, record_dir, max_images, shard, shards)
    commands, pinned, started = [], [], []
    for instance, (cpus, (part_shard, part_shards), part) in enumerate(zip(sets, selections, parts)):
        if finished_part(part, {**identity, "shard": part_shard, "shards": part_shards}):
            log.info("instance %d: its part was finished by an earlier run (%s)", instance, part.name)
            continue
        threads = len(cpus)
        commands.append(
            [
                sys.executable,
                __file__,
                "--graph",
                str(graph_path),
                "--records",
                str(record_dir),
                "--output",
                str(part),
                "--max-images",
                str(max_images),
                "--shard",
                str(part_shard),
                "--shards",
                str(part_shards),
                "--checkpoint-every",
                str(checkpoint_every),
                *interface_flags,
                *runtime_arguments({**settings, "intra_op_threads": threads, "omp_num_threads": threads}),
            ]
        )
        pinned.append(cpus)
        started.append(instance)
        log.info("instance %d: %d threads, shard %d of %d", instance, threads, part_shard, part_shards)
    # An instance that fails does not stop the others: their parts are kept for a rerun.
    failed = zip(started, run_pinned(commands, pinned, instances=started))
    failures = [f"instance {instance}: {failure}" for instance, failure in failed if failure]
    if failures:
        raise StageError(
            f"{len(failures)} of {instances} instances failed ({'; '.join(failures)}); "
            "a rerun keeps the parts that finished"
        )
    results = [json.loads(part.read_text()) for part in parts]
    image_ids, record_indices, detections = in_record_order(results)
    first = results[0]
    log.info(
        "%d detections in %d images (shard %d of %d, %d instances)",
        len(detections),
        len(image_ids),
        shard,
        shards,
        instances,
    )
    facts = {
        **{
            key: first[key]
            for key in (
                "graph",
                "graph_sha256",
                "precision",
                "emulated",
                "tensorflow_version",
                "onednn",
                "cpu_model",
                "cpu_flags",
            )
        },
        "instances": [
            {
                "cores": cpus,
                "shard": selection[0],
                "shards": selection[1],
                **{
                    key: part[key]
                    for key in ("runtime", "usable_cores", "peak_rss_mb", "memory_policy", "tcmalloc_loaded")
                },
            }
            for cpus, selection, part in zip(sets, selections, results)
        ],
    }
    kernels = next((part["executed_kernels"] for part in results if part["image_ids"]), None)  # known where images ran
    result = write_detections(output, identity, image_ids, record_indices, kernels, facts, detections)
    # The parts, and any left by a run with another instance count, with their checkpoints.
    for leftover in Path(output).parent.glob(f"*.{Path(output).stem}.instance-*"):
        leftover.unlink()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, required=True, help="frozen_inference_graph.pb, or model.xml (openvino)")
    parser.add_argument("--records", type=Path, required=True, help="folder of coco_val.record*")
    parser.add_argument("--output", type=Path, required=True, help="detections JSON")
    parser.add_argument("--max-images", type=int, default=0, help="first N records only (0: all)")
    parser.add_argument("--shard", type=int, default=0, help="which of --shards this job is")
    parser.add_argument("--shards", type=int, default=1, help="jobs the images are split over")
    defaults = schema_defaults("accuracy")
    parser.add_argument(
        "--checkpoint-every", type=int, default=defaults["checkpoint_every"], help="save progress every N images"
    )
    parser.add_argument(
        "--instances", type=int, default=defaults["instances_per_node"], help="pinned copies sharing this job's cores"
    )
    add_interface_arguments(parser)
    add_runtime_arguments(parser)
    args = parser.parse_args()
    if args.checkpoint_every < 1:
        raise StageError("--checkpoint-every must be at least 1")
    if args.instances < 1:
        raise StageError("--instances must be at least 1")
    if args.instances > 1:
        detect_with_instances(
            args.graph,
            interface_of(args).arguments(),
            args.records,
            runtime_settings(args),
            args.output,
            args.instances,
            args.max_images,
            args.shard,
            args.shards,
            args.checkpoint_every,
        )
        return
    interface = interface_of(args)
    applied = apply_runtime(runtime_settings(args))
    detect_objects(
        args.graph,
        interface,
        args.records,
        applied,
        args.output,
        args.max_images,
        args.shard,
        args.shards,
        args.checkpoint_every,
    )


if __name__ == "__main__":
    run_main(main)
