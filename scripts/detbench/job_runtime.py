"""How an inference job runs: its environment (threads, OpenMP, oneDNN, TCMalloc, NUMA), its
precision's demands on the CPU, pinned instances on disjoint cores, and the provenance a
result records.

`runtime_arguments` is the one builder of the runtime flags: rules/common.smk imports it for
the rules' command lines, and the launchers use it for their children.
"""

import argparse
import glob
import io
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from detbench.common import StageError

log = logging.getLogger("job_runtime")

PRECISIONS = ("fp32", "int8", "bf16")
# What runs a model: detbench/engines.py opens it on one of these.
ENGINES = ("tensorflow", "openvino")
RELAUNCHED = "RFCN_RUNTIME_APPLIED"
RUNTIME_SETTINGS = "RFCN_RUNTIME_SETTINGS"
TCMALLOC_PATTERNS = ("libtcmalloc.so.4", "libtcmalloc.so", "libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# The CPU flags that decide FP32, INT8 and BF16 speed, as /proc/cpuinfo names them.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
# Without one of these oneDNN emulates BF16 with FP32 instructions, slower than FP32 itself.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags():
    """The flags of CPU_FLAGS this CPU has."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def bf16_native(flags=None):
    """Whether this CPU computes BF16 itself (AVX-512 BF16 or AMX), rather than emulating it."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_FLAGS)


def int8_native(flags=None):
    """Whether this CPU has INT8 dot-product instructions (VNNI or AMX), which oneDNN's INT8 kernels
    are made for; without them INT8 runs on wider instructions."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in INT8_FLAGS)


def check_precision(precision, allow_emulation=False, flags=None):
    """BF16 on a CPU without BF16 instructions is refused unless emulation is allowed: oneDNN
    would run it, slowly, and the figures would say nothing about BF16 hardware."""
    if precision == "bf16" and not allow_emulation and not bf16_native(flags):
        raise StageError(
            f"bf16 needs a CPU with {' or '.join(BF16_FLAGS)}, and this one ({cpu_model()}) has neither: oneDNN would "
            "emulate BF16 slowly; set the model's allow_emulation: true to run it anyway"
        )


def find_tcmalloc():
    for directory in LIBRARY_DIRS:
        for pattern in TCMALLOC_PATTERNS:
            found = sorted(glob.glob(os.path.join(directory, pattern)))
            if found:
                return found[0]
    return None


def usable_cores():
    return len(os.sched_getaffinity(0))


def runtime_environment(settings):
    """The environment a job runs in, and the settings applied (0 threads: all usable cores)."""
    environment = dict(os.environ)
    cores = usable_cores()
    applied = {
        "intra_op_threads": settings["intra_op_threads"] or cores,
        "inter_op_threads": settings["inter_op_threads"] or 1,
        "omp_num_threads": settings["omp_num_threads"] or settings["intra_op_threads"] or cores,
        "kmp_blocktime": settings["kmp_blocktime"],
        "kmp_affinity": settings["kmp_affinity"],
        "onednn": bool(settings["onednn"]),
        "tcmalloc": None,
        "numa_socket": settings["numa_socket"],
        "engine": settings["engine"],
        "precision": settings["precision"],
        "allow_emulation": settings["allow_emulation"],
        "openvino_streams": settings["openvino_streams"],
        "openvino_mode": settings["openvino_mode"],
        "openvino_pinning": settings["openvino_pinning"],
    }
    environment["OMP_NUM_THREADS"] = str(applied["omp_num_threads"])
    environment["KMP_BLOCKTIME"] = str(applied["kmp_blocktime"])
    environment["KMP_AFFINITY"] = str(applied["kmp_affinity"])
    environment["TF_ENABLE_ONEDNN_OPTS"] = "1" if applied["onednn"] else "0"
    if settings["tcmalloc"] and settings["engine"] == "openvino":
        # OpenVINO allocates through TBB: under a preloaded TCMalloc it aborts ("free(): invalid pointer").
        log.info("TCMalloc not preloaded: an OpenVINO job allocates through TBB")
    elif settings["tcmalloc"]:
        library = find_tcmalloc()
        if library:
            preload = environment.get("LD_PRELOAD", "")
            environment["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
            applied["tcmalloc"] = library
        else:
            log.warning("TCMalloc requested but not installed (libtcmalloc); running without it")
    environment[RUNTIME_SETTINGS] = json.dumps(applied)
    return environment, applied


def apply_runtime(settings):
    """Re-execute this script under its runtime environment (once); returns what was applied.

    Thread counts, OpenMP, oneDNN and LD_PRELOAD only take effect in a new process. The
    precision's demands on the CPU are checked first, so a refused job starts nothing.
    """
    if os.environ.get(RELAUNCHED) == "1":
        return json.loads(os.environ[RUNTIME_SETTINGS])
    check_precision(settings["precision"], settings["allow_emulation"])
    if settings["precision"] == "bf16" and not settings["onednn"]:
        raise StageError("bf16 runs through oneDNN's automatic mixed precision: set onednn: true")
    environment, applied = runtime_environment(settings)
    environment[RELAUNCHED] = "1"
    command = [sys.executable, *sys.argv]
    socket = settings["numa_socket"]
    if socket is not None:
        numactl = shutil.which("numactl")
        if numactl is None:
            raise StageError(f"numa_socket is {socket} but numactl is not installed")
        command = [numactl, f"--cpunodebind={socket}", f"--membind={socket}", *command]
    log.info("runtime: %s", json.dumps(applied))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environment)


def add_runtime_arguments(parser):
    """The runtime flags. A flag not given takes the schema's default for fp32
    (config/schema.yaml, runtime.fp32), so a script run by hand runs as the workflow's FP32 jobs."""
    from detbench.config_schema import schema_defaults

    defaults = schema_defaults("runtime.fp32")
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: the FP32 graph under oneDNN's automatic mixed precision",
    )
    group.add_argument("--allow-emulation", action="store_true", help="run bf16 on a CPU without BF16 instructions")
    group.add_argument("--intra-op-threads", type=int, help="0: all usable cores")
    group.add_argument("--inter-op-threads", type=int)
    group.add_argument("--omp-num-threads", type=int, help="0: as intra-op threads")
    group.add_argument("--kmp-blocktime", type=int)
    group.add_argument("--kmp-affinity")
    group.add_argument("--onednn", action=argparse.BooleanOptionalAction, help="TF_ENABLE_ONEDNN_OPTS")
    group.add_argument("--tcmalloc", action=argparse.BooleanOptionalAction, help="LD_PRELOAD TCMalloc")
    group.add_argument("--numa-socket", type=int, help="bind to one socket with numactl")
    group.add_argument(
        "--engine", choices=ENGINES, default="tensorflow", help="tensorflow (a frozen .pb) or openvino (an IR .xml)"
    )
    group.add_argument("--openvino-streams", type=int, help="OpenVINO: NUM_STREAMS")
    group.add_argument("--openvino-mode", choices=("latency", "throughput"), help="OpenVINO: PERFORMANCE_HINT")
    group.add_argument("--openvino-pinning", action=argparse.BooleanOptionalAction, help="OpenVINO: ENABLE_CPU_PINNING")
    parser.set_defaults(**defaults)


