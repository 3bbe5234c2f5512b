"""What the workflow runs, as pure functions of the checked config: the registry's model lists,
each stage's command-line flags, its log and benchmark files, and the report's inputs.

rules/common.smk wraps these in get_*(wildcards) input functions; tests call them directly.
"""

import json
import re
import shlex

from detbench.detection_graph import Interface
from detbench.job_runtime import runtime_arguments
from detbench.loadgen_driver import scenario_knobs
from detbench.performance import parts_arguments
from detbench.registry import (
    engine_peer,
    graph_model,
    ir_model,
    model_runtime,
    models_run_here,
    on_tensorflow,
    own_graph,
    reference_model,
)

DOWNLOADS = "resources/downloads"
COCO_IMAGES = "resources/coco/val2017"
COCO_ANNOTATIONS = "resources/coco/annotations/instances_val2017.json"
TFRECORD = "resources/coco_tfrecord"
REPORT = "results/report/summary.md"

# Every stage with its log and benchmark file, and the wildcards that name one of its jobs ("":
# one job). The rules take their `log:` and `benchmark:` from here and the cost table reads the
# same files, so it cannot fall behind the rules (tests/test_plan.py compares the two).
STAGE_JOBS = {
    "download_file": "{filename}",
    "extract_coco_images": "",
    "extract_coco_annotations": "",
    "write_empty_annotations": "",
    "checkout_tensorflow_models": "",
    "convert_coco_to_tfrecord": "",
    "prepare_frozen_graph": "{model}",
    "quantize_graph": "{model}",
    "convert_to_openvino": "{model}",
    "quantize_openvino": "{model}",
    "benchmark_graph": "{model}",
    "benchmark_repeat": "{model}-{repeat}",
    "benchmark_instances": "{model}-{instances}",
    "run_loadgen": "{model}-{scenario}",
    "loadgen_accuracy": "{model}",
    "detect_objects": "{model}-{shard}-of-{shards}",
    "evaluate_accuracy": "{model}",
    "compare_with_reference": "{model}",
    "measure_layer_drift": "{model}",
    "draw_gallery": "",
    "make_report": "",
}

# The data's preparation: one job each, before any model's.
DATA_STAGES = (
    "extract_coco_images",
    "extract_coco_annotations",
    "write_empty_annotations",
    "checkout_tensorflow_models",
    "convert_coco_to_tfrecord",
)

# Runtime flags that only say how many threads run: a detection's result does not depend on them.
THREAD_FLAGS = ("--intra-op-threads=", "--inter-op-threads=", "--omp-num-threads=")


def stage_file(folder, stage, suffix):
    job = STAGE_JOBS[stage]
    return f"{folder}/{stage}/{job}{suffix}" if job else f"{folder}/{stage}{suffix}"


def log_file(stage):
    return stage_file("logs", stage, ".log")


def benchmark_file(stage):
    """Snakemake's benchmark file of a stage's job: its wall time and peak memory."""
    return stage_file("benchmarks", stage, ".tsv")


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, if there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def downloaded(name):
    return f"{DOWNLOADS}/{name}"


def graph_path(name):
    return f"resources/models/{name}/frozen_inference_graph.pb"


def openvino_path(name, file="model.xml"):
    """A file of the OpenVINO IR named after `name` (registry.ir_model)."""
    return f"resources/openvino/{name}/{file}"


def keyed(paths):
    """KEY=PATH arguments of one kind of input, quoted for the shell."""
    return " ".join(shlex.quote(f"{key}={path}") for key, path in paths.items())


