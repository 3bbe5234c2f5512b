"""A bad config stops the run at once: one line per problem, naming the key (or the file and
line), in words, with no trace lines."""

import pytest
import yaml
from helpers import REPO_ROOT, Workflow

from detbench.config_schema import load_schema, read_config_file
from detbench.registry import config_problems
from tools.demo.demo_config import demo_config

SCHEMA = load_schema()


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            lambda c: c["tensorflow_models"].update(commit="7a9934df"),
            "config key tensorflow_models.commit: '7a9934df' is not a full 40-digit commit id",
        ),
        (
            lambda c: c["downloads"]["val2017.zip"].update(md5="not-an-md5"),
            "config key downloads.val2017.zip.md5: 'not-an-md5' is not an MD5 checksum (32 hex digits)",
        ),
        (
            lambda c: c["models"].update(
                Int4={"architecture": "rfcn_resnet101", "precision": "int8", "download": "val2017.zip"}
            ),
            "config key models: 'Int4' is not a model name (lowercase letters, digits and '_', starting with a letter)",
        ),
        (
            lambda c: c["models"]["fp32"].update(member="../frozen_inference_graph.pb"),
            "config key models.fp32.member: '../frozen_inference_graph.pb' is not a path inside the archive "
            "(relative, no '..' component)",
        ),
        (
            lambda c: c["coco"].update(images_member="val2017/../annotations"),
            "config key coco.images_member: 'val2017/../annotations' is not a path inside the archive",
        ),
        (
            lambda c: c["models"]["int8"].update(download="missing.pb"),
            "config key models.int8.download: 'missing.pb' is not an entry of downloads",
        ),
        (
            lambda c: c["download_settings"].update(retries=-1),
            "config key download_settings.retries: -1 is too small: the least allowed is 0",
        ),
        (lambda c: c.update(acuracy={"shards": 4}), "config key acuracy: unknown key (known: downloads,"),
        (lambda c: c["accuracy"].update(shard=2), "config key accuracy.shard: unknown key"),
        (lambda c: c["accuracy"].update(shards="many"), "config key accuracy.shards: 'many' is not a whole number"),
        (
            lambda c: c["benchmark"].update(number_of_steps=0),
            "config key benchmark.number_of_steps: 0 is too small: the least allowed is 1",
        ),
        (
            lambda c: c["benchmark"].update(on_bad_image="ignore"),
            "config key benchmark.on_bad_image: 'ignore' is not one of stop, skip",
        ),
        (
            lambda c: c["downloads"]["val2017.zip"].update(url="htp://example.org/val2017.zip"),
            "config key downloads.val2017.zip.url: 'htp://example.org/val2017.zip' is not a URL: http(s)://host/path, "
            "file:///path, or a local path (no other scheme)",
        ),
        (
            lambda c: c["downloads"]["val2017.zip"].update(url="ftp://example.org/val2017.zip"),
            "config key downloads.val2017.zip.url: 'ftp://example.org/val2017.zip' is not a URL",
        ),
        (
            lambda c: c["models"]["int8_inc"]["quantize"].update({"from": "int4"}),
            "config key models.int8_inc.quantize.from: 'int4' is not a downloaded model",
        ),
        (
            lambda c: c["models"]["int8_inc"].update(download="val2017.zip"),
            "config key models.int8_inc: needs exactly one of: download, quantize, graph_of",
        ),
        (lambda c: c["models"]["fp32"].pop("architecture"), "config key models.fp32.architecture: missing"),
        (
            lambda c: c["models"]["fp32"].update(precision="fp16"),
            "config key models.fp32.precision: 'fp16' is not one of fp32, int8, bf16",
        ),
        (
            lambda c: c["models"]["bf16"].update(graph_of="int8"),
            "config key models.bf16.graph_of: 'int8' runs an int8 graph; a bf16 model runs an fp32 one",
        ),
        (
            lambda c: c["models"]["bf16"].update(graph_of="bf16_twin"),
            "config key models.bf16.graph_of: 'bf16_twin' is not a model with a graph of its own "
            "(int8, fp32, int8_inc)",
        ),
        (
            lambda c: c["models"]["int8_inc"].update(precision="bf16"),
            "config key models.int8_inc.precision: a model quantized here is int8, not bf16",
        ),
        (
            lambda c: c["models"]["int8"].update(reference="int8_inc2"),
            "config key models.int8.reference: 'int8_inc2' is not another model",
        ),
        (
            lambda c: c["models"]["int8"].update(reference="int8"),
            "config key models.int8.reference: 'int8' is not another model",
        ),
        (
            lambda c: (
                c["models"]["fp32"].update(architecture="ssd_mobilenet"),
                c["models"]["int8"].update(reference="fp32"),
            ),
            "config key models.int8.reference: 'fp32' is an ssd_mobilenet model, not rfcn_resnet101",
        ),
        (
            lambda c: c["models"].update(fp32_copy=dict(c["models"]["fp32"])),
            "config key models.int8.reference: rfcn_resnet101 has several fp32 models (fp32, fp32_copy): name the one",
        ),
        (
            lambda c: c["models"]["bf16"].update(runtime={"intra_op_threads": -1}),
            "config key models.bf16.runtime.intra_op_threads: -1 is too small: the least allowed is 0",
        ),
        (
            lambda c: c["models"]["bf16"].update(runtime={"threads": 4}),
            "config key models.bf16.runtime.threads: unknown key (known: intra_op_threads,",
        ),
        (
            lambda c: c.update(runtime={"int8_inc": {"tcmalloc": False}}),
            "config key runtime.int8_inc: runtime is per precision (fp32, int8, bf16); a model's own settings go in "
            "models.<name>.runtime",
        ),
        (
            lambda c: c["benchmark"].update(image_size=[600, 1024]),
            "config key benchmark.image_size: moved to models.<name>.input.image_size",
        ),
        (
            lambda c: c.update(published_reference={}),
            "config key published_reference: moved to models.<name>.published",
        ),
        (
            lambda c: (c["benchmark"].update(batch_size=2), c["models"]["int8"]["input"].update(image_size=None)),
            "config key models.int8.input.image_size: missing: benchmark.batch_size 2 resizes every image to it",
        ),
        (
            lambda c: c["models"]["fp32"].update(outputs={"boxes": "detection boxes"}),
            "config key models.fp32.outputs.boxes: 'detection boxes' is not a graph node name",
        ),
        (
            lambda c: c["downloads"]["val2017.zip"].update(url="mirror/val2017.zip"),
            "config key downloads.val2017.zip.url: no such file mirror/val2017.zip",
        ),
        (
            lambda c: c["downloads"]["val2017.zip"].update(url="/tmp"),
            "config key downloads.val2017.zip.url: /tmp is a folder: give the file inside it",
        ),
        (
            lambda c: c["benchmark"].update(number_of_steps=10, warmup_steps=10),
            "config key benchmark.warmup_steps: 10 warm-up steps leave none of benchmark.number_of_steps (10) to time",
        ),
        (
            lambda c: c["models"]["int8_inc"]["quantize"].update(calibration_dir="no/such/folder"),
            "config key models.int8_inc.quantize.calibration_dir: no such folder no/such/folder",
        ),
        (
            lambda c: c["models"]["int8"].update(architecture="yolo_v3"),
            "config key models.int8.architecture: 'yolo_v3' has no entry under architectures (rfcn_resnet101): "
            "give its parts and layer_drift units there",
        ),
        (
            lambda c: c["models"]["int8"].update(preprocess={"download": "missing.pb"}),
            "config key models.int8.preprocess.download: 'missing.pb' is not an entry of downloads",
        ),
        (
            lambda c: c["models"]["bf16"].update(preprocess={"download": "val2017.zip"}),
            "config key models.bf16.preprocess: only a downloaded graph takes a preprocessing graph",
        ),
        (
            lambda c: c["models"]["int8"].update(preprocess={"download": "val2017.zip", "timed": "yes"}),
            "config key models.int8.preprocess.timed: 'yes' is not",
        ),
        (
            lambda c: c["architectures"]["rfcn_resnet101"]["layer_drift"].update(units="(block"),
            "config key architectures.rfcn_resnet101.layer_drift.units: not a regular expression",
        ),
        (
            lambda c: c["architectures"]["rfcn_resnet101"].pop("parts"),
            "config key architectures.rfcn_resnet101.parts: missing",
        ),
        (
            lambda c: c.pop("architectures"),
            "config key architectures: missing: copy the architectures section of the project's config/config.yaml",
        ),
        (
            lambda c: c["models"]["fp32"].update(legacy_images=0),
            "config key models.fp32.legacy_images: 0 is too small: the least allowed is 1",
        ),
    ],
)
def test_bad_value_is_named_in_words(demo_data, change, problem):
    config = demo_config(demo_data, "http://127.0.0.1:9")
    change(config)
    problems = config_problems(config, SCHEMA)
    assert any(line.startswith(problem) for line in problems), problems
    assert not any("{'pattern'" in line or "^(" in line for line in problems), problems


