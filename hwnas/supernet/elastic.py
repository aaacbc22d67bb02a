"""Elastic layers: one set of largest weights, any active width or kernel.

Each layer takes its active configuration as a forward argument (no hidden global
state) and exposes `active_*` methods that return exactly the tensors the forward
uses, so extraction copies the same numbers the supernet computes with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.space.models import make_divisible
from hwnas.supernet.static import BN_EPS, BN_MOMENTUM, global_pool


class ElasticPointwise(nn.Module):
    """1x1 conv whose leading input/output channels are active."""

    def __init__(self, max_in: int, max_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active(self, cin: int, cout: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.weight[:cout, :cin]
        return w, (self.bias[:cout] if self.bias is not None else None)

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        w, b = self.active(x.shape[1], cout)
        return F.conv2d(x, w, b)


class ElasticDepthwise(nn.Module):
    """Depthwise conv with an elastic kernel (OFA): a smaller kernel is the centre of the
    next larger one passed through a learned (k^2 x k^2) transformation, initialised to identity."""

    def __init__(self, max_channels: int, kernels: list[int], stride: int):
        super().__init__()
        self.kernels = sorted(kernels)
        self.max_kernel = self.kernels[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in self._steps()}
        )

    def _steps(self) -> list[tuple[int, int]]:
        ks = self.kernels[::-1]
        return list(zip(ks[:-1], ks[1:]))

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        w = self.weight[:channels]
        for big, small in self._steps():
            if big == kernel:
                break
            s = (big - small) // 2
            centre = w[:, :, s : s + small, s : s + small].reshape(channels, small * small)
            w = F.linear(centre, self.transforms[f"{big}to{small}"]).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.active_weight(c, kernel), None, self.stride, kernel // 2, 1, c)


class ElasticBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the leading channels; running statistics are slices (views) of the full buffers."""

    def __init__(self, max_channels: int):
        super().__init__(max_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


class ElasticSE(nn.Module):
    """Squeeze-excite whose reduced width follows the active channels: make_divisible(c / r, 8)."""

    def __init__(self, max_channels: int, reduction: int):
        super().__init__()
        self.reduction = reduction
        max_mid = make_divisible(max_channels // reduction, 8)
        self.reduce = ElasticPointwise(max_channels, max_mid, bias=True)
        self.expand = ElasticPointwise(max_mid, max_channels, bias=True)

    def mid(self, channels: int) -> int:
        return make_divisible(channels // self.reduction, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = torch.relu(self.reduce(global_pool(x), self.mid(c)))
        return x * F.hardsigmoid(self.expand(y, c))


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x) if name == "relu" else F.hardswish(x)
