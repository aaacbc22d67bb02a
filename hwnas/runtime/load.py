"""How busy the machine was while we measured: other processes' CPU use, in cores.

A latency table profiled while another job runs is wrong in a way its own repeat measurements
hide (the slowdown is steady), so the profiler watches the whole machine: total busy CPU time from
/proc/stat minus this process's own CPU time, over the wall time. Elsewhere (no /proc/stat) it
falls back to the 1-minute load average minus the threads we use. And how many CPUs this process may use
(`usable_cpus`: training's threads and the INT8 quantiser's processes are sized from it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC_STAT = Path("/proc/stat")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, and a container's CPU quota (cgroup v2 cpu.max)
    when it has one, since /proc/stat and torch's default count the host's CPUs."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all cores), or None where unknown."""
    try:
        fields = _PROC_STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    busy = sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class LoadMonitor:
    """Call `start()` before measuring and `others_cores()` after: the mean number of cores that
    other processes kept busy in between."""

    threads: int = 1
    t0: float = 0.0
    busy0: float | None = None
    own0: float = 0.0
    load_avg: list[float] = field(default_factory=list)

    def start(self) -> "LoadMonitor":
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_seconds(), _own_cpu_seconds()
        self.sample_load()
        return self

    def sample_load(self) -> None:
        if hasattr(os, "getloadavg"):
            self.load_avg.append(os.getloadavg()[0])

    def others_cores(self) -> float:
        """Cores used by other processes since `start()` (>= 0)."""
        self.sample_load()
        wall = time.perf_counter() - self.t0
        busy = _busy_seconds()
        if busy is not None and self.busy0 is not None and wall > 0.5:
            own = _own_cpu_seconds() - self.own0
            return max(0.0, (busy - self.busy0 - own) / wall)
        return max(0.0, max(self.load_avg, default=0.0) - self.threads)
