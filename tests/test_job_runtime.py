"""How jobs run: the one runtime argument builder, and the one pinned-instances launcher."""

import argparse
import os
import sys
import time

import pytest

from detbench.config_schema import schema_defaults
from detbench.job_runtime import (
    add_runtime_arguments,
    core_sets,
    job_cores,
    run_pinned,
    runtime_arguments,
    runtime_settings,
)


def parsed(arguments):
    parser = argparse.ArgumentParser()
    add_runtime_arguments(parser)
    return runtime_settings(parser.parse_args(arguments))


def test_runtime_flags_give_the_settings_back():
    settings = {
        **schema_defaults("runtime.bf16"),
        "engine": "tensorflow",
        "precision": "bf16",
        "allow_emulation": True,
        "numa_socket": 1,
    }
    assert parsed(runtime_arguments(settings)) == settings
    # An OpenVINO job's: its engine and OpenVINO's properties, which a TensorFlow job's flags leave out.
    openvino = {**settings, "engine": "openvino", "openvino_streams": 2, "openvino_mode": "throughput"}
    assert parsed(runtime_arguments({**openvino, "openvino_pinning": False})) == {**openvino, "openvino_pinning": False}
    assert not any("openvino" in flag for flag in runtime_arguments(settings))
    # A job's threads stand in for 0, and intra-op threads for 0 OpenMP threads.
    resolved = parsed(runtime_arguments({**settings, "intra_op_threads": 0, "omp_num_threads": 0}, threads=6))
    assert resolved["intra_op_threads"] == 6 and resolved["omp_num_threads"] == 6


def test_a_script_run_by_hand_takes_the_schemas_fp32_defaults():
    assert parsed([]) == {
        **schema_defaults("runtime.fp32"),
        "engine": "tensorflow",
        "precision": "fp32",
        "allow_emulation": False,
    }


def test_pinned_instances_run_on_their_own_cores_and_say_who_wrote_what(capfd):
    cores = job_cores()
    if len(cores) < 2:
        pytest.skip("needs two cores")
    sets = core_sets(cores[:2], 2)
    show = "import os; print('cores', sorted(os.sched_getaffinity(0)))"
    failures = run_pinned([[sys.executable, "-c", show]] * 2, sets)
    assert failures == [None, None]
    err = capfd.readouterr().err
    for instance, cpus in enumerate(sets):
        assert f"[instance {instance}] cores {cpus}\n" in err


def test_a_failed_instance_is_named_by_its_error_and_can_stop_the_others():
    cores = job_cores()[:2]
    sets = [cores[:1], cores[-1:]]
    fail = [sys.executable, "-c", "import sys; print('error: no graph here'); sys.exit(1)"]
    wait = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = time.monotonic()
    failures = run_pinned([fail, wait], sets, stop_all_on_failure=True)
    assert failures[0] == "no graph here" and failures[1] == "exit code -9"
    assert time.monotonic() - started < 30  # the waiting instance was killed, not waited for
    # Without stop_all_on_failure the others finish: their parts are kept for a rerun.
    done = [sys.executable, "-c", "pass"]
    assert run_pinned([fail, done], sets) == ["no graph here", None]
    assert os.sched_getaffinity(0) >= set(cores)  # the launcher's own cores are untouched


def test_instances_keep_their_own_numbers_when_some_have_finished(capfd):
    """A rerun starts only the instances whose parts are missing: instance 1 is still instance 1."""
    show = [sys.executable, "-c", "print('working')"]
    assert run_pinned([show], [job_cores()[:1]], instances=[1]) == [None]
    err = capfd.readouterr().err
    assert "[instance 1] working" in err and "[instance 0]" not in err