RUNTIME_KEYS = (
    "engine",
    "precision",
    "allow_emulation",
    "intra_op_threads",
    "inter_op_threads",
    "omp_num_threads",
    "kmp_blocktime",
    "kmp_affinity",
    "onednn",
    "tcmalloc",
    "numa_socket",
    "openvino_streams",
    "openvino_mode",
    "openvino_pinning",
)


def runtime_settings(args):
    return {key: getattr(args, key) for key in RUNTIME_KEYS}


def runtime_arguments(settings, threads=0):
    """The command-line flags that give `settings` back, for a rule's command or a child
    process. `threads` (a job's) stands in for 0 intra-op threads, and intra-op threads for 0
    OpenMP threads."""
    intra = settings["intra_op_threads"] or threads
    arguments = [
        f"--precision={settings.get('precision', 'fp32')}",
        f"--intra-op-threads={intra}",
        f"--inter-op-threads={settings['inter_op_threads']}",
        f"--omp-num-threads={settings['omp_num_threads'] or intra}",
        f"--kmp-blocktime={settings['kmp_blocktime']}",
        f"--kmp-affinity={settings['kmp_affinity']}",
        "--onednn" if settings["onednn"] else "--no-onednn",
        "--tcmalloc" if settings["tcmalloc"] else "--no-tcmalloc",
    ]
    if settings.get("allow_emulation"):
        arguments.append("--allow-emulation")
    if settings.get("numa_socket") is not None:
        arguments.append(f"--numa-socket={settings['numa_socket']}")
    if settings.get("engine", "tensorflow") != "tensorflow":
        # Only where they apply: a TensorFlow job's command (and so its rerun) does not change.
        arguments += [
            f"--engine={settings['engine']}",
            f"--openvino-streams={settings['openvino_streams']}",
            f"--openvino-mode={settings['openvino_mode']}",
            "--openvino-pinning" if settings["openvino_pinning"] else "--no-openvino-pinning",
        ]
    return arguments


