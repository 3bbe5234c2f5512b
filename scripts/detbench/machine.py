"""The machine's state beside every figure: its frequency settings and kernel, and what else ran
while the steps were timed (steal time, other processes' CPU time, load, free memory), with the
marks of a noisy run."""

import os
import platform
import time
from pathlib import Path

CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")
# A run is marked noisy above these (benchmark.noise in the config).
NOISE_LIMITS = {"max_steal": 0.02, "max_other_cpu": 0.10, "max_step_cv": 0.10}
# /proc/stat counts in clock ticks (10 ms): over less than this, shares of it are mostly rounding.
MIN_SPAN_SECONDS = 0.5


def read_text(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def frequency_facts():
    """The frequency governor and current / maximum MHz of the first core, where readable."""
    facts = {"governor": read_text(CPUFREQ / "scaling_governor")}
    for key, name in (("current_mhz", "scaling_cur_freq"), ("max_mhz", "cpuinfo_max_freq")):
        value = read_text(CPUFREQ / name)
        facts[key] = int(value) // 1000 if value and value.isdigit() else None
    return facts


def cpu_ticks(stat_text):
    """(busy, steal, total) clock ticks of all CPUs from /proc/stat's first line."""
    fields = [int(value) for value in stat_text.splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def available_mb():
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return None


class Activity:
    """A snapshot of the machine's CPU ticks and this process's CPU time; `since(earlier)` gives
    what happened between two of them."""

    def __init__(self, stat_text=None, own_seconds=None, wall=None):
        self.ticks = cpu_ticks(stat_text if stat_text is not None else read_text("/proc/stat") or "cpu 0")
        self.own_seconds = own_seconds if own_seconds is not None else sum(os.times()[:4])
        self.wall = wall if wall is not None else time.monotonic()

    def since(self, earlier, cores=None, tick_hz=None):
        """Steal time as a share of all CPU time, and other processes' busy time as a share of
        the cores (this process's own CPU time taken out), over the span since `earlier`."""
        tick_hz = tick_hz or os.sysconf("SC_CLK_TCK")
        cores = cores or os.cpu_count()
        busy, steal, total = (now - before for now, before in zip(self.ticks, earlier.ticks))
        own = self.own_seconds - earlier.own_seconds
        span = max(self.wall - earlier.wall, 1e-9)
        if span < MIN_SPAN_SECONDS:  # a few clock ticks say nothing: no share rather than a wrong one
            return {"seconds": span, "steal_fraction": None, "other_cpu_fraction": None}
        other = max(busy / tick_hz - own, 0.0) / (span * cores)
        return {
            "seconds": span,
            "steal_fraction": steal / total if total else 0.0,
            "other_cpu_fraction": min(other, 1.0),
        }


def step_variation(seconds, warmup_steps):
    """The coefficient of variation of the timed steps after warm-up."""
    measured = seconds[warmup_steps:]
    if len(measured) < 2:
        return 0.0
    mean = sum(measured) / len(measured)
    variance = sum((value - mean) ** 2 for value in measured) / (len(measured) - 1)
    return variance**0.5 / mean if mean else 0.0


def noise_marks(state, limits):
    """Why a run is noisy, one phrase per limit it passed; empty for a quiet run."""
    marks = []
    if (state["steal_fraction"] or 0) > limits["max_steal"]:
        marks.append(f"steal time {state['steal_fraction']:.1%} > {limits['max_steal']:.0%}")
    if (state["other_cpu_fraction"] or 0) > limits["max_other_cpu"]:
        marks.append(f"other processes {state['other_cpu_fraction']:.1%} of the cores > {limits['max_other_cpu']:.0%}")
    if state["step_cv"] > limits["max_step_cv"]:
        marks.append(f"step times vary {state['step_cv']:.1%} (CV) > {limits['max_step_cv']:.0%}")
    return marks


def machine_state(before, after, seconds, warmup_steps, limits=None):
    """What the machine did while the steps were timed, with its frequency settings and kernel,
    and the marks of a noisy run (`limits`: NOISE_LIMITS, or the config's)."""
    limits = limits or NOISE_LIMITS
    state = {
        **frequency_facts(),
        "kernel": platform.release(),
        # The cores this process may run on: its binding (numactl, taskset, a cluster's cgroup).
        "cores_used": sorted(os.sched_getaffinity(0)),
        **after.since(before),
        "load_average_1min": os.getloadavg()[0],
        "available_memory_mb": available_mb(),
        "step_cv": step_variation(seconds, warmup_steps),
        "noise_limits": dict(limits),
    }
    state["noisy"] = noise_marks(state, limits)
    return state
