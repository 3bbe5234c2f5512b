"""The plan under the rules: model lists, flags and the report's inputs as pure functions of the
config, and the rules' log and benchmark files as the cost table reads them."""

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from detbench.config_schema import load_schema, read_config_file
from detbench.loadgen_driver import scenario_knobs
from detbench.plan import STAGE_JOBS, Plan, benchmark_file, log_file
from detbench.registry import checked_config


@pytest.fixture(scope="module")
def recipe():
    """The project's own config, completed with the schema's defaults."""
    config, problem = read_config_file(REPO_ROOT / "config" / "config.yaml")
    assert problem is None
    assert checked_config(config, load_schema(), base=REPO_ROOT) == []
    return config


def changed(config, **sections):
    config = copy.deepcopy(config)
    for section, values in sections.items():
        config[section].update(values)
    return config


def test_model_lists_follow_the_registry(recipe):
    plan = Plan(recipe, native_bf16=True)
    openvino = ["openvino_fp32", "openvino_int8", "openvino_bf16"]
    assert plan.default_models == ["fp32", "int8", "int8_inc", "bf16", *openvino] and plan.left_out == []
    assert plan.downloaded_models == ["fp32", "int8"]
    assert plan.quantized_models == ["int8_inc"] and plan.openvino_quantized == ["openvino_int8"]
    assert plan.compared_models == ["int8", "int8_inc", "bf16", *openvino]
    assert plan.drift_models == ["int8", "int8_inc", "bf16"]
    assert plan.graph("bf16") == plan.graph("fp32") == "resources/models/fp32/frozen_inference_graph.pb"
    assert plan.graph("openvino_bf16") == plan.graph("openvino_fp32") == "resources/openvino/fp32/model.xml"
    assert plan.reference("int8_inc") == "fp32" and plan.reference("fp32") is None
    assert plan.reference("openvino_fp32") == "fp32" and plan.engine_peer("openvino_int8") == "int8_inc"


def test_bf16_without_its_instructions_is_left_out_and_said(recipe):
    plan = Plan(recipe, native_bf16=False)
    assert "bf16" not in plan.default_models and "bf16" not in plan.compared_models
    assert "openvino_bf16" not in plan.default_models
    assert len(plan.left_out) == 2 and "models.bf16.allow_emulation" in plan.left_out[0]
    assert "bf16" not in plan.report_models() and "bf16" not in plan.gallery_detections()


def test_flags_are_the_configs_values(recipe):
    plan = Plan(recipe, native_bf16=True)
    benchmark = recipe["benchmark"]
    options = shlex.split(plan.benchmark_options("fp32"))
    assert options[:2] == ["--number-of-steps", str(benchmark["number_of_steps"])]
    assert "--image-size" in options and "--parts" in " ".join(options)
    download = shlex.split(plan.download_options("val2017.zip"))
    assert download[download.index("--md5") + 1] == "442b8da7639aecaf257c1dceb8ba8c80"
    assert plan.download_identity("val2017.zip")["md5"] == "442b8da7639aecaf257c1dceb8ba8c80"
    quantize = shlex.split(plan.quantize_options("int8_inc"))
    assert "--from-evaluation-set" in quantize and "--accuracy-tolerance" not in quantize
    assert plan.tuning_options() == ""
    runtime = plan.runtime_options("int8", 4)
    assert "--intra-op-threads=4" in runtime and "--precision=int8" in runtime
    assert plan.inference_threads(6) == (recipe["inference_threads"] or 6)


def test_accuracy_aware_quantization_takes_the_coco_inputs_and_units(recipe):
    config = copy.deepcopy(recipe)
    config["models"]["int8_inc"]["quantize"]["accuracy_tolerance"] = 0.01
    plan = Plan(config, native_bf16=True)
    inputs = plan.quantize_inputs("int8_inc")
    assert set(inputs) == {"graph", "images", "records", "annotations"}
    options = shlex.split(plan.quantize_options("int8_inc"))
    assert options[options.index("--accuracy-tolerance") + 1] == "0.01"
    units = config["architectures"]["rfcn_resnet101"]["layer_drift"]["units"]
    assert options[options.index("--units") + 1] == units
    assert plan.tuning_options(inputs["records"], inputs["annotations"]).startswith("--tuning-records")


