"""The once-for-all supernet: largest weights, any subnet in place, exact extraction."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.space.models import Space, Subnet
from hwnas.space.plan import build_plan, conv_out
from hwnas.supernet.blocks import ElasticMBConv
from hwnas.supernet.static import Head, MBConv, StaticNet, init_weights, make_stem, zero_init_residual


class Supernet(nn.Module):
    """Holds the largest network's weights; `set_active(subnet)` selects what forward runs.

    The active subnet is ordinary instance state (no class-level globals), so several
    supernets, or threads holding different ones, never interfere.
    """

    def __init__(self, space: Space):
        super().__init__()
        self.space = space
        largest = build_plan(space, space.largest())
        self.stem = make_stem(largest.stem)
        self.first_block = MBConv(largest.blocks[0]) if space.first_block is not None else None
        cin = space.first_block_channels or space.stem_channels
        stages = []
        for i, st in enumerate(space.stages):
            cout = space.stage_channels(i)
            blocks = [
                ElasticMBConv(cin if j == 0 else cout, cout, st.kernels, st.expands, st.stride if j == 0 else 1, st.act, st.se, space.se_reduction)
                for j in range(st.max_depth)
            ]
            stages.append(nn.ModuleList(blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = Head(largest.head)
        init_weights(self)
        self._active: Subnet = space.largest()

    @property
    def active(self) -> Subnet:
        return self._active

    def set_active(self, subnet: Subnet | dict | str) -> None:
        self._active = self.space.validate_subnet(subnet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sub = self._active
        x = self.stem(x)
        if self.first_block is not None:
            x = self.first_block(x)
        for blocks, d, ks, es in zip(self.stages, sub.depths, sub.kernels, sub.expands):
            for j in range(d):
                x = blocks[j](x, ks[j], es[j])
        return self.head(x)

    @torch.no_grad()
    def extract(self, subnet: Subnet | dict | str | None = None) -> StaticNet:
        """A plain nn.Module with the subnet's weights (kernel transforms applied) copied out."""
        sub = self.space.validate_subnet(subnet) if subnet is not None else self._active
        plan = build_plan(self.space, sub)
        net = StaticNet(plan)
        net.stem.load_state_dict(self.stem.state_dict())
        blocks: list[nn.Module] = []
        size = plan.stem.out_size
        if self.first_block is not None:
            net.blocks[0].load_state_dict(self.first_block.state_dict())
            blocks.append(net.blocks[0])
            size = conv_out(size, self.first_block.plan.stride)
        for stage, d, ks, es in zip(self.stages, sub.depths, sub.kernels, sub.expands):
            for j in range(d):
                blk = stage[j]
                blocks.append(blk.extract(ks[j], es[j], size))
                size = conv_out(size, blk.stride)
        net.blocks = nn.Sequential(*blocks)
        net.head.load_state_dict(self.head.state_dict())
        ref = next(self.parameters())
        net.to(device=ref.device, dtype=ref.dtype)
        net.train(self.training)
        return net

    @torch.no_grad()
    def zero_init_residual(self) -> None:
        """Zero the last BN scale of every residual elastic block: each starts as the identity, so a
        shallower subnet computes what the deeper one does at first (BigNAS's initialisation)."""
        if self.first_block is not None:
            zero_init_residual(self.first_block)
        for stage in self.stages:
            for blk in stage:
                if blk.residual:
                    blk.project_bn.weight.zero_()

    @torch.no_grad()
    def reorder_channels(self) -> None:
        """Importance-sort every elastic block's expanded channels (function of the largest net unchanged).
        Optimizer momentum for these weights is stale afterwards: callers reset it."""
        for stage in self.stages:
            for blk in stage:
                blk.reorder_channels()
