#!/usr/bin/env python3
"""A one-node SLURM on this machine, without systemd, for the cluster tests.

Uses Debian's slurmctld, slurmd, slurm-client and munge. The configuration,
state and logs live in one folder; the node is `hostname -s` on 127.0.0.1 with
the CPU count and memory that `slurmd -C` reports. Accounting is off, so
clients must ask squeue for job states. The daemons are stopped by process id.

    python tests/slurm_cluster.py start FOLDER   # prints the SLURM_CONF to export
    python tests/slurm_cluster.py stop FOLDER
"""

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REQUIRED = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "munged", "munge")
MUNGE_SOCKET_DIR = Path("/run/munge")


class SlurmUnavailable(Exception):
    """SLURM cannot be set up here (no root, no packages)."""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_prerequisites():
    if os.geteuid() != 0:
        raise SlurmUnavailable("needs root to run slurmd and munged")
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise SlurmUnavailable(f"missing {', '.join(missing)} (Debian: slurmctld slurmd slurm-client munge)")
    if not Path("/etc/munge/munge.key").exists():
        raise SlurmUnavailable("no /etc/munge/munge.key (the munge package creates it)")


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def node_line():
    """The node as slurmd sees it: `NodeName=... CPUs=... RealMemory=...`."""
    output = subprocess.run([tool("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("NodeName="))
    return line + " NodeAddr=127.0.0.1 State=UNKNOWN"


def write_config(folder):
    """The cluster's slurm.conf; returns its path and the controller's port."""
    host = socket.gethostname().split(".")[0]
    controller_port = free_port()
    for name in ("state", "spool"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    config = f"""\
ClusterName=rfcn
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
MpiDefault=none
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MailProg=/bin/true
MinJobAge=86400
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Configless: slurmd fetches this file and caches it under /run/slurm/conf, where srun in a
# job finds it (snakemake's SLURM job step drops SLURM_CONF from the environment).
SlurmctldParameters=enable_configless
SlurmctldTimeout=30
SlurmdTimeout=30
{node_line()}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
    path = folder / "slurm.conf"
    path.write_text(config)
    return path, controller_port


def start_munge(folder):
    """munged as the munge user, on its standard socket, unless one already answers."""
    if subprocess.run([tool("munge"), "-n"], capture_output=True).returncode == 0:
        return None
    munge_user = pwd.getpwnam("munge")
    for directory in (MUNGE_SOCKET_DIR, Path("/var/log/munge"), Path("/var/lib/munge")):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, munge_user.pw_uid, munge_user.pw_gid)
    process = subprocess.Popen(
        ["runuser", "-u", "munge", "--", tool("munged"), "--foreground"],
        stdout=open(folder / "munged.log", "w"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: subprocess.run([tool("munge"), "-n"], capture_output=True).returncode == 0, "munged", 20)
    return process


def wait_for(condition, what, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise SlurmUnavailable(f"{what} did not come up within {seconds} s")


def controller_answers(environment):
    return subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=environment).returncode == 0


def node_state(environment):
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=environment)
    return result.stdout.strip()


class SlurmCluster:
    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.processes = []

    @property
    def environment(self):
        return {**os.environ, "SLURM_CONF": str(self.folder / "slurm.conf")}

    def start(self):
        check_prerequisites()
        self.folder.mkdir(parents=True, exist_ok=True)
        config, controller_port = write_config(self.folder)
        munged = start_munge(self.folder)
        if munged:
            self.processes.append(munged)
        daemons = {
            # -c: no state from an earlier run
            "slurmctld": [tool("slurmctld"), "-D", "-c", "-f", str(config)],
            "slurmd": [tool("slurmd"), "-D", "--conf-server", f"127.0.0.1:{controller_port}"],
        }
        for daemon, arguments in daemons.items():
            self.processes.append(
                subprocess.Popen(
                    arguments,
                    stdout=open(self.folder / f"{daemon}.out", "w"),
                    stderr=subprocess.STDOUT,
                    env=self.environment,
                )
            )
            if daemon == "slurmctld":
                wait_for(lambda: controller_answers(self.environment), "slurmctld", 30)
        try:
            wait_for(lambda: node_state(self.environment) == "idle", "the SLURM node (idle)", 60)
        except SlurmUnavailable:
            logs = "".join(
                (self.folder / f"{d}.log").read_text()[-1500:]
                for d in ("slurmctld", "slurmd")
                if (self.folder / f"{d}.log").exists()
            )
            self.stop()
            raise SlurmUnavailable(f"the SLURM node did not become idle; logs:\n{logs}") from None
        (self.folder / "pids").write_text("".join(f"{p.pid}\n" for p in self.processes))
        return self

    def stop(self):
        pids = [p.pid for p in self.processes]
        if not pids and (self.folder / "pids").exists():
            pids = [int(line) for line in (self.folder / "pids").read_text().split()]
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    cluster = SlurmCluster(args.folder)
    if args.action == "start":
        try:
            cluster.start()
        except SlurmUnavailable as error:
            sys.exit(f"error: {error}")
        print(f"export SLURM_CONF={cluster.folder / 'slurm.conf'}")
    else:
        cluster.stop()


if __name__ == "__main__":
    main()
