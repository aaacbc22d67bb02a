"""BatchNorm folding: every Conv2d followed by a BatchNorm2d becomes one Conv2d with a bias.

Deployed models should not pay for a normalisation whose statistics are frozen; folding
also makes the exported graph the same on every exporter version (no reliance on the
exporter's own peephole passes). The fold is exact up to float rounding:
w' = w * gamma / sqrt(var + eps), b' = beta + (b - mu) * gamma / sqrt(var + eps).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) computing bn(conv(x)) with bn in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"conv has {conv.out_channels} output channels but BN has {bn.num_features}")
    w = conv.weight.detach().to(torch.float64)
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(mean)
    b = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    assert fused.bias is not None
    fused.bias.copy_((beta + (b - mean) * scale).to(conv.weight.dtype))
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A deep copy of `model` (in eval mode) with each Conv2d->BatchNorm2d pair that sits
    consecutively in an nn.Sequential fused; the BN becomes nn.Identity.

    Raises ValueError if any BatchNorm2d is left unfolded, so an exported model never
    silently keeps a BN the fold did not understand.
    """
    folded = copy.deepcopy(model).eval()
    _fold_in_place(folded)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"BatchNorm layers not preceded by a Conv2d could not be folded: {', '.join(left)}")
    return folded


def _fold_in_place(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        keys = list(module._modules.keys())
        for a, b in zip(keys, keys[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fold_conv_bn(conv, bn)
                module._modules[b] = nn.Identity()
    for child in module.children():
        _fold_in_place(child)
