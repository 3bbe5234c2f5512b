"""Cluster execution: sharded accuracy, the profiles, and a real one-node SLURM."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, SCRIPTS, Workflow, tool_environment
from slurm_cluster import SlurmCluster, SlurmUnavailable

from tools.demo.demo_config import demo_config

# Two models with graphs of their own: a third (int8_inc) would run the same stages again.
PRECISIONS = ("int8", "fp32")
CLUSTER_MODELS = ("int8",)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM must run under CI (.ci/run installs it): {error}")
        pytest.skip(f"SLURM cannot be set up here: {error}")
    yield cluster
    cluster.stop()


def load(path):
    return json.loads(path.read_text())


def run_stage(script, *arguments):
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *map(str, arguments)],
        capture_output=True,
        text=True,
        env=tool_environment(),
    )
    assert run.returncode == 0, run.stderr[-2000:]


def detect_shard(workdir, precision, output, shard, shards, *extra):
    run_stage(
        "detect_objects.py",
        "--graph",
        workdir / f"resources/models/{precision}/frozen_inference_graph.pb",
        "--records",
        workdir / "resources/coco_tfrecord",
        "--output",
        output,
        "--shard",
        shard,
        "--shards",
        shards,
        *extra,
    )


def evaluate_shards(workdir, shards, detections, metrics):
    run_stage(
        "evaluate_detections.py",
        *shards,
        "--annotations",
        workdir / "resources/coco/annotations/instances_val2017.json",
        "--records",
        workdir / "resources/coco_tfrecord",
        "--detections",
        detections,
        "--metrics",
        metrics,
    )


@pytest.mark.slow
def test_sharded_accuracy_equals_unsharded(finished_run, tmp_path):
    workdir = finished_run.workdir
    for precision in PRECISIONS:
        shards = [tmp_path / f"{precision}-{shard}.json" for shard in range(3)]
        for shard, output in enumerate(shards):
            detect_shard(workdir, precision, output, shard, 3)
        assert sorted(len(load(path)["image_ids"]) for path in shards) == [2, 3, 3]
        merged = tmp_path / f"{precision}_detections.json"
        metrics = tmp_path / f"{precision}.json"
        evaluate_shards(workdir, shards, merged, metrics)
        assert merged.read_text() == (workdir / f"results/accuracy/{precision}_detections.json").read_text()
        unsharded = load(workdir / f"results/accuracy/{precision}.json")
        for key in ("images", "detections", "standard", "legacy"):
            assert load(metrics)[key] == unsharded[key], key


def test_incomplete_shard_set_is_refused(finished_run, tmp_path):
    shard = tmp_path / "int8-0.json"
    detect_shard(finished_run.workdir, "int8", shard, 0, 2)
    from evaluate_detections import merge_shards

    from detbench.common import StageError

    with pytest.raises(StageError, match=r"do not form a complete set: \[0\]"):
        merge_shards([shard])


def test_cluster_generic_profile_plans_the_full_dag(tmp_path, demo_data):
    workflow = Workflow(tmp_path, demo_config(demo_data, "http://127.0.0.1:9"))
    jobs = workflow.planned_jobs("--profile", str(REPO_ROOT / "profiles" / "cluster-generic"))
    assert jobs == {
        "download_file": 4,
        "extract_coco_images": 1,
        "extract_coco_annotations": 1,
        "write_empty_annotations": 1,
        "checkout_tensorflow_models": 1,
        "convert_coco_to_tfrecord": 1,
        "prepare_frozen_graph": 2,
        "quantize_graph": 1,
        "benchmark_graph": 4,
        "benchmark_repeat": 4,
        "run_loadgen": 4,
        "detect_objects": 4,
        "evaluate_accuracy": 4,
        "compare_with_reference": 3,
        "measure_layer_drift": 3,
        "draw_gallery": 1,
        "make_report": 1,
        "all": 1,
    }


def test_every_rule_declares_cluster_resources():
    text = "".join(path.read_text() for path in sorted((REPO_ROOT / "rules").glob("*.smk")))
    for block in text.split("\nrule ")[1:]:
        name = block.split(":", 1)[0].strip()
        if "shell:" not in block:
            continue  # target rules run nothing
        assert "threads:" in block and "mem_mb=" in block and 'runtime="' in block, name
        network = name in ("download_file", "checkout_tensorflow_models")
        assert ("localrule: True" in block) == (network or name == "write_empty_annotations"), name


@pytest.mark.slow
def test_workflow_on_slurm_equals_local_run(slurm, tmp_path, demo_data, file_server, finished_run):
    config = demo_config(demo_data, file_server.url)
    # One model is enough to show the cluster runs what the local run does (the others' jobs
    # are of the same rules), and keeps the test's SLURM jobs few: INT8, whose jobs need oneDNN
    # and TCMalloc on the node.
    config["models"] = {name: config["models"][name] for name in CLUSTER_MODELS}
    # Each shard an exclusive job whose two pinned instances share its node.
    config["accuracy"].update(shards=2, instances_per_node=2)
    config["inference_threads"] = 2
    # One benchmark round and no LoadGen: their jobs are inference jobs like the benchmark's.
    config["benchmark"].update(number_of_steps=20, warmup_steps=5, repeats=1)
    config["loadgen"].update(scenarios=[], models=None)
    workflow = Workflow(tmp_path / "slurm-run", config)
    # The data and graphs of the shared local run (resources/ and the cost files of the jobs
    # that made them, times kept): what runs on SLURM is every job that measures or scores.
    for folder in ("resources", "benchmarks"):
        shutil.copytree(finished_run.workdir / folder, workflow.workdir / folder, symlinks=True)
    profile = ["--profile", str(REPO_ROOT / "profiles" / "slurm")]
    result = workflow.run(*profile, "--slurm-keep-successful-logs", environment=slurm.environment)
    output = result.stdout + result.stderr

    # Every job that is not a local rule went through SLURM.
    submitted = [line for line in output.splitlines() if "has been submitted with SLURM jobid" in line]
    # 1 benchmark, 2 shards, 1 score, gallery, report
    assert len(submitted) == 6
    queue = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %T"], capture_output=True, text=True, env=slurm.environment
    ).stdout
    job_ids = [line.rsplit("SLURM jobid ", 1)[1].split()[0] for line in submitted]
    states = dict(line.split() for line in queue.splitlines())
    assert all(states[job_id] == "COMPLETED" for job_id in job_ids)
    assert list((workflow.workdir / ".snakemake/slurm_logs/rule_detect_objects").iterdir())

    for precision in CLUSTER_MODELS:
        ours = load(workflow.workdir / f"results/accuracy/{precision}.json")
        local = load(finished_run.workdir / f"results/accuracy/{precision}.json")
        assert ours["shards"] == 2 and local["shards"] == 1
        shard = load(workflow.workdir / f"results/accuracy/{precision}/detections-1-of-2.json")
        assert [item["shards"] for item in shard["instances"]] == [4, 4]
        for key in ("images", "detections", "standard", "legacy"):
            assert ours[key] == local[key], key
        detections = f"results/accuracy/{precision}_detections.json"
        assert (workflow.workdir / detections).read_text() == (finished_run.workdir / detections).read_text()

    # The cluster-generic profile on the same SLURM: sbatch to submit, its status.py to poll.
    # Its commands are relative to the project folder, which the working directory stands for.
    (workflow.workdir / "profiles").symlink_to(REPO_ROOT / "profiles")
    generic = workflow.run(
        "--profile",
        str(REPO_ROOT / "profiles" / "cluster-generic"),
        "--forcerun",
        "make_report",
        environment=slurm.environment,
    )
    output = generic.stdout + generic.stderr
    external = [line for line in output.splitlines() if "with external jobid" in line]
    assert len(external) == 1 and "make_report" in output
    assert list((workflow.workdir / "logs/cluster").glob("make_report-*.out"))

    # A job that fails on the cluster: reported with its SLURM log, and the run fails. The INT8
    # graph is damaged in place, its times kept, so that only the forced benchmarks run again.
    graph = workflow.workdir / "resources/models/int8/frozen_inference_graph.pb"
    times = graph.stat()
    graph.write_bytes(graph.read_bytes()[:1000])
    os.utime(graph, ns=(times.st_atime_ns, times.st_mtime_ns))
    failed = workflow.run(
        *profile, "--retries", "0", "--forcerun", "benchmark_graph", check=False, environment=slurm.environment
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Error in rule benchmark_graph" in output
    assert ".snakemake/slurm_logs/rule_benchmark_graph/" in output
    log = (workflow.workdir / "logs/benchmark_graph/int8.log").read_text()
    assert "error: resources/models/int8/frozen_inference_graph.pb: not a TensorFlow GraphDef" in log


@pytest.mark.slow
def test_more_shards_than_images_still_scores(finished_run, tmp_path):
    workdir = finished_run.workdir
    shards = [tmp_path / f"fp32-{shard}.json" for shard in range(3)]
    for shard, output in enumerate(shards):
        detect_shard(workdir, "fp32", output, shard, 3, "--max-images", 2)
    assert [len(load(path)["image_ids"]) for path in shards] == [1, 1, 0]
    metrics = tmp_path / "fp32.json"
    evaluate_shards(workdir, shards, tmp_path / "d.json", metrics)
    assert load(metrics)["images"] == 2 and load(metrics)["standard"]["AP"] == pytest.approx(1.0)
