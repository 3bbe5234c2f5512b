"""A bad config stops the run at once with a message that names the key."""

import pytest
from conftest import Workflow

from make_demo_data import demo_config


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["tensorflow_models"].update(commit="7a9934df"), "commit"),
        (lambda c: c["downloads"]["val2017.zip"].update(md5="not-an-md5"), "md5"),
        (lambda c: c["models"].update(int4={"download": "val2017.zip"}), "int4"),
        (lambda c: c["models"]["fp32"].update(member="../frozen_inference_graph.pb"), "member"),
        (lambda c: c["models"]["int8"].update(download="missing.pb"), "models.int8.download"),
        (lambda c: c["download_settings"].pop("retries"), "config key download_settings.retries: missing"),
        (lambda c: c.update(acuracy={"shards": 4}), "config key acuracy: unknown key"),
        (lambda c: c.update(benchmrk={}), "config key benchmrk: unknown key"),
        (lambda c: c["accuracy"].update(shard=2), "config key accuracy.shard: unknown key"),
        (lambda c: c["downloads"]["val2017.zip"].update(url="htp://example.org/val2017.zip"), "downloads.val2017.zip.url"),
        (lambda c: c["downloads"]["val2017.zip"].update(url="ftp://example.org/val2017.zip"), "downloads.val2017.zip.url"),
        (lambda c: c["models"]["int8_inc"]["quantize"].update({"from": "int4"}),
         "config key models.int8_inc.quantize.from: 'int4' is not a downloaded model"),
        (lambda c: c["runtime"].pop("int8_inc"), "config key runtime.int8_inc: missing"),
        (lambda c: c["models"]["int8_inc"].update(download="val2017.zip"), "config key models.int8_inc"),
        (lambda c: c["downloads"]["val2017.zip"].update(url="mirror/val2017.zip"),
         "config key downloads.val2017.zip.url: no such file mirror/val2017.zip"),
    ],
)
def test_bad_value_names_its_key(tmp_path, demo_data, change, key):
    config = demo_config(demo_data, "http://127.0.0.1:9")
    change(config)
    result = Workflow(tmp_path, config).run("-n", check=False)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr


def test_shipped_config_is_valid_and_plans_the_real_run(tmp_path):
    import yaml
    from conftest import REPO_ROOT

    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    assert config["tensorflow_models"]["commit"] == "7a9934df2afdf95be9405b4e9f1f2480d748dc40"
    assert config["downloads"]["val2017.zip"]["md5"] == "442b8da7639aecaf257c1dceb8ba8c80"
    jobs = Workflow(tmp_path, config).planned_jobs()
    assert jobs["download_file"] == 4 and jobs["convert_coco_to_tfrecord"] == 1


def test_every_problem_is_reported_at_once(tmp_path, demo_data):
    config = demo_config(demo_data, "http://127.0.0.1:9")
    config["acuracy"] = {"shards": 4}
    config["benchmark"]["number_of_steps"] = 0
    config["downloads"]["val2017.zip"]["url"] = "ftp://example.org/val2017.zip"
    result = Workflow(tmp_path, config).run("-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for key in ("config key acuracy: unknown key", "config key benchmark.number_of_steps: 0 is less than",
                "config key downloads.val2017.zip.url: 'ftp://"):  # fmt: skip
        assert key in output, output[-2000:]


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
    assert "config key accuracy.shards: 'many' is not of type 'integer'" in result.stdout + result.stderr
