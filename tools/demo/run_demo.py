#!/usr/bin/env python3
"""Run the whole workflow offline on generated data, served from 127.0.0.1.

Makes the demo data (once), or takes another data folder (`--data`, the twin's),
serves its files over HTTP on a free local port, writes a config pointing at them,
and runs snakemake in the demo folder. Extra arguments go to snakemake (for
example a target, or `-n`).
"""

import argparse
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml


from detbench.common import StageError, run_main
from tools.demo.demo_config import demo_config
from tools.demo.make_demo_data import DEFAULT_WHEEL, make_demo_data
from tools.demo.serve_files import FileServer

log = logging.getLogger("run_demo")

REPO_ROOT = Path(__file__).resolve().parents[2]


def snakemake_command(workdir, configfile, cores, extra):
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *extra,
    ]


def run_demo(workdir, cores, extra, wheel=DEFAULT_WHEEL, data=None):
    """Run the workflow in `workdir` on a data folder: `data` (the twin's, say), or the demo's,
    generated into `workdir`/data when missing."""
    check_cores(cores)
    workdir = Path(workdir).resolve()
    with exclusive_use(workdir):
        if data is None:
            data = workdir / "data"
            if not (data / "manifest.json").is_file():
                make_demo_data(data, wheel)
        elif not (Path(data) / "manifest.json").is_file():
            raise StageError(f"{data} has no manifest.json: build it first (make twin)")
        run_workflow(workdir, Path(data).resolve(), cores, extra)
    log.info("demo finished: outputs under %s", workdir)


@contextlib.contextmanager
def exclusive_use(workdir):
    """Hold the demo folder for this run: a second run there would rewrite its config (with
    its own server's port) under the first one's feet."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".run_demo.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise StageError(
                f"{workdir} is in use by another demo run ({holder}): wait for it, or give another --workdir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        yield


def local_run_environment(base=None):
    """The environment of a local snakemake: rule scripts run as `python`, so this
    interpreter's folder comes first on PATH (as in the Makefile); and SLURM_CONF=/dev/null,
    so that the SLURM executor plugin's probe at every start (`scontrol show config`) answers
    at once instead of waiting up to 10 s for a controller a local run never uses."""
    environment = dict(os.environ if base is None else base)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["SLURM_CONF"] = os.devnull
    return environment


def check_cores(cores):
    """`all` or a count of at least 1: with 0, Snakemake would wait forever for a free core."""
    if str(cores) != "all" and not (str(cores).isdigit() and int(cores) >= 1):
        raise StageError(f"--cores {cores}: give a number of cores, at least 1, or all (make demo CORES=2)")


def remove_stale_snakemake_lock(workdir, configfile, cores, environment):
    """A Snakemake killed in this folder leaves its lock, and the next run would stop at it
    until `--unlock`. The demo holds the folder (exclusive_use), so a lock found here is
    such a leftover."""
    locks = workdir / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        log.warning("removing the lock a killed snakemake left in %s (snakemake --unlock)", workdir)
        command = snakemake_command(workdir, configfile, cores, ["--unlock"])
        subprocess.run(command, env=environment, check=True, capture_output=True)


def run_workflow(workdir, data, cores, extra):
    server = FileServer(data / "files").start()
    try:
        configfile = workdir / "config.yaml"
        configfile.write_text(yaml.safe_dump(demo_config(data, server.url, openvino=True), sort_keys=False))
        command = snakemake_command(workdir, configfile, cores, extra)
        log.info("$ %s", " ".join(command))
        environment = local_run_environment()
        remove_stale_snakemake_lock(workdir, configfile, cores, environment)
        status = subprocess.run(command, env=environment).returncode
    finally:
        server.stop()
    if status != 0:
        raise StageError(f"snakemake failed (exit {status}); see the logs under {workdir / 'logs'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "demo", help="demo folder")
    parser.add_argument("--cores", default="all", help="snakemake --cores")
    parser.add_argument("--object-detection-wheel", type=Path, default=DEFAULT_WHEEL)
    parser.add_argument("--data", type=Path, help="a data folder with manifest.json (default: the demo's)")
    args, extra = parser.parse_known_args()
    run_demo(args.workdir, args.cores, extra, args.object_detection_wheel, args.data)


if __name__ == "__main__":
    run_main(main)
