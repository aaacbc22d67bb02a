"""BatchNorm recalibration: a subnet's running statistics, re-estimated exactly.

A subnet inherits BN statistics accumulated while *other* subnets trained, so they are
wrong for it; OFA re-estimates them on a few thousand training images before every
evaluation. The elastic BN layers cannot use PyTorch's cumulative mode (momentum=None)
on channel slices, so the statistics are measured directly with forward hooks: the
same numbers momentum=None would give (the per-batch mean and unbiased variance,
averaged over batches, here weighted by batch size so a short last batch counts for
what it holds).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hwnas.data import augment_batch
from hwnas.train.distributed import memory_format_for


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The model's dropout layers, whose train/eval mode is set apart from BN's."""
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def set_dropout(modules: list[nn.Module], on: bool) -> None:
    """Dropout on (train mode) or off (eval mode) for these modules only: BN keeps its mode."""
    for m in modules:
        m.train(on)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    images_uint8: torch.Tensor,
    resolution: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> None:
    """Replace the running mean/var of every BatchNorm the model's forward uses by their exact
    average over `images_uint8` (eval-resize preprocessing at `resolution`).

    Works on a Supernet (its active subnet: only the active channel slices change) and on a
    StaticNet. Forwards run with batch statistics, as in training; the modules' momentum and
    train/eval mode are restored afterwards.
    """
    if images_uint8.shape[0] == 0:
        raise ValueError("recalibrate_bn needs at least one calibration image")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    sums: dict[nn.Module, list] = {}  # bn -> [n, sum of n*mean, sum of n*var, channels]

    def hook(bn: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].float()
        n = x.shape[0]
        c = x.shape[1]
        flat = x.transpose(0, 1).reshape(c, -1)
        m = flat.mean(1)
        v = flat.var(1, unbiased=True) if flat.shape[1] > 1 else torch.zeros_like(m)
        acc = sums.setdefault(bn, [0, torch.zeros_like(m), torch.zeros_like(v), c])
        acc[0] += n
        acc[1] += n * m
        acc[2] += n * v

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    try:
        model.train()
        set_dropout(dropout_modules(model), False)  # only BN should see batch statistics
        for bn in bns:
            bn.momentum = 0.0  # forward uses batch stats and leaves the buffers alone
        dev = torch.device(device)
        for i in range(0, images_uint8.shape[0], batch_size):
            xb = images_uint8[i : i + batch_size].to(dev)
            x = augment_batch(xb, resolution, mean, std, train=False)
            model(x.contiguous(memory_format=memory_format_for(dev)))
        for bn, (n, s_mean, s_var, c) in sums.items():
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean[:c] = (s_mean / n).to(bn.running_mean.dtype)
            bn.running_var[:c] = (s_var / n).to(bn.running_var.dtype)
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.fill_(-(-images_uint8.shape[0] // batch_size))
    finally:
        for h in handles:
            h.remove()
        for bn, mom in momenta.items():
            bn.momentum = mom
        for m, mode in modes.items():
            m.training = mode
