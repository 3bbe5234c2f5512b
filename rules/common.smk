import json
import os
import re
import shlex
import sys
from itertools import chain
from pathlib import Path

# scripts/ is on sys.path (the Snakefile put it there to read the config file first).
from detection_graph import Interface
from job_runtime import bf16_native, runtime_arguments
from performance import parts_arguments
from workflow_config import (
    checked_config,
    graph_model,
    load_schema,
    model_runtime,
    models_run_here,
    own_graph,
    reference_model,
    stop_if,
)

# The config and the command line, before any job is planned: schema defaults filled in,
# then one line per problem, no trace lines.
stop_if(checked_config(config, load_schema(), cores=workflow.cores))

SCRIPTS = Path(workflow.basedir) / "scripts"
DOWNLOADS = "resources/downloads"
MODELS = list(config["models"])


# The models of the default target: a bf16 model this CPU would only emulate is left out.
DEFAULT_MODELS, LEFT_OUT = models_run_here(config, bf16_native())
for note in LEFT_OUT:
    print(note, file=sys.stderr)
# Models whose graph file is their own: downloaded, or quantized here from another model.
DOWNLOADED_MODELS = [name for name in MODELS if "download" in config["models"][name]]
QUANTIZED_MODELS = [name for name in MODELS if "quantize" in config["models"][name]]
GRAPH_MODELS = [name for name in MODELS if own_graph(config["models"][name])]
# Models compared with a reference (agreement, layer drift): where they lose accuracy.
COMPARED_MODELS = [
    name
    for name in DEFAULT_MODELS
    if reference_model(config["models"], name) in DEFAULT_MODELS
]


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, if there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    filename=one_of(config["downloads"]),
    model=one_of(MODELS),


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


def model_of(wildcards):
    return config["models"][wildcards.model]


def graph_path(name):
    return f"resources/models/{name}/frozen_inference_graph.pb"


def get_graph(wildcards):
    """The graph file a model runs: its own, or that of the model its graph_of names."""
    return graph_path(graph_model(config["models"], wildcards.model))


def get_reference(wildcards):
    return reference_model(config["models"], wildcards.model)


def get_reference_graph(wildcards):
    return graph_path(graph_model(config["models"], get_reference(wildcards)))


def get_reference_detections(wildcards):
    return f"results/accuracy/{get_reference(wildcards)}_detections.json"


def get_graph_source(wildcards):
    """The downloaded graph, and the preprocessing graph joined in front of it if it has one."""
    model = model_of(wildcards)
    sources = {"graph": downloaded(model["download"])}
    if "preprocess" in model:
        sources["preprocess"] = downloaded(model["preprocess"]["download"])
    return sources


def get_preprocess_options(wildcards, input):
    """Where the preprocessing graph's output joins the graph (models.<name>.preprocess)."""
    model = model_of(wildcards)
    if "preprocess" not in model:
        return ""
    return (
        f"--preprocess-graph {shlex.quote(input.preprocess)}"
        f" --preprocess-output {model['preprocess']['output']}"
        f" --detector-input {model['input']['tensor']}"
    )


def get_graph_member_option(wildcards):
    member = model_of(wildcards).get("member")
    return f"--member {shlex.quote(member)}" if member else ""


def get_interface_options(wildcards):
    """The graph's input and output tensors (models.<name>.input.tensor, .outputs)."""
    return " ".join(Interface.of_model(model_of(wildcards)).arguments())


def get_download_targets():
    return [downloaded(name) for name in config["downloads"]]


def get_quantize_source(wildcards):
    return graph_path(model_of(wildcards)["quantize"]["from"])


def get_calibration_dir(wildcards):
    """The model's own calibration folder, or val2017 (the evaluation set)."""
    return (
        model_of(wildcards)["quantize"]["calibration_dir"] or "resources/coco/val2017"
    )


def get_quantize_options(wildcards):
    settings = model_of(wildcards)["quantize"]
    options = [
        f"--calibration-images {settings['calibration_images']}",
        f"--seed {settings['seed']}",
        f"--weight-granularity {settings['weight_granularity']}",
        *(f"--keep-fp32 {shlex.quote(pattern)}" for pattern in settings["keep_fp32"]),
    ]
    if not settings["calibration_dir"]:
        options.append("--from-evaluation-set")
    if settings["accuracy_tolerance"] is not None:
        drift = architecture_of(wildcards)["layer_drift"]
        options += [
            f"--accuracy-tolerance {settings['accuracy_tolerance']}",
            f"--tuning-images {settings['tuning_images']}",
            f"--max-trials {settings['max_trials']}",
            f"--fallback-order {settings['fallback_order']}",
            f"--on-tolerance-miss {settings['on_tolerance_miss']}",
            f"--units {shlex.quote(drift['units'])}",
            f"--heads {shlex.quote(json.dumps(drift['heads']))}",
        ]
    return " ".join(options)