class Plan:
    """The jobs and flags of one checked config. `native_bf16`: whether this CPU has BF16
    instructions (a BF16 model it would only emulate is left out of the default target)."""

    def __init__(self, config, native_bf16):
        self.config = config
        self.models = config["models"]
        self.default_models, self.left_out = models_run_here(config, native_bf16)
        # Models whose graph file is their own: downloaded, or quantized here from another.
        self.downloaded_models = [name for name, model in self.models.items() if "download" in model]
        self.quantized_models = [
            name for name, model in self.models.items() if "quantize" in model and on_tensorflow(model)
        ]
        # OpenVINO: the TensorFlow graphs converted to IR, and the IRs NNCF quantizes.
        self.openvino_models = [name for name, model in self.models.items() if not on_tensorflow(model)]
        self.openvino_quantized = [name for name in self.openvino_models if "quantize" in self.models[name]]
        self.openvino_converted = sorted(
            {
                self.models[name].get("graph_of") or self.models[name]["quantize"]["from"]
                for name in self.openvino_models
            }
        )
        self.graph_models = [name for name, model in self.models.items() if own_graph(model)]
        # Models compared with a reference (agreement, layer drift): where they lose accuracy.
        self.compared_models = [name for name in self.default_models if self.reference(name) in self.default_models]
        # Layer drift reads TensorFlow's activations: TensorFlow models only.
        self.drift_models = [name for name in self.compared_models if on_tensorflow(self.models[name])]
        chosen = config["loadgen"]["models"]
        self.loadgen_models = [name for name in self.default_models if chosen is None or name in chosen]

    # Downloads
    def download_identity(self, filename):
        """What a download is: its checksums and size where configured (the same file from
        any mirror), else its URL. A change reruns the download and all that depends on it."""
        entry = self.config["downloads"][filename]
        checked = {key: str(entry[key]).lower() for key in ("md5", "sha256", "size") if key in entry}
        if "md5" in checked or "sha256" in checked:
            return checked
        return {"url": entry["url"], **checked}

    def download_options(self, filename):
        """Checksum, size and retry options of download.py for one configured file."""
        entry = self.config["downloads"][filename]
        settings = self.config["download_settings"]
        options = [
            f"--retries {settings['retries']}",
            f"--backoff {settings['backoff_seconds']}",
            f"--connect-timeout {settings['connect_timeout']}",
            f"--read-timeout {settings['read_timeout']}",
        ]
        options += [f"--{key} {shlex.quote(str(entry[key]))}" for key in ("md5", "sha256", "size") if key in entry]
        return " ".join(options)

    def download_targets(self):
        return [downloaded(name) for name in self.config["downloads"]]

    # Graphs
    def architecture(self, name):
        return self.config["architectures"][self.models[name]["architecture"]]

    def graph(self, name):
        """The file a model runs: its own graph, or that of the model its graph_of names; for
        an openvino model, its IR."""
        if not on_tensorflow(self.models[name]):
            return openvino_path(ir_model(self.models, name))
        return graph_path(graph_model(self.models, name))

    def engine_peer(self, name):
        return engine_peer(self.models, name)

    def reference(self, name):
        return reference_model(self.models, name)

    def reference_graph(self, name):
        return self.graph(self.reference(name))

    def graph_source(self, name):
        """The downloaded graph, and the preprocessing graph joined in front of it if any."""
        model = self.models[name]
        sources = {"graph": downloaded(model["download"])}
        if "preprocess" in model:
            sources["preprocess"] = downloaded(model["preprocess"]["download"])
        return sources

    def preprocess_options(self, name, preprocess_graph=None):
        """Where the preprocessing graph's output joins the graph (models.<name>.preprocess)."""
        model = self.models[name]
        if "preprocess" not in model:
            return ""
        return (
            f"--preprocess-graph {shlex.quote(preprocess_graph)}"
            f" --preprocess-output {model['preprocess']['output']}"
            f" --detector-input {model['input']['tensor']}"
        )

    def graph_member_option(self, name):
        member = self.models[name].get("member")
        return f"--member {shlex.quote(member)}" if member else ""

    def interface_options(self, name):
        """The graph's input and output tensors (models.<name>.input.tensor, .outputs)."""
        return " ".join(Interface.of_model(self.models[name]).arguments())

    def graph_targets(self):
        return [graph_path(name) for name in self.graph_models]

    # Quantization
    def calibration_dir(self, name):
        """The model's own calibration folder, or val2017 (the evaluation set)."""
        return self.models[name]["quantize"]["calibration_dir"] or COCO_IMAGES

    def quantize_inputs(self, name):
        """The graph and calibration images; in accuracy-aware mode, the COCO AP inputs too."""
        settings = self.models[name]["quantize"]
        inputs = {"graph": graph_path(settings["from"]), "images": self.calibration_dir(name)}
        if settings["accuracy_tolerance"] is not None:
            inputs.update(records=TFRECORD, annotations=COCO_ANNOTATIONS)
        return inputs

    def quantize_options(self, name):
        settings = self.models[name]["quantize"]
        options = [
            f"--calibration-images {settings['calibration_images']}",
            f"--seed {settings['seed']}",
            f"--weight-granularity {settings['weight_granularity']}",
            *(f"--keep-fp32 {shlex.quote(pattern)}" for pattern in settings["keep_fp32"]),
        ]
        if not settings["calibration_dir"]:
            options.append("--from-evaluation-set")
        if settings["accuracy_tolerance"] is not None:
            options += [
                f"--accuracy-tolerance {settings['accuracy_tolerance']}",
                f"--tuning-images {settings['tuning_images']}",
                f"--max-trials {settings['max_trials']}",
                f"--fallback-order {settings['fallback_order']}",
                f"--on-tolerance-miss {settings['on_tolerance_miss']}",
                self.units_options(name),
            ]
        return " ".join(options)

    def openvino_quantize_inputs(self, name):
        """The FP32 IR NNCF quantizes, and Neural Compressor's calibration folder."""
        return {
            "model": openvino_path(self.models[name]["quantize"]["from"]),
            "images": self.calibration_dir(name),
        }

    def openvino_quantize_options(self, name):
        """NNCF's calibration, on the threads the model runs with (0: the job's)."""
        settings = self.models[name]["quantize"]
        threads = self.runtime_settings(name)["intra_op_threads"]
        return f"--calibration-images {settings['calibration_images']} --seed {settings['seed']} --threads {threads}"

    @staticmethod
    def tuning_options(records=None, annotations=None):
        """Accuracy-aware tuning's COCO AP inputs, where quantize_inputs has them."""
        if records is None:
            return ""
        return f"--tuning-records {shlex.quote(records)} --tuning-annotations {shlex.quote(annotations)}"

    def units_options(self, name):
        drift = self.architecture(name)["layer_drift"]
        return f"--units {shlex.quote(drift['units'])} --heads {shlex.quote(json.dumps(drift['heads']))}"

    # Inference
    def inference_threads(self, cores):
        """Inference jobs take the whole machine (or the configured node size): nothing
        should share the cores a benchmark is timed on."""
        return self.config["inference_threads"] or cores

    def instance_layouts(self):
        """benchmark.instances layouts of several instances (1 is benchmark_graph's own job)."""
        return [count for count in self.config["benchmark"]["instances"] if count > 1]

    def inference_mem_mb(self, name):
        """One inference job's memory with this model's graph (models.<name>.mem_mb)."""
        return self.models[name]["mem_mb"]

    def detection_instances(self):
        """Pinned copies of the graph sharing a detection job's cores (its node on a cluster)."""
        return self.config["accuracy"]["instances_per_node"]

    def layer_drift_mem_mb(self, name):
        """The reference's graph and the model's, loaded together."""
        return self.inference_mem_mb(self.reference(name)) + self.inference_mem_mb(name)

    def repeats(self):
        """The benchmark's rounds after the first (benchmark_graph's own job is round 1)."""
        return list(range(2, self.config["benchmark"]["repeats"] + 1))

    def repeat_priority(self, repeat):
        """Snakemake runs ready jobs of higher priority first: every model's round r before any
        round r + 1, so that a slow spell hits every model alike (A B C A B C)."""
        return self.config["benchmark"]["repeats"] - repeat + 1

    def graph_priority(self):
        """Graphs made here (quantized) come before any round, so that no model joins late."""
        return self.config["benchmark"]["repeats"] + 1

    def benchmark_options(self, name):
        settings = self.config["benchmark"]
        options = [
            f"--number-of-steps {settings['number_of_steps']}",
            f"--warmup-steps {settings['warmup_steps']}",
            f"--batch-size {settings['batch_size']}",
            f"--on-bad-image {settings['on_bad_image']}",
            f"--profile-steps {settings['profile_steps']}",
            f"--max-steal {settings['noise']['max_steal']}",
            f"--max-other-cpu {settings['noise']['max_other_cpu']}",
            f"--max-step-cv {settings['noise']['max_step_cv']}",
        ]
        image_size = self.models[name]["input"]["image_size"]
        if image_size:
            options.append(f"--image-size {image_size[0]}x{image_size[1]}")
        parts = self.architecture(name)["parts"]
        return " ".join(options + [shlex.quote(flag) for flag in parts_arguments(parts)])

    def loadgen_options(self, scenario):
        """The loadgen knobs a scenario's job uses ("accuracy": the accuracy mode's) and the
        noise limits, as run_loadgen.py takes them: another scenario's knob reruns nothing."""
        settings = json.dumps(scenario_knobs(self.config["loadgen"], scenario), sort_keys=True)
        noise = json.dumps(self.config["benchmark"]["noise"], sort_keys=True)
        return f"--settings {shlex.quote(settings)} --noise {shlex.quote(noise)}"

    def loadgen_results(self):
        """{MODEL:SCENARIO: path} of the LoadGen scenarios of every model run under it."""
        return {
            f"{name}:{scenario}": f"results/loadgen/{name}/{scenario}.json"
            for name in self.loadgen_models
            for scenario in self.config["loadgen"]["scenarios"]
        }

    def loadgen_accuracy_results(self):
        if not self.config["loadgen"]["accuracy"]:
            return {}
        return {name: f"results/loadgen/{name}/accuracy.json" for name in self.loadgen_models}

    def runtime_settings(self, name):
        model = self.models[name]
        return {
            **model_runtime(self.config, name),
            "engine": model["engine"],
            "precision": model["precision"],
            "allow_emulation": model["allow_emulation"],
        }

    def runtime_options(self, name, threads):
        """The model's runtime flags (job_runtime's one builder); 0 threads: the job's."""
        return " ".join(runtime_arguments(self.runtime_settings(name), threads))

    def detection_runtime_options(self, name, threads):
        """(the flags that change what a detection job computes, its thread flags): detections
        do not depend on the thread count beyond floating-point noise, so the second part can
        go untracked and another --cores reruns no detection."""
        arguments = runtime_arguments(self.runtime_settings(name), threads)
        thread_flags = [argument for argument in arguments if argument.startswith(THREAD_FLAGS)]
        kept = [argument for argument in arguments if argument not in thread_flags]
        return " ".join(kept), " ".join(thread_flags)

    def drift_options(self, name):
        """The candidate's precision, and the units and heads of its architecture."""
        model = self.models[name]
        options = [f"--candidate-precision {model['precision']}", self.units_options(name)]
        if model["allow_emulation"]:
            options.append("--allow-emulation")
        return " ".join(options)

    def legacy_options(self, name):
        """Legacy metrics on the first N images only, where the model's published ones were."""
        count = self.models[name]["legacy_images"]
        return f"--legacy-images {count}" if count else ""

    def detection_shards(self, name):
        shards = self.config["accuracy"]["shards"]
        return [f"results/accuracy/{name}/detections-{shard}-of-{shards}.json" for shard in range(shards)]

    # The report's inputs, each {key: path}: what make_report is given as KEY=PATH.
    def report_inputs(self):
        return {
            "benchmark": {name: f"results/benchmark/{name}.json" for name in self.default_models},
            "repeat": {
                f"{name}:{repeat}": f"results/benchmark/repeats/{name}-{repeat}.json"
                for name in self.default_models
                for repeat in self.repeats()
            },
            "instances": {
                f"{name}:{count}": f"results/benchmark/instances/{name}-{count}.json"
                for name in self.default_models
                for count in self.instance_layouts()
            },
            "loadgen": self.loadgen_results(),
            "loadgen-accuracy": self.loadgen_accuracy_results(),
            "accuracy": {name: f"results/accuracy/{name}.json" for name in self.default_models},
            "agreement": {name: f"results/diagnostics/{name}_agreement.json" for name in self.compared_models},
            "layer-drift": {name: f"results/diagnostics/{name}_layer_drift.json" for name in self.drift_models},
            "quantization": {
                name: f"resources/models/{name}/quantization.json"
                for name in self.quantized_models
                if name in self.default_models
            },
            "cost": self.stage_costs(),
        }

    def cost_jobs(self):
        """Every job before the report, as (stage, cost key, wildcards), in the order they run."""
        shards = self.config["accuracy"]["shards"]
        jobs = [("download_file", f"all:{name}", {"filename": name}) for name in self.config["downloads"]]
        jobs += [(stage, "all", {}) for stage in DATA_STAGES]
        jobs += [("prepare_frozen_graph", name, {"model": name}) for name in self.downloaded_models]
        jobs += [("quantize_graph", name, {"model": name}) for name in self.quantized_models]
        jobs += [("convert_to_openvino", name, {"model": name}) for name in self.openvino_converted]
        jobs += [("quantize_openvino", name, {"model": name}) for name in self.openvino_quantized]
        for name in self.default_models:
            jobs.append(("benchmark_graph", name, {"model": name}))
            jobs += [("benchmark_repeat", f"{name}:{r}", {"model": name, "repeat": r}) for r in self.repeats()]
            for count in self.instance_layouts():
                jobs.append(("benchmark_instances", f"{name}:{count}", {"model": name, "instances": count}))
            if name in self.loadgen_models:
                for scenario in self.config["loadgen"]["scenarios"]:
                    jobs.append(("run_loadgen", f"{name}:{scenario}", {"model": name, "scenario": scenario}))
                if self.config["loadgen"]["accuracy"]:
                    jobs.append(("loadgen_accuracy", name, {"model": name}))
            for shard in range(shards):
                jobs.append(("detect_objects", f"{name}:{shard}", {"model": name, "shard": shard, "shards": shards}))
            jobs.append(("evaluate_accuracy", name, {"model": name}))
        jobs += [("compare_with_reference", name, {"model": name}) for name in self.compared_models]
        jobs += [("measure_layer_drift", name, {"model": name}) for name in self.drift_models]
        jobs.append(("draw_gallery", "all", {}))
        return jobs

    def stage_costs(self):
        """Every job's benchmark file as STAGE:KEY: the report's cost table."""
        return {
            f"{stage}:{key}": benchmark_file(stage).format(**wildcards) for stage, key, wildcards in self.cost_jobs()
        }

    def report_models(self):
        """What the report needs of the registry: architecture, precision, reference, published."""
        return {
            name: {
                "architecture": self.models[name]["architecture"],
                "precision": self.models[name]["precision"],
                "engine": self.models[name]["engine"],
                "reference": self.reference(name),
                # An openvino model's TensorFlow model of the same precision: the engines' ratio.
                "engine_peer": self.engine_peer(name),
                "published": self.models[name]["published"],
            }
            for name in self.default_models
        }

    def report_arguments(self):
        inputs = [f"--{kind} {keyed(paths)}" for kind, paths in self.report_inputs().items() if paths]
        gate = json.dumps(self.config["accuracy_gate"], sort_keys=True)
        return " ".join([*inputs, f"--accuracy-gate {shlex.quote(gate)}"])

    def gallery_detections(self):
        """Each model's detections for the gallery's columns: architecture by architecture,
        in the registry's order, each reference first."""
        columns = {self.models[name]["architecture"]: [] for name in self.default_models}
        for name in self.default_models:
            column = columns[self.models[name]["architecture"]]
            column.insert(0 if self.reference(name) is None else len(column), name)
        return {name: f"results/accuracy/{name}_detections.json" for names in columns.values() for name in names}

    def gallery_options(self):
        settings = self.config["diagnostics"]
        return (
            f"--detections {keyed(self.gallery_detections())}"
            f" --count {settings['gallery_images']} --min-score {settings['gallery_min_score']}"
        )

    def final_outputs(self):
        return [TFRECORD, *self.graph_targets(), REPORT]
