import json
import os
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, schema="../config/schema.yaml")

SCRIPTS = Path(workflow.basedir) / "scripts"
DOWNLOADS = "resources/downloads"
PRECISIONS = sorted(config["models"])


def check_download_references():
    """Every archive and model names an entry of `downloads`: say which key does not."""
    references = {
        "coco.images_archive": config["coco"]["images_archive"],
        "coco.annotations_archive": config["coco"]["annotations_archive"],
    }
    for precision, model in config["models"].items():
        references[f"models.{precision}.download"] = model["download"]
    for key, name in references.items():
        if name not in config["downloads"]:
            raise WorkflowError(
                f"config key {key}: {name!r} is not an entry of downloads "
                f"({', '.join(config['downloads'])})"
            )


check_download_references()


def check_runtime_settings():
    for precision in PRECISIONS:
        if precision not in config["runtime"]:
            raise WorkflowError(
                f"config key runtime.{precision}: missing (models has {precision})"
            )


check_runtime_settings()


wildcard_constraints:
    filename="|".join(re.escape(name) for name in config["downloads"]),
    precision="|".join(PRECISIONS),


def script(name):
    """A stage script's path, relative to the working directory so that moving a
    checkout together with its results does not look like a changed parameter."""
    return os.path.relpath(SCRIPTS / name)


def downloaded(name):
    return f"{DOWNLOADS}/{name}"


def get_download_url(wildcards):
    return config["downloads"][wildcards.filename]["url"]


def get_download_options(wildcards):
    """Checksum, size and retry options of download.py for one configured file."""
    entry = config["downloads"][wildcards.filename]
    settings = config["download_settings"]
    options = [
        f"--retries {settings['retries']}",
        f"--backoff {settings['backoff_seconds']}",
        f"--connect-timeout {settings['connect_timeout']}",
        f"--read-timeout {settings['read_timeout']}",
    ]
    for key in ("md5", "sha256", "size"):
        if key in entry:
            options.append(f"--{key} {shlex.quote(str(entry[key]))}")
    return " ".join(options)


def get_graph_source(wildcards):
    return downloaded(config["models"][wildcards.precision]["download"])


def get_graph_member_option(wildcards):
    member = config["models"][wildcards.precision].get("member")
    return f"--member {shlex.quote(member)}" if member else ""


def get_download_targets():
    return [downloaded(name) for name in config["downloads"]]


def get_graph_targets():
    return expand(
        "resources/models/{precision}/frozen_inference_graph.pb", precision=PRECISIONS
    )


# Peak memory of an inference job (benchmark_graph, detect_objects), MB. The full-size twin
# measured 3.7 GB for FP32 and 1.7 GB for INT8 (README); the rest is headroom for the
# benchmark's prefetched images (up to 2 GiB) and for graphs larger than the twin.
INFERENCE_MEM_MB = {"int8": 4000, "fp32": 7000}


def get_inference_mem_mb(wildcards):
    return INFERENCE_MEM_MB.get(wildcards.precision, max(INFERENCE_MEM_MB.values()))


def get_inference_threads():
    """Inference jobs take the whole machine (or the configured node size): nothing should
    share the cores a benchmark is timed on."""
    return config.get("inference_threads") or workflow.cores


def get_benchmark_options(wildcards):
    settings = config["benchmark"]
    height, width = settings["image_size"]
    return (
        f"--number-of-steps {settings['number_of_steps']} --warmup-steps {settings['warmup_steps']}"
        f" --batch-size {settings['batch_size']} --image-size {height}x{width}"
    )


def get_runtime_options(wildcards, threads):
    """detection_graph.py's runtime flags for one precision; 0 threads: the job's threads."""
    settings = config["runtime"][wildcards.precision]
    options = [
        f"--intra-op-threads {settings['intra_op_threads'] or threads}",
        f"--inter-op-threads {settings['inter_op_threads']}",
        f"--omp-num-threads {settings['omp_num_threads'] or settings['intra_op_threads'] or threads}",
        f"--kmp-blocktime {settings['kmp_blocktime']}",
        f"--kmp-affinity {settings['kmp_affinity']}",
        "--onednn" if settings["onednn"] else "--no-onednn",
        "--tcmalloc" if settings["tcmalloc"] else "--no-tcmalloc",
    ]
    if settings.get("numa_socket") is not None:
        options.append(f"--numa-socket {settings['numa_socket']}")
    return " ".join(options)


def get_detection_shards(wildcards):
    shards = config["accuracy"]["shards"]
    return expand(
        "results/accuracy/{precision}/detections-{shard}-of-{shards}.json",
        precision=wildcards.precision,
        shard=range(shards),
        shards=shards,
    )


def get_published_reference():
    return json.dumps(config.get("published_reference", {}))


def get_report_dir(wildcards, output):
    return os.path.dirname(output.summary)


def get_benchmark_results():
    return expand("results/benchmark/{precision}.json", precision=PRECISIONS)


def get_accuracy_results():
    return expand("results/accuracy/{precision}.json", precision=PRECISIONS)


def get_stage_benchmarks():
    """Every job's Snakemake benchmark file (wall time, peak memory) that the report sums up."""
    shards = config["accuracy"]["shards"]
    single_jobs = (
        "extract_coco_images",
        "extract_coco_annotations",
        "write_empty_annotations",
        "checkout_tensorflow_models",
        "convert_coco_to_tfrecord",
    )
    return [
        *expand(
            "benchmarks/download_file/{filename}.tsv", filename=config["downloads"]
        ),
        *expand("benchmarks/{name}.tsv", name=single_jobs),
        *expand(
            "benchmarks/{name}/{precision}.tsv",
            name=("prepare_frozen_graph", "benchmark_graph", "evaluate_accuracy"),
            precision=PRECISIONS,
        ),
        *expand(
            "benchmarks/detect_objects/{precision}-{shard}-of-{shards}.tsv",
            precision=PRECISIONS,
            shard=range(shards),
            shards=shards,
        ),
    ]


def get_final_outputs():
    return [
        "resources/coco_tfrecord",
        *get_graph_targets(),
        "results/report/summary.md",
    ]