def get_quantize_inputs(wildcards):
    """The graph and calibration images; in accuracy-aware mode, the COCO AP inputs too."""
    inputs = {
        "graph": get_quantize_source(wildcards),
        "images": get_calibration_dir(wildcards),
    }
    if model_of(wildcards)["quantize"]["accuracy_tolerance"] is not None:
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


def get_instance_layouts():
    """benchmark.instances layouts of several instances (1 is benchmark_graph's own job)."""
    return [n for n in config["benchmark"]["instances"] if n > 1]


def get_graph_targets():
    return [graph_path(name) for name in GRAPH_MODELS]


def get_inference_mem_mb(wildcards):
    """One inference job's memory with this model's graph (models.<name>.mem_mb)."""
    return model_of(wildcards)["mem_mb"]


def get_instances_mem_mb(wildcards):
    """Every instance holds its own graph and images."""
    return int(wildcards.instances) * get_inference_mem_mb(wildcards)


def get_detection_instances():
    """Pinned copies of the graph sharing a detection job's cores (its node on a cluster)."""
    return config["accuracy"]["instances_per_node"]


def get_detection_mem_mb(wildcards):
    """Every instance holds its own graph."""
    return get_detection_instances() * get_inference_mem_mb(wildcards)


def get_layer_drift_mem_mb(wildcards):
    """The reference's graph and the model's, loaded together."""
    return config["models"][get_reference(wildcards)]["mem_mb"] + get_inference_mem_mb(
        wildcards
    )


def get_inference_threads():
    """Inference jobs take the whole machine (or the configured node size): nothing should
    share the cores a benchmark is timed on."""
    return config["inference_threads"] or workflow.cores


def get_benchmark_options(wildcards):
    settings = config["benchmark"]
    options = [
        f"--number-of-steps {settings['number_of_steps']}",
        f"--warmup-steps {settings['warmup_steps']}",
        f"--batch-size {settings['batch_size']}",
        f"--on-bad-image {settings['on_bad_image']}",
        f"--profile-steps {settings['profile_steps']}",
    ]
    image_size = model_of(wildcards)["input"]["image_size"]
    if image_size:
        options.append(f"--image-size {image_size[0]}x{image_size[1]}")
    parts = architecture_of(wildcards)["parts"]
    return " ".join(options + [shlex.quote(flag) for flag in parts_arguments(parts)])


def architecture_of(wildcards):
    return config["architectures"][model_of(wildcards)["architecture"]]


def get_runtime_options(wildcards):
    """The model's runtime flags (job_runtime's one builder); 0 threads: the job's threads.
    Not a function of `threads`: Snakemake records such params only after the job, so a
    changed runtime would rerun nothing."""
    model = model_of(wildcards)
    settings = {
        **model_runtime(config, wildcards.model),
        "precision": model["precision"],
        "allow_emulation": model["allow_emulation"],
    }
    return " ".join(runtime_arguments(settings, get_inference_threads()))


def get_drift_options(wildcards):
    """The candidate's precision, and the units and heads of its architecture."""
    model = model_of(wildcards)
    drift = architecture_of(wildcards)["layer_drift"]
    options = [
        f"--candidate-precision {model['precision']}",
        f"--units {shlex.quote(drift['units'])}",
        f"--heads {shlex.quote(json.dumps(drift['heads']))}",
    ]
    if model["allow_emulation"]:
        options.append("--allow-emulation")
    return " ".join(options)


def get_legacy_options(wildcards):
    """Legacy metrics on the first N images only, where the model's published ones were."""
    count = model_of(wildcards)["legacy_images"]
    return f"--legacy-images {count}" if count else ""


def get_checkpoint_interval():
    """How often detection saves its progress: it changes no result, so no rerun either."""
    return Untracked(config["accuracy"]["checkpoint_every"])


def get_detection_shards(wildcards):
    shards = config["accuracy"]["shards"]
    return expand(
        "results/accuracy/{model}/detections-{shard}-of-{shards}.json",
        model=wildcards.model,
        shard=range(shards),
        shards=shards,
    )


def get_report_dir(wildcards, output):
    return os.path.dirname(output.summary)


# The report's inputs, each {key: path}: what make_report is given as KEY=PATH.
def benchmark_results():
    return {name: f"results/benchmark/{name}.json" for name in DEFAULT_MODELS}


