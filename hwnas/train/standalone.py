"""Training one fixed network: the baseline a user would run, and generate's fine-tuning stage.

One function, `train_network`, for a plain `nn.Module` (a `StaticNet` built from a plan or
extracted from the supernet): SGD with Nesterov momentum, cosine learning rate with a short
linear warm-up, label smoothing, the same batch augmentation as the supernet, optional
distillation from a frozen teacher. It runs for a number of epochs, or for a wall-clock
budget: the first steps are timed and the iteration count is set from them, so the cosine
reaches zero when the time is up (the budget covers the steps; evaluation comes after).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hwnas.data import BatchIterator, Dataset, augment_batch
from hwnas.errors import TrainingDiverged
from hwnas.train.distributed import cpu_threads, memory_format_for
from hwnas.train.evaluate import accuracy
from hwnas.train.losses import training_loss
from hwnas.train.schedule import CosineSchedule, make_optimizer


class StandaloneRecipe(BaseModel):
    """A plain single-network recipe for small images (what one would use without hwnas)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lr: float = Field(default=0.1, gt=0)
    batch_size: int = Field(default=128, ge=1)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=5e-4, ge=0, description="on conv and linear weights only; 5e-4 (was 5e-5): "
                                "+1.85 points for a 16.7M-MAC net at 20 epochs on cifar10-small (BENCHMARKS.md)")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    warmup_fraction: float = Field(default=0.03, ge=0, le=0.5, description="share of the iterations spent warming up")
    flip: bool = True
    cutout: float = Field(default=0.0, ge=0, lt=1, description="side of the cutout square as a fraction of the "
                          "resolution (0: none); 0.5 cost 1.6 points at 20 epochs on cifar10-small, so it is off")
    kd_weight: float = Field(default=1.0, ge=0, description="weight of the teacher's soft targets (when a teacher is given)")
    kd_temperature: float = Field(default=1.0, gt=0)
    zero_init_residual: bool = Field(
        default=True, description="a network trained from scratch starts each residual block as the identity "
        "(+5.75 points for a 15.6M-MAC net at 3.7 epochs on cifar10-small); fine-tuning keeps its weights")


PROBE_STEPS = 4
"""Steps timed (after one untimed warm-up step) to set the iteration count of a time-budgeted run."""