def job_cores(threads=0):
    """The cores a job of `threads` threads splits among its instances: the first `threads`
    it may run on (all of them for 0). A cluster job may run only on its own cores already."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[:threads] if threads else cores


def core_sets(cores, instances):
    """`instances` equal, disjoint, contiguous sets of `cores` (the remainder left idle)."""
    per_instance = len(cores) // instances
    if per_instance < 1:
        raise StageError(f"{instances} instances need at least {instances} cores; this job has {len(cores)}")
    return [cores[k * per_instance : (k + 1) * per_instance] for k in range(instances)]


def relay_output(stream, prefix, errors):
    """Copy a child's output to our stderr as it comes, each line (or progress update)
    prefixed; keep its `error:` lines."""
    for line in io.TextIOWrapper(stream, errors="replace", newline=""):  # splits at \r too: tqdm's updates
        sys.stderr.write(prefix + line)
        sys.stderr.flush()
        if line.startswith("error:"):
            errors.append(line.strip().removeprefix("error: "))


def run_pinned(commands, cpu_sets, stop_all_on_failure=False, instances=None):
    """Run `commands[k]` bound to `cpu_sets[k]` (sched_setaffinity, as taskset does), all at
    once, their output relayed as it comes, prefixed `[instance i]` (`instances[k]`, default
    k). Returns, per command, None or its failure (its last `error:` line, or its exit code).
    `stop_all_on_failure` kills the others at the first failure (instances waiting for each
    other would hang)."""
    running = []
    for instance, command, cpus in zip(instances or range(len(commands)), commands, cpu_sets):
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda cpus=cpus: os.sched_setaffinity(0, cpus),
        )
        errors = []
        relay = threading.Thread(target=relay_output, args=(process.stdout, f"[instance {instance}] ", errors))
        relay.start()
        running.append((process, relay, errors))
        log.info("instance %d on cores %s", instance, ",".join(map(str, cpus)))
    while any(process.poll() is None for process, _, _ in running):
        if stop_all_on_failure and any(process.poll() not in (None, 0) for process, _, _ in running):
            for process, _, _ in running:
                process.kill()
        time.sleep(0.05)
    failures = []
    for process, relay, errors in running:
        relay.join()
        failures.append(
            None if process.returncode == 0 else errors[-1] if errors else f"exit code {process.returncode}"
        )
    return failures


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def tcmalloc_loaded():
    """Whether TCMalloc is mapped into this process (LD_PRELOAD took effect)."""
    try:
        return "tcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def memory_policy():
    """This process's NUMA memory policy as the kernel reports it ("default", "bind:0", ...)."""
    try:
        first = Path("/proc/self/numa_maps").read_text().split("\n", 1)[0]
        return first.split()[1]
    except (OSError, IndexError):
        return None


def openvino_version():
    """The installed OpenVINO's version, read without importing it (None: not installed)."""
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


def onednn_enabled():
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") == "1"


def environment_facts(graph_path, applied, graph_sha256=None):
    """What a result must say about where it came from (`graph_sha256`: if already known)."""
    import tensorflow as tf

    from detbench.common import file_digests

    flags = cpu_flags()
    return {
        "graph": str(graph_path),
        "graph_sha256": graph_sha256 or file_digests(graph_path, ("sha256",))["sha256"],
        "precision": applied["precision"],
        # BF16 on a CPU without BF16 instructions: oneDNN's emulation, not the hardware's speed.
        "emulated": applied["precision"] == "bf16" and not bf16_native(flags),
        "tensorflow_version": tf.__version__,
        "onednn": onednn_enabled(),
        "cpu_model": cpu_model(),
        "cpu_flags": flags,
        "usable_cores": usable_cores(),
        "runtime": applied,
        "tcmalloc_loaded": tcmalloc_loaded(),
        "memory_policy": memory_policy(),
        # Peak resident memory of the job so far: graph, session and images.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
