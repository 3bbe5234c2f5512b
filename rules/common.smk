import json
import os
import re
import shlex
from itertools import chain
from pathlib import Path

# scripts/ is on sys.path (the Snakefile put it there to read the config file first).
from workflow_config import (
    config_problems,
    load_schema,
    stop_if,
    typed_command_line_values,
)


def check_run():
    """The config (schema and relations between keys) and the command line, before any job
    is planned: one line per problem, no trace lines."""
    schema = load_schema()
    typed_command_line_values(config, schema, schema)
    problems = config_problems(config, schema)
    if workflow.cores == 0:
        problems.append(
            "--cores 0: no job could start; give --cores N (N >= 1) or --cores all"
        )
    stop_if(problems)


check_run()

SCRIPTS = Path(workflow.basedir) / "scripts"
DOWNLOADS = "resources/downloads"
PRECISIONS = sorted(config["models"])
# Models whose graph is downloaded, and models quantized here from another one.
DOWNLOADED_MODELS = [
    name for name, model in config["models"].items() if "download" in model
]
QUANTIZED_MODELS = [
    name for name, model in config["models"].items() if "quantize" in model
]
# Models whose detections are compared with FP32's (where INT8 loses accuracy).
COMPARED_MODELS = [
    name for name in PRECISIONS if name != "fp32" and "fp32" in PRECISIONS
]


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, if there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    filename=one_of(config["downloads"]),
    precision=one_of(PRECISIONS),


class Untracked:
    """A rule parameter that goes into the shell command but not into Snakemake's decision to
    rerun the job (its params trigger records builtin values only). For how a file is fetched
    (URL, retries, timeouts), which does not change what the file is: the `identity`
    parameter decides that."""

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


def script(name):
    """A stage script's path, untracked: where the checkout lies relative to the working
    folder is not what a job computes, so moving either reruns nothing."""
    return Untracked(os.path.relpath(SCRIPTS / name))


def downloaded(name):
    return f"{DOWNLOADS}/{name}"


def get_download_url(wildcards):
    return Untracked(config["downloads"][wildcards.filename]["url"])


def get_download_identity(wildcards):
    """What a download is: its checksums and size where configured (the same file from any
    mirror), else its URL. A change reruns the download and all that depends on it."""
    entry = config["downloads"][wildcards.filename]
    checked = {
        key: str(entry[key]).lower()
        for key in ("md5", "sha256", "size")
        if key in entry
    }
    if "md5" in checked or "sha256" in checked:
        return checked
    return {"url": entry["url"], **checked}


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
    return Untracked(" ".join(options))


def get_graph_source(wildcards):
    return downloaded(config["models"][wildcards.precision]["download"])


def get_graph_member_option(wildcards):
    member = config["models"][wildcards.precision].get("member")
    return f"--member {shlex.quote(member)}" if member else ""


def get_download_targets():
    return [downloaded(name) for name in config["downloads"]]


def get_quantize_source(wildcards):
    source = config["models"][wildcards.precision]["quantize"]["from"]
    return f"resources/models/{source}/frozen_inference_graph.pb"


def get_calibration_dir(wildcards):
    """The model's own calibration folder, or val2017 (the evaluation set)."""
    settings = config["models"][wildcards.precision]["quantize"]
    return settings.get("calibration_dir") or "resources/coco/val2017"


def get_quantize_options(wildcards):
    settings = config["models"][wildcards.precision]["quantize"]
    options = [
        f"--calibration-images {settings['calibration_images']}",
        f"--seed {settings['seed']}",
        f"--weight-granularity {settings['weight_granularity']}",
        *(
            f"--keep-fp32 {shlex.quote(pattern)}"
            for pattern in settings.get("keep_fp32", [])
        ),
    ]
    if not settings.get("calibration_dir"):
        options.append("--from-evaluation-set")
    if settings.get("accuracy_tolerance") is not None:
        options += [
            f"--accuracy-tolerance {settings['accuracy_tolerance']}",
            f"--tuning-images {settings.get('tuning_images', 50)}",
            f"--max-trials {settings.get('max_trials', 10)}",
        ]
    return " ".join(options)


def get_quantize_inputs(wildcards):
    """The graph and calibration images; in accuracy-aware mode, the COCO AP inputs too."""
    inputs = {
        "graph": get_quantize_source(wildcards),
        "images": get_calibration_dir(wildcards),
    }
    settings = config["models"][wildcards.precision]["quantize"]
    if settings.get("accuracy_tolerance") is not None:
        inputs["records"] = "resources/coco_tfrecord"
        inputs["annotations"] = "resources/coco/annotations/instances_val2017.json"
    return inputs


