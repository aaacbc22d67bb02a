"""Analytic MACs and parameter counts from the layer plan.

MACs count multiply-accumulates of convolutions and the classifier (the usual
convention: BN, activations and pooling are not counted).
"""

from __future__ import annotations

from hwnas.space.models import Space, Subnet
from hwnas.space.plan import BlockPlan, HeadPlan, NetPlan, StemPlan, build_plan


def _bn(c: int) -> int:
    return 2 * c  # affine weight + bias


def stem_cost(p: StemPlan) -> tuple[int, int]:
    w = p.kernel * p.kernel * p.in_channels * p.out_channels
    return w * p.out_size * p.out_size, w + _bn(p.out_channels)


def block_cost(p: BlockPlan) -> tuple[int, int]:
    macs = params = 0
    hw_in, hw_out = p.in_size * p.in_size, p.out_size * p.out_size
    if p.expand != 1:
        w = p.in_channels * p.mid_channels
        macs += w * hw_in
        params += w + _bn(p.mid_channels)
    w = p.kernel * p.kernel * p.mid_channels
    macs += w * hw_out
    params += w + _bn(p.mid_channels)
    if p.se:
        w = 2 * p.mid_channels * p.se_channels
        macs += w
        params += w + p.se_channels + p.mid_channels
    w = p.mid_channels * p.out_channels
    macs += w * hw_out
    params += w + _bn(p.out_channels)
    return macs, params


def head_cost(p: HeadPlan) -> tuple[int, int]:
    hw = p.in_size * p.in_size
    w = p.in_channels * p.final_expand
    macs, params = w * hw, w + _bn(p.final_expand)
    last = p.final_expand
    if p.feature_mix:
        w = p.final_expand * p.feature_mix
        macs += w
        params += w
        last = p.feature_mix
    w = last * p.num_classes
    return macs + w, params + w + p.num_classes


def plan_cost(plan: NetPlan) -> tuple[int, int]:
    parts = [stem_cost(plan.stem), *(block_cost(b) for b in plan.blocks), head_cost(plan.head)]
    return sum(m for m, _ in parts), sum(p for _, p in parts)


def macs(space: Space, subnet: Subnet) -> int:
    return plan_cost(build_plan(space, subnet))[0]


def params(space: Space, subnet: Subnet) -> int:
    return plan_cost(build_plan(space, subnet))[1]
