"""Data-parallel context from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), and how many CPU
threads a process uses."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hwnas.runtime.load import usable_cpus


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """All-reduce average (identity without data parallelism)."""
        if not self.active:
            return value
        v = value.detach().clone()
        dist.all_reduce(v)
        return v / self.world_size

    def close(self, clean: bool = True) -> None:
        """Leave the group. `clean` (no error on this rank): first wait until every rank is here, since a
        rank that tore down while rank 0's store still served another aborted at exit under load
        ('terminate called without an active exception'); after an error, tear down at once.

        Before that, collect garbage: a DistributedDataParallel wrapper sits in a reference cycle, so it
        (and its reducer, which holds the group) outlives the training function until the collector runs,
        which may be at interpreter exit, after the group is destroyed; gloo aborting while such an object
        is destroyed during finalization is the same message."""
        if self.owns_group and dist.is_initialized():
            gc.collect()
            try:
                if clean:
                    dist.barrier()
            finally:
                dist.destroy_process_group()


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes: gloo on CPU, NCCL on CUDA. Single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, owns_group=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives (and all_gather_object) use the current device
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local, owns_group=True)


def memory_format_for(device: str | torch.device) -> torch.memory_format:
    """channels_last on CPU, where it makes depthwise convs 2-4x faster; contiguous on CUDA.

    On CUDA, bf16 convs in channels_last run kernels that cuDNN compiles for each new conv shape, and
    elastic subnets keep bringing new shapes. Measured on an H100 (mbv3-cifar supernet, batch 128,
    sandwich steps): channels_last 26 s for the first step and 1.3 s per step for the next 20, 150 ms
    once every shape was seen; contiguous 1.5 s for the first step, then 153-182 ms from the start."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """None -> CUDA when present else CPU; 'cuda' under torchrun -> this process's GPU."""
    from hwnas.errors import UserError

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    d = str(device).strip().lower()
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        idx = int(d[5:]) if ":" in d else local_rank
        if idx >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", idx)
    raise UserError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def idle_cpus(sample_s: float = 0.2) -> float | None:
    """How many CPUs are idle now: two reads of /proc/stat `sample_s` apart (the caller sleeps meanwhile, so
    its own work is not counted); on systems without /proc/stat, CPUs minus the 1-minute load average;
    None when neither exists."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return v[3] + v[4], sum(v)

    n = os.cpu_count() or 1
    try:
        i0, t0 = read()
        time.sleep(sample_s)
        i1, t1 = read()
        if t1 > t0:
            return n * (i1 - i0) / (t1 - t0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0.0, n - os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def choose_cpu_threads(cap: int, idle: float | None, local_processes: int = 1) -> int:
    """Intra-op threads for one of `local_processes` processes: the idle CPUs' share of it (a CPU counts
    when at least 80% of it is free), at most `cap // local_processes`, at least 1; 1 when idleness is unknown.

    Why not torch's default: a thread count above the free cores makes OpenMP spin-wait, up to 5x slower
    on a shared 2-core machine. Why not 1: on idle cores 2 threads train the cifar supernet 1.6x faster
    than 1 (BENCHMARKS.md)."""
    if idle is None:
        return 1
    per_process = max(1, cap // max(1, local_processes))
    return max(1, min(per_process, int(idle / max(1, local_processes) + 0.2)))


@dataclass
class CpuThreads:
    """The intra-op thread count of a CPU run: `auto` (OMP_NUM_THREADS unset) chooses from the idle CPUs
    at the start and again at most every `recheck_s` seconds when asked (`recheck`, called between
    epochs), so a job that starts beside this one later does not make both spin-wait."""

    auto: bool
    cap: int
    local_processes: int = 1
    recheck_s: float = 60.0
    last: float = 0.0

    def choose(self) -> int:
        if self.auto:
            # our own threads idle while sampling, so the sample sees what the others leave free
            torch.set_num_threads(choose_cpu_threads(self.cap, idle_cpus(), self.local_processes))
        self.last = time.monotonic()
        return torch.get_num_threads()

    def recheck(self) -> int:
        if self.auto and time.monotonic() - self.last >= self.recheck_s:
            return self.choose()
        return torch.get_num_threads()


@contextlib.contextmanager
def cpu_threads(device: torch.device | str, local_processes: int | None = None) -> Iterator[CpuThreads]:
    """Set this process's intra-op threads for a CPU run and give the caller's count back afterwards.
    OMP_NUM_THREADS, when set, is the user's choice and is kept; on CUDA nothing changes."""
    before = torch.get_num_threads()
    n = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if local_processes is None else local_processes
    ct = CpuThreads(auto=torch.device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ,
                    cap=min(before, usable_cpus()), local_processes=n)
    ct.choose()
    try:
        yield ct
    finally:
        torch.set_num_threads(before)