def get_tuning_inputs_option(wildcards, input):
    if "records" not in input.keys():
        return ""
    return (
        f"--tuning-records {shlex.quote(input.records)}"
        f" --tuning-annotations {shlex.quote(input.annotations)}"
    )


def get_agreement_results():
    return expand(
        "results/diagnostics/{precision}_agreement.json", precision=COMPARED_MODELS
    )


def get_instance_layouts():
    """benchmark.instances layouts of several instances (1 is benchmark_graph's own job)."""
    return [n for n in config["benchmark"].get("instances", [1]) if n > 1]


def get_instance_results():
    """Multi-instance benchmarks: one job per precision and layout."""
    return expand(
        "results/benchmark/instances/{precision}-{instances}.json",
        precision=PRECISIONS,
        instances=get_instance_layouts(),
    )


def get_layer_drift_results():
    return expand(
        "results/diagnostics/{precision}_layer_drift.json", precision=COMPARED_MODELS
    )


def get_quantization_reports():
    return expand(
        "resources/models/{precision}/quantization.json", precision=QUANTIZED_MODELS
    )


def get_graph_targets():
    return expand(
        "resources/models/{precision}/frozen_inference_graph.pb", precision=PRECISIONS
    )


# Peak memory of an inference job (benchmark_graph, detect_objects), MB. The full-size twin
# measured 3.7 GB for FP32 and 1.7 GB for INT8 (README); the rest is headroom for the
# benchmark's prefetched images (up to 2 GiB) and for graphs larger than the twin.
INFERENCE_MEM_MB = {"int8": 4000, "int8_inc": 4000, "fp32": 7000}


def get_inference_mem_mb(wildcards):
    return INFERENCE_MEM_MB.get(wildcards.precision, max(INFERENCE_MEM_MB.values()))


def get_instances_mem_mb(wildcards):
    """Every instance holds its own graph and images."""
    return int(wildcards.instances) * get_inference_mem_mb(wildcards)


def get_detection_instances():
    """Pinned copies of the graph sharing a detection job's cores (its node on a cluster)."""
    return config["accuracy"].get("instances_per_node", 1)


def get_detection_mem_mb(wildcards):
    """Every instance holds its own graph."""
    return get_detection_instances() * get_inference_mem_mb(wildcards)


def get_layer_drift_mem_mb(wildcards):
    """The FP32 graph and the compared one, loaded together."""
    return INFERENCE_MEM_MB["fp32"] + get_inference_mem_mb(wildcards)


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
        f" --on-bad-image {settings.get('on_bad_image', 'stop')}"
        f" --profile-steps {settings.get('profile_steps', 3)}"
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


def get_checkpoint_interval():
    """How often detection saves its progress: it changes no result, so no rerun either."""
    return Untracked(config["accuracy"].get("checkpoint_every", 50))


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
            "benchmarks/prepare_frozen_graph/{precision}.tsv",
            precision=DOWNLOADED_MODELS,
        ),
        *expand(
            "benchmarks/quantize_graph/{precision}.tsv", precision=QUANTIZED_MODELS
        ),
        *expand(
            "benchmarks/{name}/{precision}.tsv",
            name=("benchmark_graph", "evaluate_accuracy"),
            precision=PRECISIONS,
        ),
        *expand(
            "benchmarks/benchmark_instances/{precision}-{instances}.tsv",
            precision=PRECISIONS,
            instances=get_instance_layouts(),
        ),
        *expand(
            "benchmarks/{name}/{precision}.tsv",
            name=("compare_with_fp32", "measure_layer_drift"),
            precision=COMPARED_MODELS,
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


def keep_linked_output_folders():
    """After every run Snakemake removes the empty folders of missing outputs (its
    dag.cleanup_workdir). A folder that is a symlink or a mount point (downloads kept on
    another disk) cannot be removed, and the attempt ends a failed run with a traceback
    after the one-line error: a hidden file keeps such a folder from being empty."""
    folders = {
        os.path.dirname(path)
        for job in workflow.dag.jobs
        for path in chain(job.output, job.input)
    }
    for folder in sorted(filter(None, folders)):
        linked = os.path.islink(folder) or os.path.ismount(folder)
        if linked and os.path.isdir(folder) and not any(os.scandir(folder)):
            Path(folder, ".keep").touch()
