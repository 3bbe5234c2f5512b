#!/usr/bin/env python3
"""Check out tensorflow/models at one pinned commit and compile its Object Detection protos.

Fetches only the pinned commit (shallow) and only the blobs under the sparse
paths, where the server allows; otherwise falls back to a full fetch. HEAD must
equal the pin. The protos are compiled with grpcio-tools, so no system protoc is
needed.
"""

import argparse
import importlib.resources
import logging
import re
import subprocess
import sys
from pathlib import Path

from detbench.common import StageError, atomic_directory, run_main

log = logging.getLogger("checkout_tensorflow_models")

DEFAULT_SPARSE_PATHS = ("research/object_detection",)
PROTO_DIR = "research/object_detection/protos"


def git(*args, cwd=None):
    """Run git; a failure becomes a StageError carrying git's last line of complaint."""
    command = ["git", *args]
    log.info("$ %s", " ".join(command))
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        log.info("  %s", line)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        cause = lines[-1] if lines else f"exit code {result.returncode}"
        raise StageError(f"git {args[0]} failed: {cause}")
    return result.stdout.strip()


def fetch_commit(work, commit):
    try:
        git("fetch", "--depth", "1", "--filter=blob:none", "origin", commit, cwd=work)
    except StageError as error:
        # Servers that refuse to serve a bare commit id still serve their branches.
        log.warning("single-commit fetch refused (%s); fetching all branches", error)
        git("fetch", "--filter=blob:none", "origin", cwd=work)
    try:
        git("cat-file", "-e", f"{commit}^{{commit}}", cwd=work)
    except StageError:
        raise StageError(f"commit {commit} is not in the repository") from None


def compile_protos(checkout):
    research = checkout / "research"
    protos = sorted((checkout / PROTO_DIR).glob("*.proto"))
    if not protos:
        raise StageError(f"no .proto files under {PROTO_DIR} at this commit")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    # A child process: protoc's C++ protobuf clashes with TensorFlow's in one process.
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={research}",
        f"--proto_path={well_known}",
        f"--python_out={research}",
        *(str(path) for path in protos),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        cause = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise StageError(f"protoc failed on {PROTO_DIR}: {cause}")
    log.info("compiled %d protos", len(protos))


def checkout(repository, commit, output, sparse_paths=DEFAULT_SPARSE_PATHS):
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise StageError(f"commit must be a full 40-digit hex id, got {commit!r}")
    output = Path(output)
    with atomic_directory(output) as work:
        git("init", "--quiet", cwd=work)
        git("remote", "add", "origin", str(repository), cwd=work)
        git("config", "advice.detachedHead", "false", cwd=work)
        git("sparse-checkout", "set", *sparse_paths, cwd=work)
        fetch_commit(work, commit)
        git("checkout", "--quiet", "--detach", commit, cwd=work)
        head = git("rev-parse", "HEAD", cwd=work)
        if head != commit:
            raise StageError(f"HEAD is {head}, expected the pin {commit}")
        compile_protos(work)
    log.info("tensorflow/models at %s in %s", commit, output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", help="git URL or path of tensorflow/models (or a mirror)")
    parser.add_argument("commit", help="full 40-digit commit id to check out")
    parser.add_argument("output", type=Path, help="folder for the checkout")
    parser.add_argument(
        "--sparse-path",
        action="append",
        dest="sparse_paths",
        help=f"path to check out (repeatable; default {' '.join(DEFAULT_SPARSE_PATHS)})",
    )
    args = parser.parse_args()
    checkout(args.repository, args.commit, args.output, args.sparse_paths or DEFAULT_SPARSE_PATHS)


if __name__ == "__main__":
    run_main(main)
