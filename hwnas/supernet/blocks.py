"""The elastic MBConv block and its extraction to a static MBConv."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.space.models import Activation
from hwnas.space.plan import BlockPlan, make_block, mid_channels
from hwnas.supernet.elastic import ElasticBatchNorm, ElasticDepthwise, ElasticPointwise, ElasticSE, _act
from hwnas.supernet.static import MBConv


class ElasticMBConv(nn.Module):
    """MBConv with elastic kernel and expand ratio; input/output widths are fixed per position."""

    def __init__(
        self, cin: int, cout: int, kernels: list[int], expands: list[int], stride: int, act: Activation, se: bool, se_reduction: int
    ):
        super().__init__()
        self.cin, self.cout, self.stride, self.act, self.use_se = cin, cout, stride, act, se
        self.se_reduction = se_reduction
        self.max_mid = max(mid_channels(cin, e) for e in expands)
        self.expand_conv = ElasticPointwise(cin, self.max_mid)
        self.expand_bn = ElasticBatchNorm(self.max_mid)
        self.depthwise = ElasticDepthwise(self.max_mid, kernels, stride)
        self.depthwise_bn = ElasticBatchNorm(self.max_mid)
        self.se = ElasticSE(self.max_mid, se_reduction) if se else None
        self.project = ElasticPointwise(self.max_mid, cout)
        self.project_bn = ElasticBatchNorm(cout)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        mid = mid_channels(self.cin, expand)
        y = _act(self.act, self.expand_bn(self.expand_conv(x, mid)))
        y = _act(self.act, self.depthwise_bn(self.depthwise(y, kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project(y, self.cout))
        return x + y if self.residual else y

    def plan(self, kernel: int, expand: int, in_size: int) -> BlockPlan:
        return make_block(
            self.se_reduction,
            self.cin, self.cout, kernel, expand, self.stride, self.act, self.use_se, in_size,
        )

    @torch.no_grad()
    def extract(self, kernel: int, expand: int, in_size: int) -> MBConv:
        """A static MBConv whose parameters and buffers are the active slices of this block."""
        p = self.plan(kernel, expand, in_size)
        m = MBConv(p)
        mid = p.mid_channels
        assert m.expand is not None
        _copy_conv(m.expand[0], self.expand_conv.active(self.cin, mid))
        _copy_bn(m.expand[1], self.expand_bn, mid)
        m.depthwise[0].weight.copy_(self.depthwise.active_weight(mid, kernel))
        _copy_bn(m.depthwise[1], self.depthwise_bn, mid)
        if self.se is not None and m.se is not None:
            r = self.se.mid(mid)
            _copy_conv(m.se.reduce, self.se.reduce.active(mid, r))
            _copy_conv(m.se.expand, self.se.expand.active(r, mid))
        _copy_conv(m.project[0], self.project.active(mid, self.cout))
        _copy_bn(m.project[1], self.project_bn, self.cout)
        return m

    @torch.no_grad()
    def reorder_channels(self) -> None:
        """Sort expanded channels by the L1 norm of their projection weights (OFA), so that the
        leading channels, which every smaller expand ratio keeps, are the most important.
        A pure permutation: the largest block computes the same function."""
        idx = self.project.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
        self.project.weight.copy_(self.project.weight[:, idx])
        for bn in (self.expand_bn, self.depthwise_bn):
            _permute_bn(bn, idx)
        self.depthwise.weight.copy_(self.depthwise.weight[idx])
        self.expand_conv.weight.copy_(self.expand_conv.weight[idx])
        if self.se is not None:
            se = self.se
            se.reduce.weight.copy_(se.reduce.weight[:, idx])
            se.expand.weight.copy_(se.expand.weight[idx])
            assert se.expand.bias is not None
            se.expand.bias.copy_(se.expand.bias[idx])
            # then the SE bottleneck itself, by the L1 norm of its expand weights
            j = se.expand.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
            se.expand.weight.copy_(se.expand.weight[:, j])
            se.reduce.weight.copy_(se.reduce.weight[j])
            assert se.reduce.bias is not None
            se.reduce.bias.copy_(se.reduce.bias[j])


def _copy_conv(dst: nn.Conv2d, src: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    w, b = src
    dst.weight.copy_(w)
    if dst.bias is not None:
        assert b is not None
        dst.bias.copy_(b)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    assert src.running_mean is not None and src.running_var is not None
    dst.running_mean.copy_(src.running_mean[:c])
    dst.running_var.copy_(src.running_var[:c])
    dst.eps, dst.momentum = src.eps, src.momentum


def _permute_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    assert bn.running_mean is not None and bn.running_var is not None
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t[idx])
