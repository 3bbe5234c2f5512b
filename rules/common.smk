import json
import os
import sys
from itertools import chain
from pathlib import Path

# scripts/ is on sys.path (the Snakefile put it there to read the config file first).
from detbench.config_schema import load_schema, stop_if
from detbench.job_runtime import bf16_native, openvino_version
from detbench.plan import (
    Plan,
    benchmark_file,
    downloaded,
    graph_path,
    keyed,
    DOWNLOADS,
    log_file,
    one_of,
)
from detbench.registry import checked_config

# The config and the command line, before any job is planned: schema defaults filled in,
# then one line per problem, no trace lines.
stop_if(checked_config(config, load_schema(), cores=workflow.cores))

SCRIPTS = Path(workflow.basedir) / "scripts"
# What runs: pure functions of the config (scripts/detbench/plan.py, tested on its own).
PLAN = Plan(config, bf16_native())
for note in PLAN.left_out:
    print(note, file=sys.stderr)
MODELS = list(config["models"])
# The IRs are OpenVINO's: another version converts and quantizes them anew.
OPENVINO_VERSION = openvino_version()


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


# Input functions: the plan's answer for the job's wildcards.
def get_download_url(wildcards):
    return Untracked(config["downloads"][wildcards.filename]["url"])


def get_download_identity(wildcards):
    return PLAN.download_identity(wildcards.filename)


def get_download_options(wildcards):
    return Untracked(PLAN.download_options(wildcards.filename))


def get_graph(wildcards):
    return PLAN.graph(wildcards.model)


def get_reference(wildcards):
    return PLAN.reference(wildcards.model)


def get_reference_graph(wildcards):
    return PLAN.reference_graph(wildcards.model)


def get_reference_detections(wildcards):
    return f"results/accuracy/{get_reference(wildcards)}_detections.json"


def get_graph_source(wildcards):
    return PLAN.graph_source(wildcards.model)


def get_preprocess_options(wildcards, input):
    return PLAN.preprocess_options(wildcards.model, input.get("preprocess"))


def get_graph_member_option(wildcards):
    return PLAN.graph_member_option(wildcards.model)


def get_interface_options(wildcards):
    return PLAN.interface_options(wildcards.model)


def get_quantize_inputs(wildcards):
    return PLAN.quantize_inputs(wildcards.model)


def get_quantize_options(wildcards):
    return PLAN.quantize_options(wildcards.model)


def get_openvino_quantize_inputs(wildcards):
    return PLAN.openvino_quantize_inputs(wildcards.model)


def get_openvino_quantize_options(wildcards):
    return PLAN.openvino_quantize_options(wildcards.model)


def get_tuning_inputs_option(wildcards, input):
    return PLAN.tuning_options(input.get("records"), input.get("annotations"))


def get_inference_threads():
    return PLAN.inference_threads(workflow.cores)


def get_inference_mem_mb(wildcards):
    return PLAN.inference_mem_mb(wildcards.model)


def get_instances_mem_mb(wildcards):
    """Every instance holds its own graph and images."""
    return int(wildcards.instances) * get_inference_mem_mb(wildcards)


def get_detection_mem_mb(wildcards):
    """Every instance holds its own graph."""
    return PLAN.detection_instances() * get_inference_mem_mb(wildcards)


def get_layer_drift_mem_mb(wildcards):
    return PLAN.layer_drift_mem_mb(wildcards.model)


def get_benchmark_options(wildcards):
    return PLAN.benchmark_options(wildcards.model)


def get_loadgen_options(wildcards):
    return PLAN.loadgen_options(wildcards.get("scenario", "accuracy"))


def get_repeat_priority(wildcards):
    return PLAN.repeat_priority(int(wildcards.repeat))


def get_runtime_options(wildcards):
    """Not a function of `threads`: Snakemake records such params only after the job, so a
    changed runtime would rerun nothing."""
    return PLAN.runtime_options(wildcards.model, get_inference_threads())


def get_detection_runtime_options(wildcards):
    return PLAN.detection_runtime_options(wildcards.model, get_inference_threads())[0]


def get_detection_thread_options(wildcards):
    """Untracked: another --cores reruns no detection (the benchmarks do rerun)."""
    return Untracked(
        PLAN.detection_runtime_options(wildcards.model, get_inference_threads())[1]
    )


def get_drift_options(wildcards):
    return PLAN.drift_options(wildcards.model)


def get_legacy_options(wildcards):
    return PLAN.legacy_options(wildcards.model)


def get_checkpoint_interval():
    """How often detection saves its progress: it changes no result, so no rerun either."""
    return Untracked(config["accuracy"]["checkpoint_every"])


def get_detection_shards(wildcards):
    return PLAN.detection_shards(wildcards.model)


def get_report_dir(wildcards, output):
    return os.path.dirname(output.summary)


def get_plot_outputs(wildcards, output):
    """The declared plots, as NAME=PATH; the report draws each one it is given."""
    return keyed(
        {name: path for name, path in output.items() if name not in ("summary", "html")}
    )


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
