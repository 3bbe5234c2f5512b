"""The machine's state beside every benchmark: steal and other processes' time over the timed
steps, the step times' variation, the marks of a noisy run, and what oneDNN dispatched."""

import os

import pytest
from helpers import read_json

from detbench.job_runtime import int8_native
from detbench.machine import NOISE_LIMITS, Activity, machine_state, noise_marks, step_variation
from detbench.onednn_dispatch import captured_stdout, dispatch_facts
from detbench.report.sections import MACHINE_HEADER, core_list, dispatch_text, machine_rows


def test_steal_and_other_processes_are_shares_over_the_span():
    before = Activity("cpu 100 0 50 800 0 0 0 10\ncpu0 1 2 3", own_seconds=1.0, wall=10.0)
    after = Activity("cpu 300 0 100 1000 0 0 0 30\ncpu0 1 2 3", own_seconds=2.0, wall=12.0)
    span = after.since(before, cores=2, tick_hz=100)
    # 2.5 s busy on the machine, 1 s of it ours: 1.5 s of others over 2 s on 2 cores.
    assert span["other_cpu_fraction"] == pytest.approx(0.375)
    assert span["steal_fraction"] == pytest.approx(20 / 470) and span["seconds"] == pytest.approx(2.0)
    alone = Activity("cpu 150 0 50 800 0 0 0 10", own_seconds=1.5, wall=11.0).since(before, cores=2, tick_hz=100)
    assert alone["other_cpu_fraction"] == 0.0 and alone["steal_fraction"] == 0.0
    # Over a few clock ticks a share would be mostly rounding: none is given.
    short = Activity("cpu 101 0 50 800 0 0 0 10", own_seconds=1.0, wall=10.1).since(before, cores=2, tick_hz=100)
    assert short["other_cpu_fraction"] is None and short["steal_fraction"] is None


def test_a_noisy_run_says_why():
    assert step_variation([9.0, 1.0, 1.0, 1.0], warmup_steps=1) == 0.0
    assert step_variation([9.0, 1.0, 2.0], warmup_steps=1) == pytest.approx(0.7071 / 1.5, rel=1e-3)
    quiet = {"steal_fraction": 0.01, "other_cpu_fraction": 0.05, "step_cv": 0.02}
    assert noise_marks(quiet, NOISE_LIMITS) == []
    assert noise_marks({**quiet, "steal_fraction": None, "other_cpu_fraction": None}, NOISE_LIMITS) == []
    noisy = {"steal_fraction": 0.05, "other_cpu_fraction": 0.3, "step_cv": 0.2}
    assert noise_marks(noisy, NOISE_LIMITS) == [
        "steal time 5.0% > 2%",
        "other processes 30.0% of the cores > 10%",
        "step times vary 20.0% (CV) > 10%",
    ]


def test_the_state_of_this_machine_is_read():
    before = Activity()
    state = machine_state(before, Activity(), [0.1, 0.1, 0.1], 1)
    assert state["kernel"] and state["available_memory_mb"] > 0 and state["load_average_1min"] >= 0
    assert set(state) >= {"governor", "current_mhz", "max_mhz", "steal_fraction", "other_cpu_fraction", "noisy"}
    assert state["step_cv"] == 0.0 and state["noise_limits"] == NOISE_LIMITS


def test_the_report_marks_a_noisy_benchmark():
    models = {"fp32": {"architecture": "a", "precision": "fp32", "reference": None, "published": {}}}
    state = {"governor": "performance", "current_mhz": 2400, "max_mhz": None, "kernel": "6.1", "steal_fraction": 0.05}
    state.update(other_cpu_fraction=0.0, load_average_1min=1.5, available_memory_mb=900, step_cv=0.01)
    state["noisy"] = ["steal time 5.0% > 2%"]
    result = {"cpu_model": "a CPU", "cpu_flags": ["avx2"], "tensorflow_version": "2.21.0", "machine": state}
    rows = machine_rows(models, {"fp32": result})
    assert len(MACHINE_HEADER) == len(rows[0][1]) + 1
    assert rows[0][1][2] == "2400 / n/a" and rows[0][1][-1] == "NOISY: steal time 5.0% > 2%"
    assert machine_rows(models, {"fp32": {**result, "machine": None}}) == []


VERBOSE = """onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)
onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32
onednn_verbose,v1,primitive,create:cache_hit,cpu,reorder,jit:uni,undef,src:f32
2026-12-07 INFO not oneDNN's
"""


def test_onednn_dispatch_is_read_from_its_creation_lines():
    facts = dispatch_facts(VERBOSE)
    assert facts == {
        "version": "3.7.3",
        "isa": "Intel AVX-512 with AVX512BW, AVX512VL, and AVX512DQ extensions",
        "implementations": {"brg_conv_fwd:avx512_core": 2, "jit:uni": 1},
        "kernel_isas": ["avx512_core", "uni"],
    }
    assert dispatch_facts("no verbose here\n") is None
    assert dispatch_text(facts).startswith("v3.7.3: Intel AVX-512 with AVX512BW") and dispatch_text(None).startswith(
        "oneDNN off"
    )
    assert core_list([0, 1, 2, 3, 8, 10, 11]) == "0-3, 8, 10-11" and core_list(None) == "n/a"


def test_what_a_library_writes_to_standard_output_is_captured_and_passed_on(capfd):
    with captured_stdout() as text:
        os.write(1, b"onednn_verbose,v1,info,oneDNN v9.9\n")  # as C++ writes: below Python's sys.stdout
    assert text == ["onednn_verbose,v1,info,oneDNN v9.9\n"]
    assert "oneDNN v9.9" in capfd.readouterr().out


def test_the_demo_benchmarks_say_what_onednn_dispatched(finished_run):
    int8 = read_json(finished_run, "results/benchmark/int8.json")["onednn_dispatch"]
    assert int8["version"] and int8["isa"] and int8["implementations"]
    if int8_native():  # Intel's INT8 convolutions on VNNI (or AMX) kernels
        assert any("vnni" in isa or "amx" in isa for isa in int8["kernel_isas"]), int8
    summary = (finished_run.workdir / "results/report/summary.md").read_text()
    assert f"v{int8['version']}: {int8['isa']}" in summary
