"""`make demo` as a user runs it: twice in a row, and twice at once in the same folder.

The runs build the TFRecord (downloads, extraction, checkout, conversion): what a second run
at once would trample. The whole demo runs in the shared finished run (conftest.finished_run)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO_ROOT, tool_environment

RUN_DEMO = REPO_ROOT / "tools" / "demo" / "run_demo.py"


def start_demo(workdir, *snakemake_arguments, cores="2"):
    command = [sys.executable, str(RUN_DEMO), "--workdir", str(workdir), "--cores", cores, *snakemake_arguments]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_environment(),
        start_new_session=True,
    )


TARGET = "resources/coco_tfrecord"


@pytest.mark.slow
def test_a_second_demo_run_at_once_is_refused_and_a_later_one_does_nothing(tmp_path):
    workdir = tmp_path / "demo"
    first = start_demo(workdir, TARGET)
    config = workdir / "config.yaml"
    deadline = time.monotonic() + 120
    while not config.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert config.exists(), first.communicate()[1][-3000:]
    config_of_the_first = config.read_bytes()

    second = start_demo(workdir, TARGET)
    _, errors = second.communicate(timeout=120)
    assert second.returncode == 1
    assert [line for line in errors.splitlines() if line.startswith("error:")] == [
        f"error: {workdir} is in use by another demo run (pid {first.pid}): wait for it, or give another --workdir"
    ]
    assert config.read_bytes() == config_of_the_first

    _, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors[-3000:]
    assert (workdir / TARGET / "summary.json").is_file()

    # Again, nothing changed but the port of the demo's server: nothing to do.
    started = time.monotonic()
    again = start_demo(workdir, TARGET)
    output, errors = again.communicate(timeout=120)
    seconds = time.monotonic() - started
    assert again.returncode == 0, errors[-3000:]
    assert config.read_bytes() != config_of_the_first  # another port
    assert "Nothing to be done" in output + errors
    print(f"second demo run: {seconds:.1f} s")

    # Snakemake killed while it holds the folder's lock: the next demo run removes the stale
    # lock (it holds the folder) instead of stopping with LockException until --unlock.
    killed = start_demo(workdir, TARGET, "--forcerun", "convert_coco_to_tfrecord")
    locks = workdir / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    _, errors = killed.communicate()
    assert locks.is_dir() and any(locks.iterdir()), f"the killed run left no lock to test with: {errors[-3000:]}"
    after = start_demo(workdir, TARGET)
    output, errors = after.communicate(timeout=300)
    assert after.returncode == 0, errors[-3000:]
    assert "removing the lock a killed snakemake left" in errors
    assert not (locks.is_dir() and any(locks.iterdir()))


def test_zero_cores_is_refused_at_once(tmp_path):
    run = start_demo(tmp_path / "demo", cores="0")
    _, errors = run.communicate(timeout=60)
    assert run.returncode == 1
    assert errors.strip().splitlines() == [
        "error: --cores 0: give a number of cores, at least 1, or all (make demo CORES=2)"
    ]
    assert not (tmp_path / "demo").exists()