def train_network(
    net: nn.Module,
    ds: Dataset,
    *,
    resolution: int,
    epochs: float | None = None,
    time_budget_s: float | None = None,
    recipe: StandaloneRecipe | None = None,
    teacher: nn.Module | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    evaluate: bool = True,
    progress: bool = False,
    label: str = "train",
) -> dict[str, Any]:
    """Train `net` in place for `epochs` or for `time_budget_s` seconds of steps (exactly one is given).

    Returns epochs (fractional), iters, seconds (steps only), images_per_s and, with `evaluate`,
    val_acc. With a `teacher` the loss adds the recipe's soft-target term."""
    if (epochs is None) == (time_budget_s is None):
        raise ValueError("give exactly one of epochs and time_budget_s")
    if epochs is not None and not (epochs > 0 and math.isfinite(epochs)):
        raise ValueError(f"epochs must be positive, got {epochs}")
    if time_budget_s is not None and not (time_budget_s > 0 and math.isfinite(time_budget_s)):
        raise ValueError(f"time_budget_s must be positive, got {time_budget_s}")
    r = recipe or StandaloneRecipe()
    dev = torch.device(device)
    net.to(device=dev, memory_format=memory_format_for(dev)).train()
    if teacher is not None:
        teacher.to(device=dev, memory_format=memory_format_for(dev)).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    it = BatchIterator(ds.train_x, ds.train_y, r.batch_size, shuffle=True, seed=seed,
                       drop_last=ds.train_x.shape[0] >= r.batch_size, device=dev)
    per_epoch = len(it)
    opt = make_optimizer(net, r.lr, r.momentum, r.nesterov, r.weight_decay)
    total = max(1, round(epochs * per_epoch)) if epochs is not None else None
    # a time-budgeted run warms up gently until the probe has set the real iteration count
    sched = CosineSchedule(r.lr, total or 10**9, 20 if total is None else round(r.warmup_fraction * total))
    gen = torch.Generator().manual_seed(seed)
    cuda = dev.type == "cuda"

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        x = augment_batch(xb, resolution, ds.mean, ds.std, train=True, generator=gen, flip=r.flip,
                         cutout=r.cutout)
        x = x.contiguous(memory_format=memory_format_for(dev))
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
            t_logits = None
            if teacher is not None and r.kd_weight > 0:
                with torch.no_grad():
                    t_logits = teacher(x).float()
            loss = training_loss(net(x), yb, t_logits, label_smoothing=r.label_smoothing,
                                 kd_weight=r.kd_weight if teacher is not None else 0.0, kd_temperature=r.kd_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sched.apply(opt)
        opt.step()
        sched.step()
        return float(loss.detach())

    done, steps_time, images, epoch, first_dt = 0, 0.0, 0, 0, 0.0
    win_t, win_n = 0.0, 0  # steps since the pace was last set
    last_print = time.perf_counter()
    loss = float("nan")
    # the idle CPUs (OMP_NUM_THREADS, when set, decides), re-checked between epochs; the pace above adapts
    with cpu_threads(dev) as threads:
        while total is None or done < total:
            it.set_epoch(epoch)
            for xb, yb in it:
                t0 = time.perf_counter()
                loss = step(xb, yb)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"{label}: loss became {loss} at iteration {done + 1}; lower the learning rate")
                dt = time.perf_counter() - t0
                done += 1
                steps_time += dt
                images += xb.shape[0]
                win_t, win_n = win_t + dt, win_n + 1
                if time_budget_s is not None and (
                        (total is None and done == 1 + PROBE_STEPS) or (total is not None and win_n >= max(5, total // 20))):
                    # the first step warms allocators up; the next PROBE_STEPS set the pace, and every further
                    # 5% of the run re-sets it from the latest steps (the machine's load changes)
                    per_step = max((win_t - (first_dt if total is None else 0.0)) / (win_n - (1 if total is None else 0)), 1e-6)
                    total = max(done + 1, done + int((time_budget_s - steps_time) / per_step))
                    sched = _rescheduled(sched, r, total)
                    win_t, win_n = 0.0, 0
                if done == 1:
                    first_dt = dt
                if progress and time.perf_counter() - last_print > 30:
                    last_print = time.perf_counter()
                    print(f"{label}: iteration {done}/{total or '?'} ({done / per_epoch:.1f} epochs), loss {loss:.3f}, "
                          f"{images / max(steps_time, 1e-9):.0f} img/s", file=sys.stderr, flush=True)
                if total is not None and done >= total:
                    break
            epoch += 1
            threads.recheck()  # between epochs: fewer threads if another job took cores since
    out: dict[str, Any] = {
        "epochs": done / per_epoch, "iters": done, "seconds": steps_time,
        "images_per_s": images / max(steps_time, 1e-9), "final_loss": loss,
    }
    if evaluate:
        out["val_acc"] = accuracy(net, ds.val_x, ds.val_y, resolution, ds.mean, ds.std, device=dev)
    return out


def _rescheduled(old: CosineSchedule, r: StandaloneRecipe, total: int) -> CosineSchedule:
    """The cosine over the now-known iteration count, continuing from where the probe left off."""
    new = CosineSchedule(r.lr, total, round(r.warmup_fraction * total))
    new.step_count = old.step_count
    return new


def step_seconds(net: nn.Module, ds: Dataset, *, resolution: int, recipe: StandaloneRecipe | None = None,
                 device: str | torch.device = "cpu", steps: int = 3) -> float:
    """Seconds per training step of `net` with `recipe` (mean of `steps` after an untimed one), timed on a
    copy inside `fork_rng`: the network and every random stream are left as they were."""
    import copy

    r = recipe or StandaloneRecipe()
    dev = torch.device(device)
    fmt = memory_format_for(dev)
    n = min(r.batch_size, int(ds.train_x.shape[0]))
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        probe = copy.deepcopy(net).to(device=dev, memory_format=fmt).train()
        opt = make_optimizer(probe, 1e-4, r.momentum, r.nesterov, r.weight_decay)
        xb, yb = ds.train_x[:n].to(dev), ds.train_y[:n].to(dev)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            x = augment_batch(xb, resolution, ds.mean, ds.std, train=True, flip=r.flip,
                             cutout=r.cutout).contiguous(memory_format=fmt)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = training_loss(probe(x), yb, None, label_smoothing=r.label_smoothing, kd_weight=0.0,
                                     kd_temperature=r.kd_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i > 0:
                times.append(time.perf_counter() - t0)
    return float(sum(times) / len(times))

