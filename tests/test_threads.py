"""How many intra-op threads a CPU run uses: the idle CPUs when it starts, re-checked between epochs,
OMP_NUM_THREADS when the user set it, one per core under torchrun on a small machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hwnas.train.distributed as dist
from hwnas.train.distributed import CpuThreads, choose_cpu_threads, cpu_threads, idle_cpus


@pytest.mark.parametrize("cap,idle,procs,threads", [
    (2, 2.0, 1, 2), (2, 1.85, 1, 2),   # an idle 2-core machine: both cores
    (2, 1.7, 1, 1), (2, 1.0, 1, 1),    # another job holds (part of) a core: one thread, no spin-waits
    (2, 0.0, 1, 1),                    # never fewer than one
    (16, 5.1, 1, 5), (4, 10.0, 1, 4),  # what is free, at most the cap (torch's count: the physical cores)
    (8, 8.0, 2, 4), (2, 2.0, 2, 1),    # torchrun: the free cores shared out among the local processes
    (4, None, 1, 1),                   # nothing known about the machine: one thread, the old safe default
])
def test_choose_cpu_threads(cap, idle, procs, threads):
    assert choose_cpu_threads(cap, idle, procs) == threads


def test_idle_cpus_sees_a_busy_core():
    n = os.cpu_count() or 1
    quiet = idle_cpus()
    assert quiet is not None and 0.0 <= quiet <= n + 1e-6
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.5)  # the child is spinning
        loaded = idle_cpus(sample_s=0.5)
    finally:
        busy.wait(timeout=30)
    assert loaded is not None and loaded <= n - 0.6, (loaded, n)


def test_cpu_threads_chooses_rechecks_and_restores(monkeypatch):
    idle = [2.0]
    monkeypatch.setattr(dist, "idle_cpus", lambda: idle[0])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    with cpu_threads("cpu", local_processes=1) as ct:
        assert torch.get_num_threads() == 2 and ct.auto
        idle[0] = 0.9  # a job started beside this one
        assert ct.recheck() == 2  # not yet: at most every recheck_s
        ct.recheck_s = 0.0
        assert ct.recheck() == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # the caller's count back
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice is kept, whatever is idle
    with cpu_threads("cpu") as ct:
        assert not ct.auto and torch.get_num_threads() == 2
        ct.recheck_s = 0.0
        assert ct.recheck() == 2
    torch.set_num_threads(1)


def test_non_auto_leaves_threads_alone():
    torch.set_num_threads(1)
    ct = CpuThreads(auto=False, cap=8)
    assert ct.choose() == 1 and torch.get_num_threads() == 1


def test_train_uses_the_idle_cores_and_says_so(tmp_path: Path, monkeypatch, capsys):
    """A time-budgeted train measures its steps with the threads it will use, prints them in the plan,
    reports them in its result, and leaves the caller's count as it was."""
    import hwnas.train.api as api
    from hwnas.train.config import default_config
    from tests.test_train import micro_space, tiny_dataset

    monkeypatch.setattr(api, "load_dataset", lambda spec: tiny_dataset(n_train=64))
    monkeypatch.setattr(dist, "idle_cpus", lambda: 2.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    cfg = default_config(micro_space(), "x").model_copy(update={"batch_size": 8, "eval_subnets": 0})
    res = api.train_supernet(micro_space(), "tinydata", tmp_path / "sn.pt", config=cfg, time_budget=8.0, progress=True)
    assert res["cpu_threads"] == 2 and res["plan"]["cpu_threads"] == 2
    assert "measured on this machine with 2 CPU threads" in capsys.readouterr().err
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)


def test_usable_cpus_is_at_most_what_the_process_may_run_on():
    n = dist.usable_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_single_network_training_uses_the_idle_cores_and_restores(monkeypatch):
    """The direct route's loop trains with the idle CPUs and, when another job takes a core, fewer."""
    from torch import nn

    from hwnas.train.standalone import StandaloneRecipe, train_network
    from tests.test_train import tiny_dataset

    seen: list[int] = []

    class Seen(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x

    idle = iter([2.0, 2.0, 0.5, 0.5, 0.5])  # the start, then a job starts beside it after the first epoch
    monkeypatch.setattr(dist, "idle_cpus", lambda: next(idle, 0.5))
    monkeypatch.setattr(dist.CpuThreads, "__init__", _recheck_always(dist.CpuThreads.__init__))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Seen(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    train_network(net, tiny_dataset(n_train=32), resolution=8, epochs=3, recipe=StandaloneRecipe(batch_size=16),
                  evaluate=False)
    assert seen[:2] == [2, 2] and seen[-1] == 1  # epoch 1 with both cores, the last with one
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)


def _recheck_always(init):
    def wrapped(self, *a, **k):
        init(self, *a, **k)
        self.recheck_s = 0.0
    return wrapped
