"""Per-iteration cosine learning rate with linear warm-up, and SGD parameter groups."""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineSchedule:
    """lr(t) = base * t/warmup during warm-up, then half a cosine down to 0 at `total` iterations.
    Its whole state is the iteration counter, so it checkpoints as plain data."""

    def __init__(self, base_lr: float, total_iters: int, warmup_iters: int = 0):
        self.base_lr = float(base_lr)
        self.total = max(1, int(total_iters))
        self.warmup = max(0, min(int(warmup_iters), self.total))
        self.step_count = 0

    def lr_at(self, t: int) -> float:
        if t < self.warmup:
            return self.base_lr * (t + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (t - self.warmup) / span)
        return 0.5 * self.base_lr * (1.0 + math.cos(math.pi * progress))

    @property
    def lr(self) -> float:
        return self.lr_at(self.step_count)

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the current lr on every group (call before optimizer.step())."""
        lr = self.lr
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step": self.step_count, "base_lr": self.base_lr, "total": self.total, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        # a time-budgeted run may have re-planned its length mid-phase: the saved shape is the truth
        self.total = int(state.get("total", self.total))
        self.warmup = int(state.get("warmup", self.warmup))


def make_optimizer(model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> torch.optim.SGD:
    """SGD; BatchNorm parameters and biases (all 1-d parameters) get no weight decay (OFA, timm)."""
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
