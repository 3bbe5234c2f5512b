#!/usr/bin/env python3
"""Job status for snakemake-executor-plugin-cluster-generic on SLURM: running, success or failed.

Asks squeue (no accounting needed), then sacct when squeue no longer knows the job.
"""

import subprocess
import sys

RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def state_of(job_id):
    for command in (
        ["squeue", "-h", "-j", job_id, "--states=all", "-o", "%T"],
        ["sacct", "-n", "-X", "-j", job_id, "-o", "State"],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.split()[0].rstrip("+")
    return None


def main():
    state = state_of(sys.argv[1])
    if state is None or state in RUNNING:
        print("running")
    elif state == "COMPLETED":
        print("success")
    else:
        print("failed")


if __name__ == "__main__":
    main()