def instance_results():
    return {
        f"{name}:{count}": f"results/benchmark/instances/{name}-{count}.json"
        for name in DEFAULT_MODELS
        for count in get_instance_layouts()
    }


def accuracy_results():
    return {name: f"results/accuracy/{name}.json" for name in DEFAULT_MODELS}


def agreement_results():
    return {
        name: f"results/diagnostics/{name}_agreement.json" for name in COMPARED_MODELS
    }


def layer_drift_results():
    return {
        name: f"results/diagnostics/{name}_layer_drift.json" for name in COMPARED_MODELS
    }


def quantization_reports():
    return {
        name: f"resources/models/{name}/quantization.json"
        for name in QUANTIZED_MODELS
        if name in DEFAULT_MODELS
    }


def stage_costs():
    """Every job's Snakemake benchmark file (wall time, peak memory), as STAGE:MODEL (or
    STAGE:all) in the order the stages run: the report's cost table."""
    shards = config["accuracy"]["shards"]
    costs = {
        f"download_file:all:{name}": f"benchmarks/download_file/{name}.tsv"
        for name in config["downloads"]
    }
    for stage in (
        "extract_coco_images",
        "extract_coco_annotations",
        "write_empty_annotations",
        "checkout_tensorflow_models",
        "convert_coco_to_tfrecord",
    ):
        costs[f"{stage}:all"] = f"benchmarks/{stage}.tsv"
    for name in DOWNLOADED_MODELS:
        costs[f"prepare_frozen_graph:{name}"] = (
            f"benchmarks/prepare_frozen_graph/{name}.tsv"
        )
    for name in QUANTIZED_MODELS:
        costs[f"quantize_graph:{name}"] = f"benchmarks/quantize_graph/{name}.tsv"
    for name in DEFAULT_MODELS:
        costs[f"benchmark_graph:{name}"] = f"benchmarks/benchmark_graph/{name}.tsv"
        for count in get_instance_layouts():
            costs[f"benchmark_instances:{name}:{count}"] = (
                f"benchmarks/benchmark_instances/{name}-{count}.tsv"
            )
        for shard in range(shards):
            costs[f"detect_objects:{name}:{shard}"] = (
                f"benchmarks/detect_objects/{name}-{shard}-of-{shards}.tsv"
            )
        costs[f"evaluate_accuracy:{name}"] = f"benchmarks/evaluate_accuracy/{name}.tsv"
    for name in COMPARED_MODELS:
        for stage in ("compare_with_reference", "measure_layer_drift"):
            costs[f"{stage}:{name}"] = f"benchmarks/{stage}/{name}.tsv"
    costs["draw_gallery:all"] = "benchmarks/draw_gallery.tsv"
    return costs


def gallery_detections():
    """Each model's detections for the gallery's columns: architecture by architecture, in
    the registry's order, each reference first."""
    architectures = {
        config["models"][name]["architecture"]: [] for name in DEFAULT_MODELS
    }
    for name in DEFAULT_MODELS:
        column = architectures[config["models"][name]["architecture"]]
        reference = reference_model(config["models"], name)
        column.insert(0 if reference is None else len(column), name)
    return {
        name: f"results/accuracy/{name}_detections.json"
        for names in architectures.values()
        for name in names
    }


def get_gallery_options(wildcards):
    settings = config["diagnostics"]
    return (
        f"--detections {keyed(gallery_detections())}"
        f" --count {settings['gallery_images']} --min-score {settings['gallery_min_score']}"
    )


def keyed(paths):
    """make_report's KEY=PATH arguments of one kind of input."""
    return " ".join(shlex.quote(f"{key}={path}") for key, path in paths.items())


def get_report_models():
    """What the report needs of the registry: architecture, precision, reference, published."""
    return json.dumps(
        {
            name: {
                "architecture": config["models"][name]["architecture"],
                "precision": config["models"][name]["precision"],
                "reference": reference_model(config["models"], name),
                "published": config["models"][name]["published"],
            }
            for name in DEFAULT_MODELS
        }
    )


def get_report_inputs(wildcards, input):
    return " ".join(
        f"--{kind} {keyed(paths)}" if paths else ""
        for kind, paths in (
            ("benchmark", benchmark_results()),
            ("instances", instance_results()),
            ("accuracy", accuracy_results()),
            ("agreement", agreement_results()),
            ("layer-drift", layer_drift_results()),
            ("quantization", quantization_reports()),
            ("cost", stage_costs()),
        )
    )


def get_plot_outputs(wildcards, output):
    """The declared plots, as NAME=PATH; the report draws each one it is given."""
    return keyed(
        {name: path for name, path in output.items() if name not in ("summary", "html")}
    )


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
