#!/usr/bin/env python3
"""Our LoadGen SingleStream against MLPerf's own harness on the same graph and images (a
benchmark, not a test).

MLPerf's `vision/classification_and_detection/python` harness (profile `ssd-mobilenet-tf`,
TensorFlow backend) is exported from a git copy of mlcommons/inference into a temporary folder
and run there, unchanged but for one line its `coco.py` needs under numpy 2 (`dtype=object` for
the ragged label list); nothing of it enters the project. Its dataset is a COCO folder of a
finished run's images, resized to 300x300 as its `coco-300` preprocessing does, so that both
harnesses feed the graph the same arrays. In alternating rounds: MLPerf's harness, then
`run_loadgen.py` (SingleStream) on the same folder, both with LoadGen's SingleStream and the
same query count. Then, in one process, what differs between the two sessions: a bare
`session.run` loop on our session, and on a session configured as MLPerf's backend configures
it (`optimize_for_inference`, inter-op threads = cores, per-session thread pools).

Needs OpenCV for MLPerf's image reading: `pip install --target DIR opencv-python-headless`
and `--opencv DIR`.

    .venv/bin/python -m tools.measure.mlperf_harness --inference-git /work/.mirror/mlcommons+inference/repo \\
        --workdir twin-demo --model ssd_fp32 --opencv /tmp/cvlib [--rounds 3] [--queries 500]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detbench.common import StageError, run_main
from detbench.detection_graph import list_images, load_graph_def, open_session
from detbench.job_runtime import cpu_flags, cpu_model, usable_cores
from detbench.timing import load_image

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS = "vision/classification_and_detection/python"
SIZE = (300, 300)


def export_harness(git_dir, folder):
    """MLPerf's harness from the git copy, into `folder`, with coco.py's numpy 2 fix."""
    archive = subprocess.run(
        ["git", "--git-dir", str(git_dir), "archive", "HEAD", HARNESS], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    harness = folder / HARNESS
    coco = harness / "coco.py"
    text = coco.read_text()
    fixed = text.replace("np.array(self.label_list)", "np.array(self.label_list, dtype=object)")
    if fixed == text:
        raise StageError(f"{coco}: np.array(self.label_list) not found: the harness changed, look again")
    coco.write_text(fixed)
    return harness


def resized_dataset(workdir, folder, count):
    """A COCO folder of the run's first `count` images at 300x300 and its annotations."""
    from PIL import Image

    images = list_images(workdir / "resources/coco/val2017")[:count]
    (folder / "val2017").mkdir(parents=True)
    for path in images:
        Image.fromarray(load_image(path, SIZE)).save(folder / "val2017" / path.name, quality=95)
    annotations = json.loads((workdir / "resources/coco/annotations/instances_val2017.json").read_text())
    kept = {path.name for path in images}
    annotations["images"] = [image for image in annotations["images"] if image["file_name"] in kept]
    ids = {image["id"] for image in annotations["images"]}
    annotations["annotations"] = [a for a in annotations["annotations"] if a["image_id"] in ids]
    (folder / "annotations").mkdir()
    (folder / "annotations/instances_val2017.json").write_text(json.dumps(annotations))
    return folder


def summary_latency(path, label="90.00 percentile latency (ns)"):
    text = Path(path).read_text()
    validity = re.search(r"Result is : (\w+)", text).group(1)
    return int(re.search(rf"{re.escape(label)}\s*: (\d+)", text).group(1)) / 1e6, validity


def run_mlperf(harness, graph, dataset, queries, threads, output, opencv):
    conf = output / "user.conf"
    output.mkdir(parents=True)
    conf.write_text(f"*.SingleStream.min_query_count = {queries}\n*.SingleStream.min_duration = 0\n")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(opencv), str(harness)]))
    command = [sys.executable, "main.py", "--profile", "ssd-mobilenet-tf", "--model", str(graph)]
    command += ["--dataset-path", str(dataset), "--scenario", "SingleStream", "--threads", str(threads)]
    command += ["--user_conf", str(conf), "--output", str(output), "--cache_dir", str(output / "cache")]
    ran = subprocess.run(command, cwd=harness, capture_output=True, text=True, env=environment)
    if ran.returncode != 0:
        raise StageError(f"MLPerf's harness failed: {ran.stderr.strip().splitlines()[-1]}")
    return summary_latency(output / "mlperf_log_summary.txt") + (
        summary_latency(output / "mlperf_log_summary.txt", "50.00 percentile latency (ns)")[0],
    )


