"""What a training step costs on this machine, measured before the run so a time budget can be planned:
`probe_costs` times a few steps of each phase kind on a copy of the supernet (the run's weights and
random streams are untouched). The teacher helpers live here because the probe needs the in-place or
frozen teacher a real step would use."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.data import Dataset
from hwnas.errors import UserError
from hwnas.space.models import Space
from hwnas.supernet import StaticNet, Supernet
from hwnas.train.config import PhaseConfig, TrainConfig
from hwnas.train.distributed import memory_format_for, resolve_device
from hwnas.train.evaluate import evaluation_costs
from hwnas.train.phases import eval_subnets, sample_step, trains_largest
from hwnas.train.plan import SubnetEvalCost, split_mean
from hwnas.train.schedule import make_optimizer
from hwnas.train.step import step_inputs, step_loss


def make_teacher(model: Supernet, device: torch.device) -> StaticNet:
    teacher = model.extract(model.space.largest())
    return freeze(teacher, device)


def freeze(net: nn.Module, device: torch.device) -> StaticNet:
    net.to(device=device, memory_format=memory_format_for(device))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net  # type: ignore[return-value]


PROBE_STEPS = 3
"""Timed steps per phase kind, each after an untimed warm-up step on the same subnets."""


def probe_costs(model: Supernet, cfg: TrainConfig, space: Space, ds: Dataset, device: torch.device,
                steps: int = PROBE_STEPS, evaluation: bool = True,
                ) -> tuple[dict[str, float], list[SubnetEvalCost], dict[str, float]]:
    """Seconds per iteration of every phase (one measurement per phase kind; the mean over the phase where
    its label-only start costs less, `teaching_adds_forward`), with `evaluation` what evaluating each of the
    run's evaluated subnets costs per image, and the label-only price of the phases whose start costs less.
    Measured on a copy of the model: the run's weights and random streams are untouched."""
    import copy

    costs: dict[str, float] = {}
    label_costs: dict[str, float] = {}
    by_kind: dict[tuple[Any, ...], tuple[float, float | None]] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        probe = copy.deepcopy(model)
        probe.train()
        teacher = make_teacher(probe, device)
        opt = make_optimizer(probe, 1e-4, cfg.momentum, cfg.nesterov, cfg.weight_decay)
        n = min(cfg.batch_size, ds.train_x.shape[0])
        xb, yb = ds.train_x[:n].to(device), ds.train_y[:n].to(device)
        gen = torch.Generator().manual_seed(0)
        for index, phase in enumerate(cfg.phases):
            if phase.epochs <= 0:
                costs[phase.name] = 1e-9
                continue
            if phase.kind not in by_kind:
                timer = (probe, cfg, space, ds, phase, index, xb, yb, gen, device, teacher, opt, steps)
                teach_s = _mean_step_seconds(*timer, teach=True)
                # the same subnets again, now warm: no untimed step before each timed one
                by_kind[phase.kind] = (teach_s, _mean_step_seconds(*timer, teach=False, warm=True)
                                       if teaching_adds_forward(cfg, phase) else None)
            teach_s, label_s = by_kind[phase.kind]
            costs[phase.name] = teach_s if label_s is None else split_mean(label_s, teach_s, cfg.kd_start)
            if label_s is not None:
                label_costs[phase.name] = label_s
        eval_costs: list[SubnetEvalCost] = []
        if evaluation:
            subnets = [sub for _, sub in eval_subnets(space, cfg.eval_subnets, cfg.seed)]
            eval_costs = evaluation_costs(probe, subnets, ds, device=device, batch_size=cfg.eval_batch_size)
    return costs, eval_costs, label_costs


def teaching_adds_forward(cfg: TrainConfig, phase: PhaseConfig) -> bool:
    """Whether a step after `kd_start` runs a forward that a label-only step before it does not (a frozen teacher's,
    or the in-place teacher's on each student's view), so the two parts of the phase are timed apart."""
    if cfg.kd_start <= 0 or cfg.kd_weight <= 0:
        return False
    return phase.teacher == "frozen" or (phase.teacher == "inplace" and cfg.kd_view == "student")


def _mean_step_seconds(probe: Supernet, cfg: TrainConfig, space: Space, ds: Dataset, phase: PhaseConfig, index: int,
                       xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator, device: torch.device,
                       teacher: StaticNet, opt: torch.optim.Optimizer, steps: int, *, teach: bool,
                       warm: bool = False) -> float:
    """Mean seconds of `steps` timed steps of `phase` (teaching or on labels alone).

    The first step on a new subnet shape pays one-time costs (allocator growth; on CUDA, cuDNN picking and
    compiling kernels per shape: seconds each), which the run pays once per shape and the re-planning absorbs.
    So each timed step repeats an untimed step's subnets, unless `warm` (these subnets were just timed);
    sampled subnets differ, so the mean of the timed steps, not the median."""
    cuda = device.type == "cuda"
    times = []
    every = phase.largest_every  # steps with and without the largest's gradient in the run's proportion
    for step in range(-(-steps // every) * every):
        resolution, subs = sample_step(space, phase, index, 0, 0, step)
        for timed in (True,) if warm else (False, True):
            t0 = time.perf_counter()
            x = step_inputs(xb, resolution, ds, cfg, phase, len(subs), gen, device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                step_loss(probe, probe, x, yb, subs, phase, cfg, teacher, teach=teach,
                          train_largest=trains_largest(phase, step))
            opt.step()
            if cuda:
                torch.cuda.synchronize(device)
            if timed:
                times.append(time.perf_counter() - t0)
    return max(float(np.mean(times)), 1e-9)


def supernet_epochs_for(space: Space, ds: Dataset, cfg: TrainConfig, time_budget_s: float,
                        device: str | torch.device | None = None) -> float:
    """About how many epochs `train_supernet` would plan for `time_budget_s` (all of it for steps:
    an upper bound), from the same cost probe, without training. For deciding whether a supernet is
    worth training at all."""
    from hwnas.train.plan import plan_epochs

    dev = resolve_device(None if device is None else str(device))
    model = Supernet(space).to(device=dev, memory_format=memory_format_for(dev))
    costs, _, _ = probe_costs(model, cfg, space, ds, dev, evaluation=False)
    n = int(ds.train_x.shape[0])
    iters = n // cfg.batch_size if n >= cfg.batch_size else 1
    try:
        return float(sum(plan_epochs(cfg, costs, iters, time_budget_s).planned_epochs.values()))
    except UserError:  # not even one iteration per phase fits
        return 0.0
