#!/usr/bin/env python3
"""How long a run with nothing to do takes (a benchmark, not a test).

In a finished demo folder (`make demo`), times the median of a few runs of:
- `snakemake -n` and a real `snakemake` run, in the environment of a local run
  (run_demo.local_run_environment, as `make run` and `make demo` use);
- the same, on a host whose SLURM configuration names a controller that does not answer
  (the environment a user's shell may have), to show the SLURM executor plugin's start-up
  probe that the local environment avoids;
- a second `make demo` (tools/demo/run_demo.py), from the shell's command to its exit.

    make demo && .venv/bin/python tools/measure/startup.py [demo] [--runs 5]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from detbench.common import StageError, run_main
from tools.demo.run_demo import local_run_environment, snakemake_command

REPO_ROOT = Path(__file__).resolve().parents[2]

# A controller on a loopback port nobody listens on: scontrol retries until its timeout.
DEAD_CONTROLLER = """\
ClusterName=unreachable
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=9
AuthType=auth/none
NodeName=localhost CPUs=1 State=UNKNOWN
PartitionName=all Nodes=localhost Default=YES
"""


def median_seconds(command, environment, runs):
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if result.returncode != 0 or "Nothing to be done" not in result.stdout + result.stderr:
            raise StageError(f"not a run with nothing to do: {' '.join(command)}\n{result.stderr[-1000:]}")
    return statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, nargs="?", default=REPO_ROOT / "demo", help="a finished demo folder")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (the median is printed)")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if not (workdir / "results" / "report" / "summary.md").is_file():
        raise StageError(f"{workdir} is not a finished demo folder: run `make demo` first")
    configfile = workdir / "config.yaml"
    local = local_run_environment()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        host = dict(local)
        if shutil.which("scontrol"):
            (Path(scratch) / "slurm.conf").write_text(DEAD_CONTROLLER)
            host["SLURM_CONF"] = str(Path(scratch) / "slurm.conf")
        else:
            host = None
        for label, extra in (("snakemake -n", ["-n"]), ("snakemake", [])):
            command = snakemake_command(workdir, configfile, "all", extra)
            rows.append((f"{label}, local environment", median_seconds(command, local, args.runs)))
            if host is not None:
                rows.append((f"{label}, unreachable SLURM controller", median_seconds(command, host, args.runs)))
        demo = [sys.executable, str(REPO_ROOT / "tools/demo/run_demo.py"), "--workdir", str(workdir), "--cores", "all"]
        rows.append(("second make demo", median_seconds(demo, host or local, args.runs)))
    print(f"median of {args.runs} runs with nothing to do, {os.cpu_count()} cores:")
    for label, seconds in rows:
        print(f"  {label:<48} {seconds:5.2f} s")
    if host is None:
        print("  (no scontrol here: the SLURM probe is not measured)")


if __name__ == "__main__":
    run_main(main)
