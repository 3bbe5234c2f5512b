"""The workflow's config, read, completed and checked before any job is planned, and the
model registry's questions (which graph a model runs, what it is compared with, how it runs).

Every problem is one line naming the config key (or the file and line of a YAML
mistake) and what is wrong, in words; all of them are reported at once. Defaults live
in config/schema.yaml (`default:`) and are filled in here, before the check. The
Snakefile and rules/common.smk call these; tests call them directly.
"""

import copy
import re
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
# libyaml's loader where PyYAML has it: every snakemake start reads the schema and the config.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping of keys",
    "null": "null",
}


def load_schema(path=SCHEMA_PATH):
    return yaml.load(Path(path).read_text(), Loader=YAML_LOADER)


def read_config_file(path):
    """The config file as a mapping; (None, problem) when it is empty, not YAML or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, f"{path}: cannot be read ({getattr(error, 'strerror', None) or error})"
    try:
        config = yaml.load(text, Loader=YAML_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or "not valid YAML"
        context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and start:
            problem += f" ({context} at line {start.line + 1})"
        return None, f"{where}: {problem}: fix the YAML there (indent with spaces, close brackets and quotes)"
    if config is None:
        return None, f"{path} is empty: start from the project's config/config.yaml"
    if not isinstance(config, dict):
        return None, f"{path}: the top level must be keys (downloads:, models:, ...), not {type(config).__name__}"
    return config, None


def schema_layers(schema, root):
    """A schema and the definitions it refers to ($ref), nearest first."""
    layers = []
    while schema is not None:
        layers.append(schema)
        reference = schema.get("$ref")
        schema = root["definitions"][reference.rsplit("/", 1)[1]] if reference else None
    return layers


def merged_schema(schema, root):
    """One schema of a schema and its $ref layers, each property's keywords merged, nearest winning."""
    merged = {}
    for layer in reversed(schema_layers(schema, root)):
        for key, item in layer.items():
            if key == "properties":
                properties = merged.setdefault("properties", {})
                for name, property_schema in item.items():
                    properties[name] = {**properties.get(name, {}), **property_schema}
            else:
                merged[key] = item
    return merged


def apply_defaults(value, schema, root):
    """Fill in the schema's `default:` of every missing key, at every level, as Snakemake's
    validate(set_default=True) does, and beneath $ref too: a section's own defaults win over
    those of the definition it refers to (runtime.int8's kmp_blocktime over the common one)."""
    if not isinstance(value, dict):
        return value
    schema = merged_schema(schema, root)
    properties, other = schema.get("properties", {}), schema.get("additionalProperties")
    for key, item_schema in properties.items():
        if key not in value and "default" in item_schema:
            value[key] = copy.deepcopy(item_schema["default"])
    for key, item in value.items():
        item_schema = properties.get(key, other if isinstance(other, dict) else None)
        if item_schema:
            apply_defaults(item, item_schema, root)
    return value


def schema_defaults(key, schema=None):
    """The defaults of one section, by its dotted key ("runtime.fp32", "benchmark", "models.*"
    for any model): what a stage script run by hand takes for a flag it is not given, so that
    the schema stays the one place defaults are written."""
    schema = schema or load_schema()
    section = schema
    for part in key.split("."):
        merged = merged_schema(section, schema)
        section = merged["additionalProperties"] if part == "*" else merged["properties"][part]
    return apply_defaults({}, section, schema)


