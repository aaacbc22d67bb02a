"""Training one fixed network (the baseline a user would run, and generate's fine-tuning)."""

from __future__ import annotations

import time

import pytest
import torch

from hwnas.space import build_plan
from hwnas.supernet import StaticNet, Supernet, init_weights
from hwnas.train.standalone import PROBE_STEPS, StandaloneRecipe, train_network
from tests.test_train import micro_space, tiny_dataset


def _net(seed: int = 0) -> StaticNet:
    torch.manual_seed(seed)
    sp = micro_space()
    net = StaticNet(build_plan(sp, sp.smallest(8)))
    init_weights(net)
    return net


def test_epochs_mode_runs_exactly_that_many_iterations_and_learns():
    ds = tiny_dataset(n_train=64, n_val=32)
    r = train_network(_net(), ds, resolution=8, epochs=12, recipe=StandaloneRecipe(batch_size=16, lr=0.1, flip=False))
    assert r["iters"] == 12 * 4 and r["epochs"] == pytest.approx(12.0)
    assert r["val_acc"] >= 0.9  # two separable classes
    again = train_network(_net(), ds, resolution=8, epochs=12, recipe=StandaloneRecipe(batch_size=16, lr=0.1, flip=False))
    assert again["val_acc"] == r["val_acc"] and again["final_loss"] == r["final_loss"]  # seeded: reproducible


def test_time_mode_ends_on_time():
    ds = tiny_dataset(n_train=64, n_val=16)
    t0 = time.perf_counter()
    r = train_network(_net(), ds, resolution=8, time_budget_s=2.0, recipe=StandaloneRecipe(batch_size=8), evaluate=False)
    wall = time.perf_counter() - t0
    assert r["iters"] > PROBE_STEPS + 1 and "val_acc" not in r
    assert 1.6 <= r["seconds"] <= 2.3 and wall <= 3.0, (r, wall)


def test_teacher_soft_targets_reach_the_loss(monkeypatch: pytest.MonkeyPatch):
    import hwnas.train.standalone as st

    seen: list[bool] = []
    real = st.training_loss

    def spy(logits, labels, teacher_logits, **k):
        seen.append(teacher_logits is not None and k["kd_weight"] > 0)
        return real(logits, labels, teacher_logits, **k)

    monkeypatch.setattr(st, "training_loss", spy)
    ds = tiny_dataset(n_train=32, n_val=8)
    teacher = Supernet(micro_space()).extract(micro_space().largest(8))
    train_network(_net(), ds, resolution=8, epochs=1, recipe=StandaloneRecipe(batch_size=16), teacher=teacher, evaluate=False)
    assert seen and all(seen)
    seen.clear()
    train_network(_net(), ds, resolution=8, epochs=1, recipe=StandaloneRecipe(batch_size=16), evaluate=False)
    assert seen and not any(seen)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_bad_arguments():
    ds = tiny_dataset()
    with pytest.raises(ValueError, match="exactly one"):
        train_network(_net(), ds, resolution=8)
    with pytest.raises(ValueError, match="exactly one"):
        train_network(_net(), ds, resolution=8, epochs=1, time_budget_s=1)
    with pytest.raises(ValueError, match="positive"):
        train_network(_net(), ds, resolution=8, epochs=0)
