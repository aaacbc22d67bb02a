"""The layer plan: one flat, typed description of the network a subnet denotes.

The static network builder, the cost model and the latency profiler all read the
plan, so they cannot disagree about what a block is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hwnas.space.models import Activation, Space, Subnet, make_divisible


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class StemPlan:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    act: Activation
    in_size: int

    @property
    def out_size(self) -> int:
        return conv_out(self.in_size, self.stride)


@dataclass(frozen=True)
class BlockPlan:
    """One MBConv block. `expand == 1` means no expand conv (OFA's first block)."""

    in_channels: int
    out_channels: int
    kernel: int
    expand: int
    mid_channels: int
    stride: int
    act: Activation
    se: bool
    se_channels: int
    residual: bool
    in_size: int

    @property
    def out_size(self) -> int:
        return conv_out(self.in_size, self.stride)

    def key(self) -> str:
        """Identity of a block for latency tables: everything that changes its cost."""
        d = asdict(self)
        return "mb:" + ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in d.items())


@dataclass(frozen=True)
class HeadPlan:
    in_channels: int
    final_expand: int
    feature_mix: int | None
    num_classes: int
    act: Activation
    dropout: float
    in_size: int


@dataclass(frozen=True)
class NetPlan:
    resolution: int
    stem: StemPlan
    blocks: tuple[BlockPlan, ...]
    head: HeadPlan


def mid_channels(in_channels: int, expand: int) -> int:
    return make_divisible(round(in_channels * expand), 8) if expand != 1 else in_channels


def se_channels(mid: int, reduction: int) -> int:
    return make_divisible(mid // reduction, 8)


def make_block(
    se_reduction: int, cin: int, cout: int, kernel: int, expand: int, stride: int, act: Activation, se: bool, size: int
) -> BlockPlan:
    mid = mid_channels(cin, expand)
    return BlockPlan(
        in_channels=cin,
        out_channels=cout,
        kernel=kernel,
        expand=expand,
        mid_channels=mid,
        stride=stride,
        act=act,
        se=se,
        se_channels=se_channels(mid, se_reduction) if se else 0,
        residual=stride == 1 and cin == cout,
        in_size=size,
    )


def build_plan(space: Space, subnet: Subnet) -> NetPlan:
    size = subnet.resolution
    stem = StemPlan(space.in_channels, space.stem_channels, space.stem.kernel, space.stem.stride, space.stem.act, size)
    size = stem.out_size
    cin = stem.out_channels
    blocks: list[BlockPlan] = []
    if space.first_block is not None:
        fb = space.first_block
        b = make_block(space.se_reduction, cin, space.first_block_channels or cin, fb.kernel, 1, fb.stride, fb.act, fb.se, size)
        blocks.append(b)
        cin, size = b.out_channels, b.out_size
    for i, st in enumerate(space.stages):
        cout = space.stage_channels(i)
        for j in range(subnet.depths[i]):
            b = make_block(
                space.se_reduction, cin, cout, subnet.kernels[i][j], subnet.expands[i][j], st.stride if j == 0 else 1, st.act, st.se, size
            )
            blocks.append(b)
            cin, size = b.out_channels, b.out_size
    fe, fm = space.head_channels
    head = HeadPlan(cin, fe, fm, space.num_classes, space.head.act, space.head.dropout, size)
    return NetPlan(subnet.resolution, stem, tuple(blocks), head)
