"""Shared test setup: isolated caches, deterministic torch, few threads (2-core CI)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never read or write the user's ~/.cache/hwnas."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_process():
    """Processes the tests start (CLI subprocesses, torchrun) use one intra-op thread, not the idle CPUs of
    the moment: results must not depend on how busy the machine is. Tests of the thread choice unset it."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if old is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True, scope="session")
def _quiet_machine():
    """Profiles made by tests (module fixtures too) are judged as if measured on a quiet machine: whether
    the machine that runs the suite is busy must not decide a test."""
    from hwnas.latency import profile

    real = {k: getattr(profile, k) for k in ("busy_limit", "REPEAT_NOISE_PCT", "REPEAT_NOISE_P90_PCT", "DRIFT_PCT")}
    mp = pytest.MonkeyPatch()
    mp.setattr(profile, "busy_limit", lambda threads: float("inf"))
    mp.setattr(profile, "REPEAT_NOISE_PCT", float("inf"))
    mp.setattr(profile, "REPEAT_NOISE_P90_PCT", float("inf"))
    mp.setattr(profile, "DRIFT_PCT", float("inf"))
    yield real
    mp.undo()


@pytest.fixture(autouse=True)
def _real_load(request: pytest.FixtureRequest, _quiet_machine, monkeypatch: pytest.MonkeyPatch):
    """Tests marked `real_load` (of the judgement itself) get the real limits back."""
    if request.node.get_closest_marker("real_load") is not None:
        from hwnas.latency import profile

        for k, v in _quiet_machine.items():
            monkeypatch.setattr(profile, k, v)
    yield