def test_every_job_before_the_report_has_its_cost(recipe):
    config = changed(recipe, benchmark={"instances": [1, 2]}, accuracy={"shards": 3}, loadgen={"accuracy": True})
    plan = Plan(config, native_bf16=True)
    costs = plan.stage_costs()
    stages = {key.split(":")[0] for key in costs}
    assert stages == set(STAGE_JOBS) - {"make_report"}
    assert costs["detect_objects:fp32:2"] == "benchmarks/detect_objects/fp32-2-of-3.tsv"
    assert costs["benchmark_instances:int8:2"] == "benchmarks/benchmark_instances/int8-2.tsv"
    assert costs["download_file:all:val2017.zip"] == "benchmarks/download_file/val2017.zip.tsv"
    assert costs["run_loadgen:int8:Offline"] == "benchmarks/run_loadgen/int8-Offline.tsv"
    assert not any("{" in path for path in costs.values())
    inputs = plan.report_inputs()
    assert inputs["cost"] == costs and list(inputs["instances"]) == [f"{name}:2" for name in plan.default_models]
    arguments = shlex.split(plan.report_arguments())
    assert arguments.count("--cost") == 1 and "--benchmark" in arguments


def test_the_gallery_puts_each_reference_first(recipe):
    plan = Plan(recipe, native_bf16=True)
    assert list(plan.gallery_detections()) == [
        "fp32",
        "int8",
        "int8_inc",
        "bf16",
        "openvino_fp32",
        "openvino_int8",
        "openvino_bf16",
    ]


def without_constraints(pattern):
    """A Snakemake file pattern with its wildcards' constraints dropped: {model,a|b} -> {model}."""
    return re.sub(r"\{(\w+),[^}]*\}", r"{\1}", str(pattern))


def test_the_rules_log_and_benchmark_where_the_plan_says():
    """Each rule that does work writes the log and benchmark files the plan names for it, and
    the plan's catalogue names no stage the workflow lacks: a new rule cannot drop out of the
    cost table unseen."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1), snakefile=Path(REPO_ROOT / "Snakefile"), workdir=REPO_ROOT
        )
        rules = {rule.name: rule for rule in workflow._workflow.rules}
    working = {name: rule for name, rule in rules.items() if rule.benchmark is not None}
    assert set(working) == set(STAGE_JOBS)
    for name, rule in working.items():
        assert without_constraints(rule.benchmark) == benchmark_file(name), name
        assert [without_constraints(path) for path in rule.log] == [log_file(name)], name
    aggregates = set(rules) - set(working)
    assert all(not rule.shellcmd for name, rule in rules.items() if name in aggregates), aggregates


def test_a_detection_jobs_thread_flags_are_apart_from_what_changes_its_detections(recipe):
    plan = Plan(recipe, native_bf16=True)
    tracked, threads = plan.detection_runtime_options("int8", 4)
    assert "threads" not in tracked and "--precision=int8" in tracked and "--onednn" in tracked
    assert threads.split() == ["--intra-op-threads=4", "--inter-op-threads=1", "--omp-num-threads=4"]
    assert plan.detection_runtime_options("int8", 1)[0] == tracked
    assert "--intra-op-threads=4" in plan.runtime_options("int8", 4)


def test_a_scenario_job_depends_only_on_its_own_knobs(recipe):
    """Another scenario's knob, or the list of scenarios, reruns nothing."""
    plan = Plan(recipe, native_bf16=True)
    changed = json.loads(json.dumps(recipe))
    changed["loadgen"].update(scenarios=["Server"], server={**recipe["loadgen"]["server"], "latency_bound_ms": 15})
    other = Plan(changed, native_bf16=True)
    assert other.loadgen_options("SingleStream") == plan.loadgen_options("SingleStream")
    assert other.loadgen_options("Server") != plan.loadgen_options("Server")
    assert set(scenario_knobs(recipe["loadgen"], "Offline")["min_query_count"]) == {"Offline"}
