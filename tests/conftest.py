"""Shared fixtures: generated demo data, a local HTTP server, a tmpfs, and one finished demo run.
The helpers the tests call are in helpers.py."""

import os
import subprocess

import pytest

# Intel's INT8 kernels need oneDNN, which is read once, when TensorFlow loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from helpers import (  # noqa: E402
    MODELS,
    TWIN,
    TWIN_ACCURACY_IMAGES,
    TWIN_LEGACY_IMAGES,
    TWIN_RUN_BENCHMARK,
    TWIN_RUN_LOADGEN_MODELS,
    Workflow,
    require_built,
)

from tools.demo.demo_config import demo_config  # noqa: E402
from tools.demo.make_demo_data import DEFAULT_WHEEL, make_demo_data  # noqa: E402
from tools.demo.serve_files import FileServer  # noqa: E402


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The generated mini COCO, detectors and tensorflow/models stand-in (built once)."""
    if not DEFAULT_WHEEL.is_file():
        pytest.fail(f"{DEFAULT_WHEEL} is missing: run `make wheels` (the Makefile's test target does)")
    folder = tmp_path_factory.mktemp("demo") / "data"
    make_demo_data(folder)
    return folder


@pytest.fixture
def file_server(demo_data):
    """The demo files over real HTTP on 127.0.0.1; `.requests` lists what clients asked."""
    server = FileServer(demo_data / "files").start()
    yield server
    server.stop()


@pytest.fixture
def small_tmpfs(tmp_path):
    """`mount(size, readonly)` mounts a tmpfs (a full disk, a read-only folder) and returns it;
    unmounted after the test. Needs root: skipped without it, except under CI."""
    mounted = []

    def mount(size="1m", readonly=False):
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
        )
        if result.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI runs as root and must mount a tmpfs: {result.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=True)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, demo_data):
    """One complete run of the default target on the demo data, shared by read-only tests."""
    server = FileServer(demo_data / "files").start()
    config = demo_config(demo_data, server.url, openvino=True)
    config["benchmark"].update(number_of_steps=40, warmup_steps=5)
    workflow = Workflow(tmp_path_factory.mktemp("finished") / "run", config)
    workflow.run()
    yield workflow
    server.stop()


@pytest.fixture(scope="session")
def twin_run(tmp_path_factory):
    require_built(TWIN, "twin")
    server = FileServer(TWIN / "files").start()
    config = demo_config(TWIN, server.url, openvino=True)
    config["models"] = {name: config["models"][name] for name in MODELS}
    for model in config["models"].values():
        if model.get("legacy_images"):
            model["legacy_images"] = TWIN_LEGACY_IMAGES
    config["benchmark"].update(TWIN_RUN_BENCHMARK)
    config["accuracy"]["max_images"] = TWIN_ACCURACY_IMAGES
    config["loadgen"]["models"] = TWIN_RUN_LOADGEN_MODELS
    workflow = Workflow(tmp_path_factory.mktemp("twin") / "run", config)
    workflow.run()
    yield workflow
    server.stop()
