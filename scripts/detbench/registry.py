"""The model registry's rules: which graph a model runs, what it is compared with, how it
runs, and the relations between entries that the schema cannot check.

Every problem is one line naming the config key and what to do. rules/common.smk (through
plan.py) and the stage scripts call these; tests call them directly.
"""

import copy
import re
from pathlib import Path

from detbench.config_schema import apply_defaults, schema_defaults, schema_problems, typed_command_line_values

# Neural Compressor's quantize keys that NNCF (an openvino model's quantize) does not take.
TENSORFLOW_ONLY_QUANTIZE_KEYS = (
    "weight_granularity",
    "keep_fp32",
    "accuracy_tolerance",
    "tuning_images",
    "max_trials",
    "fallback_order",
    "on_tolerance_miss",
)


def on_tensorflow(model):
    return model.get("engine", "tensorflow") == "tensorflow"


def own_graph(model):
    """Whether a model's TensorFlow graph is its own (downloaded or quantized here), not
    another model's; an openvino model has none (its IR is converted or quantized here)."""
    return on_tensorflow(model) and ("download" in model or "quantize" in model)


def graph_model(models, name):
    """The model whose graph file `name` runs: itself, or the one its graph_of names."""
    return models[name].get("graph_of", name)


def ir_model(models, name):
    """An openvino model's IR is named after the model it comes from: itself, quantized here
    by NNCF, or the TensorFlow model whose graph it converts (graph_of)."""
    return name if "quantize" in models[name] else models[name]["graph_of"]


def fp32_models(models, architecture):
    """The TensorFlow fp32 models of an architecture: what its other models are compared with."""
    return [
        name
        for name, entry in models.items()
        if entry["precision"] == "fp32" and entry["architecture"] == architecture and on_tensorflow(entry)
    ]


def reference_model(models, name):
    """The model `name` is compared with: its `reference`, else the one TensorFlow fp32 model
    of its architecture (none for that model itself, or where there is none or several)."""
    model = models[name]
    if "reference" in model:
        return model["reference"]
    candidates = fp32_models(models, model["architecture"])
    if len(candidates) != 1 or candidates[0] == name or (model["precision"] == "fp32" and on_tensorflow(model)):
        return None
    return candidates[0]


def engine_peer(models, name):
    """What an openvino model's speed is compared with on TensorFlow: the model of its precision
    made from the same graph (fp32: that graph's model; bf16: its TensorFlow bf16; int8: the
    graph Neural Compressor quantized from the same model). None for a TensorFlow model."""
    model = models[name]
    if on_tensorflow(model):
        return None
    source = model.get("graph_of") or model["quantize"]["from"]
    if model["precision"] == "fp32":
        return source
    peers = [
        other
        for other, entry in models.items()
        if on_tensorflow(entry)
        and entry["precision"] == model["precision"]
        and source in (entry.get("graph_of"), entry.get("quantize", {}).get("from"))
    ]
    return peers[0] if len(peers) == 1 else None


def models_run_here(config, native_bf16):
    """(models of the default target, one line for each left out): BF16 runs by default only
    on a CPU with BF16 instructions (`native_bf16`); elsewhere oneDNN would emulate it slowly,
    unless the model allows that (its figures are then marked emulated)."""
    kept, notes = [], []
    for name, model in config["models"].items():
        if model["precision"] != "bf16" or model["allow_emulation"] or native_bf16:
            kept.append(name)
        else:
            notes.append(
                f"note: model {name} left out: this CPU has neither avx512_bf16 nor amx_bf16, so oneDNN would "
                f"emulate BF16 slowly; models.{name}.allow_emulation: true runs it anyway, marked emulated"
            )
    return kept, notes


def model_runtime(config, name):
    """How a model's jobs run: runtime.<its precision>, with the model's own keys instead."""
    model = config["models"][name]
    return {**config["runtime"][model["precision"]], **model["runtime"]}


def relation_problems(config, base=Path("."), schema=None):
    """What the schema cannot see: keys that name other entries, local files that are
    missing, and values that only make sense together. `base`: the working directory."""
    problems = []
    models = config["models"]
    downloaded = [name for name, model in models.items() if "download" in model]
    references = {
        "coco.images_archive": config["coco"]["images_archive"],
        "coco.annotations_archive": config["coco"]["annotations_archive"],
        **{f"models.{name}.download": models[name]["download"] for name in downloaded},
        **{
            f"models.{name}.preprocess.download": model["preprocess"]["download"]
            for name, model in models.items()
            if "preprocess" in model
        },
    }
    for key, name in references.items():
        if name not in config["downloads"]:
            problems.append(
                f"config key {key}: {name!r} is not an entry of downloads ({', '.join(config['downloads'])})"
            )
    for name, model in models.items():
        problems += model_problems(config, name, model, downloaded, base, schema)
    for name, architecture in config["architectures"].items():
        try:
            re.compile(architecture["layer_drift"]["units"])
        except re.error as error:
            problems.append(f"config key architectures.{name}.layer_drift.units: not a regular expression ({error})")
    for name, entry in config["downloads"].items():
        url = entry["url"]
        if not url.startswith(("http://", "https://")):
            path = base / url.removeprefix("file://")
            if path.is_dir():
                problems.append(f"config key downloads.{name}.url: {path} is a folder: give the file inside it")
            elif not path.is_file():
                problems.append(
                    f"config key downloads.{name}.url: no such file {path} (a URL is http://, https:// or file://)"
                )
    for name in config["loadgen"]["models"] or []:
        if name not in models:
            problems.append(f"config key loadgen.models: {name!r} is not a model ({', '.join(models)})")
    benchmark = config["benchmark"]
    if benchmark["warmup_steps"] >= benchmark["number_of_steps"]:
        problems.append(
            f"config key benchmark.warmup_steps: {benchmark['warmup_steps']} warm-up steps leave none of "
            f"benchmark.number_of_steps ({benchmark['number_of_steps']}) to time: make it smaller"
        )
    return problems