def run_ours(graph, dataset, queries, output):
    settings = {
        "min_duration_ms": 0,
        "min_query_count": {"SingleStream": queries},
        "sample_count": 1024,
    }
    command = [sys.executable, str(REPO_ROOT / "scripts/run_loadgen.py"), "--graph", str(graph)]
    command += ["--image-dir", str(dataset / "val2017"), "--scenario", "SingleStream"]
    command += ["--output", str(output / "SingleStream.json"), "--log-dir", str(output / "SingleStream")]
    command += ["--settings", json.dumps(settings)]
    ran = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1"))
    if ran.returncode != 0:
        raise StageError(f"run_loadgen.py failed: {ran.stderr.strip().splitlines()[-1]}")
    result = json.loads((output / "SingleStream.json").read_text())
    return result["metric"]["value"], result["validity"], result["latency_ms"]["50.00"]


def mlperf_style_session(graph_path):
    """A session configured as MLPerf's TensorFlow backend configures one (read, not copied:
    optimize_for_inference, inter-op threads = cores, per-session thread pools)."""
    import tensorflow as tf
    from tensorflow.python.tools.optimize_for_inference_lib import optimize_for_inference

    graph_def = load_graph_def(graph_path)
    optimized = optimize_for_inference(graph_def, ["image_tensor"], FETCH_NODES, tf.uint8.as_datatype_enum, False)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(optimized, name="")
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=os.cpu_count(), inter_op_parallelism_threads=os.cpu_count()
    )
    config.use_per_session_threads = True
    return tf.compat.v1.Session(graph=graph, config=config)


FETCH_NODES = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]


def session_loop(session, images, steps):
    """p50 and p90 ms of `session.run` over the images, round and round, after 5 warm-up runs."""
    fetches = [f"{name}:0" for name in FETCH_NODES]
    seconds = []
    for step in range(steps + 5):
        image = images[step % len(images)][None]
        start = time.perf_counter()
        session.run(fetches, {"image_tensor:0": image})
        seconds.append(time.perf_counter() - start)
    measured = np.array(seconds[5:]) * 1000
    return float(np.percentile(measured, 50)), float(np.percentile(measured, 90))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inference-git", type=Path, required=True, help="a git copy of mlcommons/inference")
    parser.add_argument("--workdir", type=Path, required=True, help="a finished run (twin-demo/, a test's twin run)")
    parser.add_argument("--model", default="ssd_fp32")
    parser.add_argument("--graph", type=Path, help="another graph than the model's (e.g. one optimized for inference)")
    parser.add_argument("--opencv", type=Path, required=True, help="a --target folder holding opencv-python-headless")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--queries", type=int, default=500, help="SingleStream queries per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    graph = (args.graph or args.workdir / f"resources/models/{args.model}/frozen_inference_graph.pb").resolve()
    print(f"CPU: {cpu_model()} ({', '.join(cpu_flags())}), {usable_cores()} cores; graph {graph}")
    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        harness = export_harness(args.inference_git, temporary)
        dataset = resized_dataset(args.workdir, temporary / "coco-300", args.images)
        rows = []
        for round_index in range(args.rounds):
            theirs = run_mlperf(
                harness, graph, dataset, args.queries, usable_cores(), temporary / f"mlperf-{round_index}", args.opencv
            )
            ours = run_ours(graph, dataset, args.queries, temporary / f"ours-{round_index}")
            rows.append((theirs, ours))
            print(
                f"round {round_index + 1}: MLPerf's harness p90 {theirs[0]:.2f} ms ({theirs[1]}, p50 {theirs[2]:.2f}),"
                f" ours p90 {ours[0]:.2f} ms ({ours[1]}, p50 {ours[2]:.2f}), ours / theirs {ours[0] / theirs[0]:.3f}"
            )
        theirs_p90 = statistics.median(row[0][0] for row in rows)
        ours_p90 = statistics.median(row[1][0] for row in rows)
        print(
            f"median p90: MLPerf's harness {theirs_p90:.2f} ms, ours {ours_p90:.2f} ms,"
            f" ratio {ours_p90 / theirs_p90:.3f}"
        )
        shutil.rmtree(temporary / "mlperf-0" / "cache", ignore_errors=True)
    resized = [load_image(path, SIZE) for path in list_images(args.workdir / "resources/coco/val2017")[: args.images]]
    sessions = {
        "our session (open_session)": lambda: open_session(load_graph_def(graph), 0, 1, "fp32"),
        "MLPerf backend's session": lambda: mlperf_style_session(graph),
    }
    opened = {name: make() for name, make in sessions.items()}
    for round_index in range(args.rounds):
        for name, session in opened.items():
            p50, p90 = session_loop(session, resized, args.queries // 2)
            print(f"bare loop, round {round_index + 1}, {name}: p50 {p50:.2f} ms, p90 {p90:.2f} ms")


if __name__ == "__main__":
    run_main(main)
