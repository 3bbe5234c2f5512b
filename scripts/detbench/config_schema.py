"""The config file against config/schema.yaml: read, completed with the schema's defaults
and checked, before any job is planned (the registry's own rules are in registry.py).

Every problem is one line naming the config key (or the file and line of a YAML
mistake) and what is wrong, in words; all of them are reported at once. Defaults live
in config/schema.yaml (`default:`) and are filled in here, before the check. The
Snakefile and rules/common.smk call these; tests call them directly.
"""

import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
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
                    problems.append(
                        f"config key runtime.{name}: runtime is per precision ({', '.join(known)}); "
                        f"a model's own settings go in models.<name>.runtime"
                    )
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


def key_reference(schema=None):
    """Markdown rows (key, default, description) of every documented key, depth first, from the
    schema's own descriptions: config/README.md's key reference is this, so the schema stays
    the one place a key is described. `<name>` stands for an entry's name."""
    schema = schema or load_schema()
    rows = []

    def walk(section, prefix):
        merged = merged_schema(section, schema)
        for name, item in merged.get("properties", {}).items():
            add(f"{prefix}{name}", item)
        other = merged.get("additionalProperties")
        if isinstance(other, dict):
            add(f"{prefix}<name>", other)

    def add(key, item):
        merged = merged_schema(item, schema)
        default = f"`{json.dumps(merged['default'])}`" if "default" in merged else ""
        description = " ".join(str(merged.get("description", "")).split())
        rows.append(f"| `{key}` | {default} | {description} |")
        if merged.get("type") == "object" or "properties" in merged:
            walk(item, f"{key}.")

    walk(schema, "")
    return ["| key | default | description |", "|---|---|---|", *rows]
