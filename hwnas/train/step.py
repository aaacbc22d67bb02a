"""One training step of the supernet: the view each sampled subnet trains on, its loss, and who teaches it.

Kept apart from the loop (`api.py`) so that a step can be read, tested and timed on its own (the cost probe of a
time budget and `scripts/bench_cuda_step.py` run exactly this step)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from hwnas.data import Dataset, augment_batch, cutout_batch
from hwnas.supernet import Supernet
from hwnas.train.bn import dropout_modules, set_dropout
from hwnas.train.config import PhaseConfig, Regularizer, TrainConfig
from hwnas.train.distributed import memory_format_for
from hwnas.train.gradscale import UsageCounter
from hwnas.train.losses import training_loss


def regularized(cfg: TrainConfig, phase: PhaseConfig, n_subnets: int, what: Regularizer = "label_smoothing") -> list[bool]:
    """Which subnets of a step train with the regulariser `what` (label_smoothing, cutout or dropout):
    all, or with `cfg.regularize` 'largest' and `what` in `cfg.largest_only` only the largest, which
    the sandwich and largest_random samplers put first."""
    if cfg.regularize == "all" or what not in cfg.largest_only:
        return [True] * n_subnets
    largest_first = phase.sampler in ("sandwich", "largest_random")
    return [largest_first and i == 0 for i in range(n_subnets)]


def step_inputs(xb: torch.Tensor, resolution: int, ds: Dataset, cfg: TrainConfig, phase: PhaseConfig, n_subnets: int,
                generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """The augmented batch each subnet of a step trains on: one draw shared by all, or with
    `cfg.augment_per_subnet` a draw of its own for each, so the shared weights see as many views
    of an image per step as subnets are trained (not the same view several times). The cutout goes
    to the views of the subnets `regularized` names for it."""
    fmt = memory_format_for(device)
    draws = n_subnets if cfg.augment_per_subnet else 1
    reg = regularized(cfg, phase, n_subnets, "cutout")
    if all(reg) or cfg.cutout <= 0:
        xs = [augment_batch(xb, resolution, ds.mean, ds.std, train=True, generator=generator, flip=cfg.flip,
                            cutout=cfg.cutout).contiguous(memory_format=fmt) for _ in range(draws)]
        return xs if draws > 1 else xs * n_subnets
    plain = [augment_batch(xb, resolution, ds.mean, ds.std, train=True, generator=generator, flip=cfg.flip)
             for _ in range(draws)]
    views = plain if draws > 1 else plain * n_subnets
    out = []
    for v, r in zip(views, reg):
        if r:  # its own copy with the hole: the others sharing the view stay whole
            v = cutout_batch(v.clone(), cfg.cutout, generator)
        out.append(v.contiguous(memory_format=fmt))
    return out


def subnet_loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, cfg: TrainConfig,
                regularize: bool) -> torch.Tensor:
    """One subnet's share of a step: the config's loss, label-smoothed only where `regularized` says so for it."""
    return training_loss(logits, y, soft, label_smoothing=cfg.label_smoothing if regularize else 0.0,
                         kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature, kd_divergence=cfg.kd_divergence)


def step_loss(
    model: Supernet, forward: Any, x: torch.Tensor | list[torch.Tensor], y: torch.Tensor, subs: list[Any],
    phase: PhaseConfig, cfg: TrainConfig, teacher: nn.Module | None, teach: bool = True, train_largest: bool = True,
) -> torch.Tensor:
    """Forward and backward every subnet of one step (gradients summed, or scaled per weight by
    `cfg.grad_scaling`); returns the mean loss. `x`: one batch for every subnet, or one per subnet
    (`step_inputs`): a frozen teacher then labels each subnet's own batch, an in-place one gives its
    prediction on its own view of the same images, or with `cfg.kd_view` 'student' its prediction on
    each student's view (one more forward of the largest, without gradients, for each student).

    The teacher is the phase's: a frozen network, the largest subnet of this step (in place:
    it learns from the labels, the others from labels and its soft targets), or none. `teach`
    False (before the config's `kd_start`): labels alone. `train_largest` False (`phases.trains_largest`): the
    first subnet, the largest, takes no gradient and is left out of the loss; it only gives an in-place teacher's
    soft targets, so it runs forward only then."""
    teach = teach and cfg.kd_weight > 0
    xs = x if isinstance(x, list) else [x] * len(subs)
    if len(xs) != len(subs):
        raise ValueError(f"{len(xs)} input batches for {len(subs)} subnets")
    soft = None
    frozen = phase.teacher == "frozen" and teacher is not None and teach
    total = torch.zeros((), device=xs[0].device)
    counter = UsageCounter(model.parameters()) if cfg.grad_scaling == "usage" and len(subs) > 1 else None
    reg = regularized(cfg, phase, len(subs), "label_smoothing")
    drop = regularized(cfg, phase, len(subs), "dropout")
    dropout = None if all(drop) else dropout_modules(model)
    on_student_view = phase.teacher == "inplace" and teach and cfg.kd_view == "student"
    first = 0 if train_largest else 1
    if not train_largest and phase.teacher == "inplace" and teach and not on_student_view:
        soft = _teacher_on(model, subs[0], xs[0], dropout, drop[0])  # before the counter: not a trained subnet
    with counter if counter is not None else contextlib.nullcontext():
        for i, sub in enumerate(subs[first:], start=first):
            new_view = i == first or xs[i] is not xs[i - 1]  # a teacher labels each distinct view once
            if frozen and new_view:  # the teacher sees the view its student sees
                with torch.no_grad():
                    soft = teacher(xs[i]).float()
            if i > 0 and on_student_view and new_view:
                soft = _teacher_on(model, subs[0], xs[i], dropout, drop[0])
            model.set_active(sub)
            if dropout is not None:
                set_dropout(dropout, drop[i])
            logits = forward(xs[i])
            loss = subnet_loss(logits, y, soft, cfg, reg[i])
            loss.backward()  # gradients of all sampled subnets are summed: one optimizer step
            total += loss.detach()
            if i == 0 and phase.teacher == "inplace" and teach:
                soft = logits.detach().float()
    if dropout is not None:
        set_dropout(dropout, model.training)
    if counter is not None:
        counter.scale(len(subs) - first)  # grad_scaling 'usage': each weight as if every subnet had used it
    return total / (len(subs) - first)


def _teacher_on(model: Supernet, largest: Any, x: torch.Tensor, dropout: Any, drop: bool) -> torch.Tensor:
    """The in-place teacher's soft target on another view: the largest, as it trained this step (same weights, dropout
    mode and batch statistics), on `x`, without gradients. The bare module, not the DDP wrapper: no reduction to arm."""
    with torch.no_grad():
        model.set_active(largest)
        if dropout is not None:
            set_dropout(dropout, drop)
        return model(x).float()
