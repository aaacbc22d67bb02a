"""Helpers shared by several test files (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.runtime import MeasureProtocol

FAST_PROTOCOL = MeasureProtocol(warmup_runs=2, warmup_s=0.0, min_repeats=6, min_time_s=0.0, rounds=2, max_remeasure=0)
"""A short measurement protocol for profiles whose timings only need to exist and be ordered roughly."""


def perturb_bn(net: nn.Module, seed: int = 0) -> None:
    """Random BN statistics and affines, so that a wrong copy, slice or fold cannot pass by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)


def perturb(net: nn.Module, seed: int = 0) -> None:
    """perturb_bn plus non-identity elastic-kernel transforms."""
    perturb_bn(net, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