def typed_command_line_values(value, schema, root):
    """Snakemake's --config reads a nested value's scalars as strings
    (`accuracy='{shards: 8}'` gives '8'): give them the types the schema asks for, as a
    config file would."""
    schema = merged_schema(schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        other = schema.get("additionalProperties")
        for key, item in value.items():
            item_schema = properties.get(key, other if isinstance(other, dict) else {})
            value[key] = typed_command_line_values(item, item_schema, root)
    elif isinstance(value, list):
        value[:] = [typed_command_line_values(item, schema.get("items", {}), root) for item in value]
    elif isinstance(value, str):
        kinds = schema.get("type", [])
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "integer" in kinds and re.fullmatch(r"-?\d+", value):
            return int(value)
        if "number" in kinds and re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?", value):
            return float(value)
        if "boolean" in kinds and value.lower() in ("true", "false"):
            return value.lower() == "true"
    return value


def describe_schema_error(error):
    """What a schema error means, in words; the schema's `description` says what a
    pattern stands for, so no regular expression reaches the user."""
    value, rule, schema = error.instance, error.validator_value, error.schema
    what = schema.get("description")
    if error.validator in ("pattern", "not", "format"):
        return f"{value!r} is not {what}" if what else f"{value!r} is not allowed here"
    if error.validator == "type":
        kinds = rule if isinstance(rule, list) else [rule]
        return f"{value!r} is not {' or '.join(TYPE_WORDS.get(kind, kind) for kind in kinds)}"
    if error.validator == "minimum":
        return f"{value} is too small: the least allowed is {rule}"
    if error.validator == "exclusiveMinimum":
        return f"{value} is too small: it must be more than {rule}"
    if error.validator == "maximum":
        return f"{value} is too large: the most allowed is {rule}"
    if error.validator == "exclusiveMaximum":
        return f"{value} is too large: it must be less than {rule}"
    if error.validator == "enum":
        return f"{value!r} is not one of {', '.join(map(str, rule))}"
    if error.validator == "minLength":
        return "must not be empty"
    if error.validator in ("minItems", "maxItems"):
        if schema.get("minItems") == schema.get("maxItems"):
            return f"needs exactly {rule} items, has {len(value)}"
        return f"needs {'at least' if error.validator == 'minItems' else 'at most'} {rule} items, has {len(value)}"
    if error.validator == "uniqueItems":
        return f"{value} repeats an item"
    if error.validator == "minProperties":
        return "needs at least one entry"
    if error.validator == "oneOf":
        choices = [" + ".join(branch.get("required", [])) for branch in rule]
        return f"needs exactly one of: {', '.join(choices)}" if all(choices) else "matches none or several of its forms"
    return error.message


# Keys of earlier versions of this config, and where their setting lives now.
MOVED_KEYS = {
    "benchmark.image_size": "moved to models.<name>.input.image_size",
    "published_reference": "moved to models.<name>.published",
}


# Sections a config of an earlier version lacks, and where to find them.
MISSING_HINTS = {
    "architectures": ": copy the architectures section of the project's config/config.yaml (each architecture's "
    "model parts and layer-drift units)",
}


def schema_problems(config, schema):
    """Every way `config` breaks `schema`, one line each, naming the key."""
    problems = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(config):
        key = ".".join(str(part) for part in error.absolute_path)
        prefix = f"{key}." if key else ""
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            for name in sorted(set(error.instance) - set(known)):
                moved = MOVED_KEYS.get(f"{prefix}{name}")
                if moved:
                    problems.append(f"config key {prefix}{name}: {moved}")
                elif key == "runtime":
                    problems.append(f"config key runtime.{name}: runtime is per precision ({', '.join(known)}); "
                                    f"a model's own settings go in models.<name>.runtime")  # fmt: skip
                else:
                    problems.append(f"config key {prefix}{name}: unknown key (known: {', '.join(known)})")
        elif error.validator == "required":
            for name in error.validator_value:
                if name not in error.instance:
                    problems.append(f"config key {prefix}{name}: missing{MISSING_HINTS.get(f'{prefix}{name}', '')}")
        elif error.validator == "propertyNames":
            problems.append(f"config key {prefix}{error.instance}: {describe_schema_error(error)}")
        else:
            problems.append(f"config key {key or '(top level)'}: {describe_schema_error(error)}")
    return sorted(problems)


def own_graph(model):
    """Whether a model's graph is its own (downloaded or quantized here), not another model's."""
    return "download" in model or "quantize" in model


def graph_model(models, name):
    """The model whose graph file `name` runs: itself, or the one its graph_of names."""
    return models[name].get("graph_of", name)


def fp32_models(models, architecture):
    """The fp32 models of an architecture: what its other models are compared with."""
    return [name for name, entry in models.items() if entry["precision"] == "fp32" and entry["architecture"] == architecture]


def reference_model(models, name):
    """The model `name` is compared with: its `reference`, else the one fp32 model of its
    architecture (none for an fp32 model itself, or where there is none or several)."""
    model = models[name]
    if "reference" in model:
        return model["reference"]
    candidates = fp32_models(models, model["architecture"])
    if model["precision"] == "fp32" or len(candidates) != 1:
        return None
    return candidates[0]


def models_run_here(config, native_bf16):
    """(models of the default target, one line for each left out): BF16 runs by default only
    on a CPU with BF16 instructions (`native_bf16`); elsewhere oneDNN would emulate it slowly,
    unless the model allows that (its figures are then marked emulated)."""
    kept, notes = [], []
    for name, model in config["models"].items():
        if model["precision"] != "bf16" or model["allow_emulation"] or native_bf16:
            kept.append(name)
        else:
            notes.append(f"note: model {name} left out: this CPU has neither avx512_bf16 nor amx_bf16, so oneDNN would "
                         f"emulate BF16 slowly; models.{name}.allow_emulation: true runs it anyway, marked emulated")  # fmt: skip
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
        **{f"models.{name}.preprocess.download": model["preprocess"]["download"]
           for name, model in models.items() if "preprocess" in model},
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
        problems.append(f"{key}.architecture: {model['architecture']!r} has no entry under architectures "
                        f"({', '.join(config['architectures'])}): give its parts and layer_drift units there")  # fmt: skip
    if "preprocess" in model and "download" not in model:
        problems.append(f"{key}.preprocess: only a downloaded graph takes a preprocessing graph; a quantized or "
                        "graph_of model runs its source's graph, already joined")  # fmt: skip
    settings = model.get("quantize")
    if settings is not None:
        if settings["from"] not in downloaded:
            problems.append(f"{key}.quantize.from: {settings['from']!r} is not a downloaded model ({', '.join(downloaded)})")
        if model["precision"] != "int8":
            problems.append(f"{key}.precision: a model quantized here is int8, not {model['precision']}")
        folder = settings.get("calibration_dir")
        if folder and not (base / folder).is_dir():
            problems.append(f"{key}.quantize.calibration_dir: no such folder {folder} (a folder of JPEGs; null draws them from val2017)")  # fmt: skip
    source = model.get("graph_of")
    if source is not None:
        if source not in with_graph:
            problems.append(f"{key}.graph_of: {source!r} is not a model with a graph of its own ({', '.join(with_graph)})")
        elif (wanted := "fp32" if model["precision"] == "bf16" else model["precision"]) != models[source]["precision"]:
            problems.append(f"{key}.graph_of: {source!r} runs an {models[source]['precision']} graph; a "
                            f"{model['precision']} model runs an {wanted} one")  # fmt: skip
    reference = model.get("reference")
    if reference is not None:
        if reference not in models or reference == name:
            problems.append(f"{key}.reference: {reference!r} is not another model ({', '.join(sorted(set(models) - {name}))})")
        elif models[reference]["architecture"] != model["architecture"]:
            problems.append(f"{key}.reference: {reference!r} is an {models[reference]['architecture']} model, not "
                            f"{model['architecture']}: compare models of one architecture")  # fmt: skip
    elif model["precision"] != "fp32":
        fp32 = fp32_models(models, model["architecture"])
        if len(fp32) > 1:
            problems.append(f"{key}.reference: {model['architecture']} has several fp32 models ({', '.join(fp32)}): "
                            "name the one to compare with")  # fmt: skip
    if config["benchmark"]["batch_size"] > 1 and model["input"]["image_size"] is None:
        problems.append(f"{key}.input.image_size: missing: benchmark.batch_size {config['benchmark']['batch_size']} "
                        "resizes every image to it ([height, width])")  # fmt: skip
    if schema is not None:
        runtime_schema = {**schema["definitions"]["runtime_settings"], "definitions": schema["definitions"]}
        for problem in schema_problems(model_runtime(config, name), runtime_schema):
            problems.append(problem.replace("config key ", f"{key}.runtime.", 1))
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


def stop_if(problems):
    """Print the problems, one line each, and exit 1: no trace lines follow (Snakemake prints
    a WorkflowError's file and line, which are ours, not the user's)."""
    if problems:
        print("invalid config:\n" + "\n".join(problems), file=sys.stderr)
        sys.exit(1)


def check_config_file(path):
    """Stop on a config file Snakemake could not read, naming it and the line (Snakemake's
    own message names neither); a missing file is left to Snakemake."""
    if Path(path).exists():
        problem = read_config_file(path)[1]
        stop_if([problem] if problem else [])
