"""Plain PyTorch modules for one fixed architecture, built from the layer plan.

These are what `Supernet.extract` returns, what the profiler exports block by
block, and what a from-scratch baseline trains: ordinary Conv2d / BatchNorm2d /
activation modules, nothing elastic.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.space.plan import BlockPlan, HeadPlan, NetPlan, StemPlan

BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool. In PyTorch in OFA's order (width, then height): imported OFA weights then give
    OFA's logits bit for bit, where mean((2, 3)) rounds differently and deep random-weight nets amplify
    it. In an exported graph one reduction: two ReduceMean nodes per pool made small subnets up to 60%
    slower in ONNX Runtime (mbv3-tiny: 0.037 -> 0.060 ms for the fastest random subnet)."""
    if torch.onnx.is_in_onnx_export():
        return x.mean((2, 3), keepdim=True)
    return x.mean(3, keepdim=True).mean(2, keepdim=True)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act:
            layers.append(make_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 SE: pool -> 1x1 reduce (bias) -> ReLU -> 1x1 expand (bias) -> h-sigmoid gate."""

    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.reduce(global_pool(x)))
        return x * nn.functional.hardsigmoid(self.expand(y))


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2/V3) for one BlockPlan."""

    def __init__(self, p: BlockPlan):
        super().__init__()
        self.plan = p
        self.expand = ConvBNAct(p.in_channels, p.mid_channels, 1, act=p.act) if p.expand != 1 else None
        self.depthwise = ConvBNAct(p.mid_channels, p.mid_channels, p.kernel, p.stride, groups=p.mid_channels, act=p.act)
        self.se = SqueezeExcite(p.mid_channels, p.se_channels) if p.se else None
        self.project = ConvBNAct(p.mid_channels, p.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.plan.residual else y


def make_stem(p: StemPlan) -> ConvBNAct:
    return ConvBNAct(p.in_channels, p.out_channels, p.kernel, p.stride, act=p.act)


class Head(nn.Module):
    def __init__(self, p: HeadPlan):
        super().__init__()
        self.final_expand = ConvBNAct(p.in_channels, p.final_expand, 1, act=p.act)
        self.feature_mix = (
            nn.Sequential(nn.Conv2d(p.final_expand, p.feature_mix, 1, bias=False), make_act(p.act)) if p.feature_mix else None
        )
        self.dropout = nn.Dropout(p.dropout)
        self.classifier = nn.Linear(p.feature_mix or p.final_expand, p.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = global_pool(self.final_expand(x))
        if self.feature_mix is not None:
            x = self.feature_mix(x)
        return self.classifier(self.dropout(torch.flatten(x, 1)))


@torch.no_grad()
def zero_init_residual(model: nn.Module) -> None:
    """Zero the last BN scale of every residual MBConv: each block starts as the identity (Goyal et al.;
    BigNAS). For fresh networks only: on trained weights it would erase the blocks."""
    for m in model.modules():
        if isinstance(m, MBConv) and m.plan.residual:
            m.project[1].weight.zero_()


class StaticNet(nn.Module):
    """A standalone network for one subnet: stem -> MBConv blocks -> head."""

    def __init__(self, plan: NetPlan):
        super().__init__()
        self.plan = plan
        self.stem = make_stem(plan.stem)
        self.blocks = nn.Sequential(*(MBConv(b) for b in plan.blocks))
        self.head = Head(plan.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def init_weights(model: nn.Module) -> None:
    """He init for convs, unit BN, small classifier init (as MobileNetV3 reference code)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