def test_defaults_come_from_the_schema_and_a_model_overrides_single_keys(demo_data):
    """A config that leaves a key out runs with the schema's default; runtime.<precision>
    gives a precision's defaults, and a model's runtime replaces single keys of them."""
    from detbench.config_schema import schema_defaults
    from detbench.registry import checked_config, model_runtime, reference_model

    config = demo_config(demo_data, "http://127.0.0.1:9")
    config["runtime"] = {"int8": {"intra_op_threads": 3}}
    config["models"]["int8_inc"]["runtime"] = {"tcmalloc": False}
    assert checked_config(config, SCHEMA) == []
    assert config["accuracy"]["checkpoint_every"] == 50 and config["benchmark"]["instances"] == [1]
    assert config["runtime"]["fp32"] == schema_defaults("runtime.fp32")
    assert model_runtime(config, "fp32")["kmp_blocktime"] == 0 and model_runtime(config, "fp32")["tcmalloc"] is False
    assert model_runtime(config, "int8") == {**schema_defaults("runtime.int8"), "intra_op_threads": 3}
    assert model_runtime(config, "int8")["tcmalloc"] is True and model_runtime(config, "int8")["kmp_blocktime"] == 1
    assert model_runtime(config, "int8_inc") == {**model_runtime(config, "int8"), "tcmalloc": False}
    assert config["models"]["bf16"]["input"]["tensor"] == "image_tensor"
    assert config["models"]["bf16"]["outputs"]["count"] == "num_detections"
    references = {name: reference_model(config["models"], name) for name in config["models"]}
    assert references == {"int8": "fp32", "fp32": None, "int8_inc": "fp32", "bf16": "fp32"}