def model_problems(config, name, model, downloaded, base, schema):
    """One registry entry against the others: where its graph comes from, what it is
    compared with, its runtime once merged with its precision's."""
    models, key, problems = config["models"], f"config key models.{name}", []
    with_graph = [other for other, entry in models.items() if own_graph(entry)]
    if model["architecture"] not in config["architectures"]:
        problems.append(
            f"{key}.architecture: {model['architecture']!r} has no entry under architectures "
            f"({', '.join(config['architectures'])}): give its parts and layer_drift units there"
        )
    if "preprocess" in model and "download" not in model:
        problems.append(
            f"{key}.preprocess: only a downloaded graph takes a preprocessing graph; a quantized or "
            "graph_of model runs its source's graph, already joined"
        )
    problems += engine_problems(config, key, model)
    settings = model.get("quantize")
    if settings is not None:
        if settings["from"] not in downloaded:
            problems.append(
                f"{key}.quantize.from: {settings['from']!r} is not a downloaded model ({', '.join(downloaded)})"
            )
        if model["precision"] != "int8":
            problems.append(f"{key}.precision: a model quantized here is int8, not {model['precision']}")
        folder = settings.get("calibration_dir")
        if folder and not (base / folder).is_dir():
            problems.append(
                f"{key}.quantize.calibration_dir: no such folder {folder} "
                "(a folder of JPEGs; null draws them from val2017)"
            )
    source = model.get("graph_of")
    if source is not None:
        if source not in with_graph:
            problems.append(
                f"{key}.graph_of: {source!r} is not a model with a graph of its own ({', '.join(with_graph)})"
            )
        elif (wanted := "fp32" if model["precision"] == "bf16" else model["precision"]) != models[source]["precision"]:
            problems.append(
                f"{key}.graph_of: {source!r} runs an {models[source]['precision']} graph; a "
                f"{model['precision']} model runs an {wanted} one"
            )
    reference = model.get("reference")
    if reference is not None:
        if reference not in models or reference == name:
            problems.append(
                f"{key}.reference: {reference!r} is not another model ({', '.join(sorted(set(models) - {name}))})"
            )
        elif models[reference]["architecture"] != model["architecture"]:
            problems.append(
                f"{key}.reference: {reference!r} is an {models[reference]['architecture']} model, not "
                f"{model['architecture']}: compare models of one architecture"
            )
    elif model["precision"] != "fp32":
        fp32 = fp32_models(models, model["architecture"])
        if len(fp32) > 1:
            problems.append(
                f"{key}.reference: {model['architecture']} has several fp32 models ({', '.join(fp32)}): "
                "name the one to compare with"
            )
    if config["benchmark"]["batch_size"] > 1 and model["input"]["image_size"] is None:
        problems.append(
            f"{key}.input.image_size: missing: benchmark.batch_size {config['benchmark']['batch_size']} "
            "resizes every image to it ([height, width])"
        )
    if schema is not None:
        runtime_schema = {**schema["definitions"]["runtime_settings"], "definitions": schema["definitions"]}
        for problem in schema_problems(model_runtime(config, name), runtime_schema):
            problems.append(problem.replace("config key ", f"{key}.runtime.", 1))
    return problems


def engine_problems(config, key, model):
    """An openvino model comes from a TensorFlow model's graph: converted (graph_of, fp32 or
    bf16) or quantized by NNCF (quantize, int8); Neural Compressor's keys do not apply."""
    if on_tensorflow(model):
        return []
    models, problems = config["models"], []
    if "download" in model:
        return [f"{key}.download: an openvino model is converted here: name graph_of (or quantize.from)"]
    if model["precision"] == "int8" and "quantize" not in model:
        problems.append(
            f"{key}.quantize: an openvino int8 model is quantized here by NNCF: give quantize.from, "
            "the TensorFlow fp32 model"
        )
    if model["precision"] != "int8" and "graph_of" not in model:
        problems.append(f"{key}.graph_of: name the TensorFlow model whose graph OpenVINO runs")
    source = model.get("graph_of") or model.get("quantize", {}).get("from")
    if source in models and not on_tensorflow(models[source]):
        problems.append(f"{key}: {source!r} is an openvino model; name a TensorFlow one to convert")
    settings = model.get("quantize") or {}
    defaults = schema_defaults("models.*.quantize")
    for option in TENSORFLOW_ONLY_QUANTIZE_KEYS:
        if settings.get(option, defaults[option]) != defaults[option]:
            problems.append(f"{key}.quantize.{option}: Neural Compressor's; NNCF (engine openvino) does not take it")
    return problems


def checked_config(config, schema, base=Path("."), cores=None):
    """Complete `config` in place (command-line types, schema defaults) and list its problems."""
    typed_command_line_values(config, schema, schema)
    apply_defaults(config, schema, schema)
    problems = config_problems(config, schema, base)
    if cores == 0:
        problems.append("--cores 0: no job could start; give --cores N (N >= 1) or --cores all")
    return problems


def config_problems(config, schema, base=Path(".")):
    """Schema problems first; relations are checked only on a config of the right shape.
    Defaults are filled in on a copy: `config` is left as it is."""
    config = apply_defaults(copy.deepcopy(config), schema, schema)
    return schema_problems(config, schema) or relation_problems(config, base, schema)