def test_bf16_runs_by_default_only_where_the_cpu_has_bf16_instructions(demo_data):
    from detbench.common import StageError
    from detbench.job_runtime import check_precision
    from detbench.registry import checked_config, models_run_here

    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    assert checked_config(config, SCHEMA) == [] and config["models"]["bf16"]["allow_emulation"] is False
    assert models_run_here(config, native_bf16=True) == (list(config["models"]), [])
    kept, notes = models_run_here(config, native_bf16=False)
    assert kept == ["fp32", "int8", "int8_inc", "openvino_fp32", "openvino_int8"] and notes[0] == (
        "note: model bf16 left out: this CPU has neither avx512_bf16 nor amx_bf16, so oneDNN would emulate BF16 "
        "slowly; models.bf16.allow_emulation: true runs it anyway, marked emulated"
    )
    assert len(notes) == 2 and notes[1].startswith("note: model openvino_bf16 left out")
    config["models"]["bf16"]["allow_emulation"] = config["models"]["openvino_bf16"]["allow_emulation"] = True
    assert models_run_here(config, native_bf16=False)[0] == list(config["models"])
    # A job refuses it on such a CPU, naming the flags, unless emulation is allowed.
    with pytest.raises(
        StageError,
        match=r"^bf16 needs a CPU with avx512_bf16 or amx_bf16, and this one \(.*\) has "
        r"neither: oneDNN would emulate BF16 slowly; set the model's allow_emulation: true",
    ):
        check_precision("bf16", allow_emulation=False, flags=["avx2", "avx512f"])
    check_precision("bf16", allow_emulation=True, flags=["avx2"])
    check_precision("bf16", allow_emulation=False, flags=["avx512_bf16"])
    check_precision("bf16", allow_emulation=False, flags=["amx_bf16"])
    check_precision("int8", allow_emulation=False, flags=[])


def test_shipped_config_is_valid_and_plans_the_real_run(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    assert config_problems(config, SCHEMA) == []
    assert config["tensorflow_models"]["commit"] == "7a9934df2afdf95be9405b4e9f1f2480d748dc40"
    assert config["downloads"]["val2017.zip"]["md5"] == "442b8da7639aecaf257c1dceb8ba8c80"
    jobs = Workflow(tmp_path, config).planned_jobs()
    assert jobs["download_file"] == 4 and jobs["convert_coco_to_tfrecord"] == 1


def test_zoo_config_adds_the_family_to_the_recipe(tmp_path):
    """`--configfile config/zoo.yaml` on top of config/config.yaml: R-FCN, Faster R-CNN and
    SSD-MobileNet from Intel's bucket, one TFRecord for all (a model's BF16 needs a CPU with it)."""
    from detbench.job_runtime import bf16_native

    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    zoo = yaml.safe_load((REPO_ROOT / "config" / "zoo.yaml").read_text())
    merged = {**config, **{key: {**config[key], **zoo[key]} for key in zoo}}  # as Snakemake merges them
    assert config_problems(merged, SCHEMA) == []
    assert all(entry["url"].startswith("https://") for entry in zoo["downloads"].values())
    assert zoo["models"]["ssd_int8"]["preprocess"]["download"] == "ssdmobilenet_preprocess.pb"
    jobs = Workflow(tmp_path, merged).planned_jobs()
    bf16_models = 4 if bf16_native() else 0  # three on TensorFlow, R-FCN's on OpenVINO
    assert jobs["download_file"] == 9 and jobs["convert_coco_to_tfrecord"] == 1
    assert jobs["benchmark_graph"] == 9 + 6 + bf16_models and jobs["prepare_frozen_graph"] == 6
    assert jobs["quantize_graph"] == 3
    # Each architecture's FP32 graph converted once, and quantized by NNCF once.
    assert jobs["convert_to_openvino"] == 3 and jobs["quantize_openvino"] == 3


def test_every_problem_is_one_line_at_once_with_no_trace_lines(tmp_path, demo_data):
    config = demo_config(demo_data, "http://127.0.0.1:9")
    config["acuracy"] = {"shards": 4}
    config["benchmark"]["number_of_steps"] = 0
    config["downloads"]["val2017.zip"]["url"] = "ftp://example.org/val2017.zip"
    result = Workflow(tmp_path, config).run("-n", check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("Using workflow specific profile")]
    assert lines == [
        "invalid config:",
        "config key acuracy: unknown key (known: " + ", ".join(SCHEMA["properties"]) + ")",
        "config key benchmark.number_of_steps: 0 is too small: the least allowed is 1",
        "config key downloads.val2017.zip.url: 'ftp://example.org/val2017.zip' is not a URL: http(s)://host/path, "
        "file:///path, or a local path (no other scheme)",
    ], result.stderr


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "config/config.yaml is empty: start from the project's config/config.yaml"),
        ("downloads:\n  a: [1\nmodels: {}\n", "config/config.yaml, line 3, column 7: "),
        ("- a\n- b\n", "config/config.yaml: the top level must be keys (downloads:, models:, ...), not list"),
    ],
)
def test_unreadable_config_file_is_named_with_its_line(tmp_path, text, problem):
    path = tmp_path / "config" / "config.yaml"
    path.parent.mkdir()
    path.write_text(text)
    config, found = read_config_file(path)
    assert config is None and found.startswith(str(tmp_path / problem)), found
    assert found.endswith(
        (
            "start from the project's config/config.yaml",
            "fix the YAML there (indent with spaces, close brackets and quotes)",
            "not list",
        )
    )
    assert "\n" not in found


def test_broken_config_file_stops_the_run_naming_file_and_line(tmp_path):
    """The checkout's config/config.yaml, read by the project before Snakemake's `configfile:`."""
    import subprocess
    import sys

    from helpers import tool_environment

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("benchmark:\n  number_of_steps: 10\n\twarmup_steps: 2\n")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"), "-n", "--cores", "1"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=tool_environment())
    assert result.returncode == 1
    assert result.stderr.splitlines()[-2:-1] == ["invalid config:"]
    assert result.stderr.splitlines()[-1].startswith("config/config.yaml, line 3, column 1: ")


def test_zero_cores_is_refused_not_waited_on(tmp_path, demo_data):
    result = Workflow(tmp_path, demo_config(demo_data, "http://127.0.0.1:9")).run("-n", "--cores", "0", check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "--cores 0: no job could start; give --cores N (N >= 1) or --cores all"


def test_nested_command_line_values_take_the_schema_types(tmp_path, demo_data):
    """`--config accuracy='{shards: 3}'` works as in a config file (Snakemake reads '3')."""
    workflow = Workflow(tmp_path, demo_config(demo_data, "http://127.0.0.1:9"))
    jobs = workflow.planned_jobs(
        "--config", "accuracy={max_images: 0, shards: 3, instances_per_node: 2}", "benchmark={instances: [1, 2]}"
    )
    assert jobs["detect_objects"] == 3 * len(workflow.config["models"])
    assert jobs["benchmark_instances"] == len(workflow.config["models"])
    result = workflow.run("-n", "--config", "accuracy={max_images: 0, shards: many}", check=False)
    assert result.returncode != 0
    assert "config key accuracy.shards: 'many' is not a whole number" in result.stderr
