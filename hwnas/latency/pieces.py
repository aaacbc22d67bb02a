"""The distinct pieces (stem, blocks, head) any subnet of a space can contain, and their graphs.

Block identity comes from the layer plan (`build_plan`), the same plan the static network is
built from, so the keys in a table are exactly the keys a subnet's plan produces. A piece's
graph does not depend on its input size except through the input shape, so each distinct
structure is exported once with free spatial dimensions and pinned per resolution at session
creation (ORT free-dimension overrides): one export serves all resolutions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from hwnas.space import Space, Subnet, build_plan
from hwnas.space.plan import BlockPlan, HeadPlan, NetPlan, StemPlan

PieceKind = Literal["stem", "block", "head"]
INPUT, OUTPUT = "input", "output"


def _fields(d: dict) -> str:
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in d.items())


def stem_key(p: StemPlan) -> str:
    return "stem:" + _fields(asdict(p))


def head_key(p: HeadPlan) -> str:
    d = asdict(p)
    d.pop("dropout")  # inference graph is identical for any dropout rate
    return "head:" + _fields(d)


def piece_key(p: StemPlan | BlockPlan | HeadPlan) -> str:
    if isinstance(p, StemPlan):
        return stem_key(p)
    if isinstance(p, HeadPlan):
        return head_key(p)
    return p.key()


def structure_key(p: StemPlan | BlockPlan | HeadPlan) -> str:
    """The piece's key with the input size removed: one exported graph per structure."""
    return piece_key(replace(p, in_size=0))


def piece_mparams(p: StemPlan | BlockPlan | HeadPlan) -> float:
    """Parameters of a piece in millions (weights a whole network streams from memory each run)."""
    from hwnas.space.cost import block_cost, head_cost, stem_cost

    f = stem_cost if isinstance(p, StemPlan) else head_cost if isinstance(p, HeadPlan) else block_cost
    return f(p)[1] / 1e6  # type: ignore[arg-type]


def net_mparams(plan: NetPlan) -> float:
    return piece_mparams(plan.stem) + sum(piece_mparams(b) for b in plan.blocks) + piece_mparams(plan.head)


def input_shape(p: StemPlan | BlockPlan | HeadPlan) -> tuple[int, int, int, int]:
    return (1, p.in_channels, p.in_size, p.in_size)


def net_keys(plan: NetPlan) -> list[str]:
    """Table keys of every piece of one subnet, in execution order."""
    return [stem_key(plan.stem)] + [b.key() for b in plan.blocks] + [head_key(plan.head)]


@dataclass(frozen=True)
class SlotKeys:
    """For one resolution: the key of every piece a subnet can hold, arranged like the genome.

    stages[i][pos][ki][ei]: pos 0 = the stage's first block (stride, width change), pos 1 = any
    later block (all identical slots); None where the stage never has a second block."""

    resolution: int
    stem: str
    fixed: str | None
    head: str
    stages: tuple[tuple[tuple[tuple[str, ...], ...], ...], ...]
    plans: dict[str, StemPlan | BlockPlan | HeadPlan]


def slot_keys(space: Space, resolution: int) -> SlotKeys:
    """Enumerate the pieces at one resolution by building plans of probe subnets (stage i at its
    deepest with one (kernel, expand) everywhere), so keys come from `build_plan` itself."""
    plans: dict[str, StemPlan | BlockPlan | HeadPlan] = {}
    base_depths = [s.depths[0] for s in space.stages]
    stem = fixed = head = None
    stages = []
    nfix = 1 if space.first_block is not None else 0
    for i, st in enumerate(space.stages):
        table: list[list[list[str]]] = [[], []]
        for k in st.kernels:
            row0, row1 = [], []
            for e in st.expands:
                depths = list(base_depths)
                depths[i] = st.max_depth
                kernels = [[s.kernels[0]] * d for s, d in zip(space.stages, depths)]
                expands = [[s.expands[0]] * d for s, d in zip(space.stages, depths)]
                kernels[i] = [k] * depths[i]
                expands[i] = [e] * depths[i]
                sub = space.validate_subnet(dict(resolution=resolution, depths=depths, kernels=kernels, expands=expands))
                plan = build_plan(space, sub)
                if stem is None:
                    stem, head = plan.stem, plan.head
                    fixed = plan.blocks[0] if nfix else None
                off = nfix + sum(depths[:i])
                first = plan.blocks[off]
                plans[first.key()] = first
                row0.append(first.key())
                if st.max_depth > 1:
                    later = plan.blocks[off + 1]
                    plans[later.key()] = later
                    row1.append(later.key())
            table[0].append(row0)
            table[1].append(row1)
        stages.append((tuple(tuple(r) for r in table[0]), tuple(tuple(r) for r in table[1]) if st.max_depth > 1 else None))
    assert stem is not None and head is not None
    plans[stem_key(stem)] = stem
    plans[head_key(head)] = head
    if fixed is not None:
        plans[fixed.key()] = fixed
    return SlotKeys(
        resolution=resolution, stem=stem_key(stem), fixed=fixed.key() if fixed is not None else None, head=head_key(head),
        stages=tuple(stages), plans=plans,  # type: ignore[arg-type]
    )


def all_pieces(space: Space, resolutions: list[int]) -> dict[str, StemPlan | BlockPlan | HeadPlan]:
    """key -> plan for every distinct piece at the given resolutions."""
    out: dict[str, StemPlan | BlockPlan | HeadPlan] = {}
    for r in resolutions:
        out.update(slot_keys(space, r).plans)
    return out


def sample_subnets(space: Space, n: int, seed: int, resolutions: list[int] | None = None) -> list[Subnet]:
    """`n` random subnets (uniform per choice, as OFA samples), resolutions cycling through
    `resolutions` in a shuffled order so every resolution is covered evenly."""
    rng = np.random.default_rng(seed)
    res = list(resolutions or space.resolutions)
    order = [res[i % len(res)] for i in range(n)]
    rng.shuffle(order)
    out = []
    for r in order:
        s = space.sample(rng=rng)
        out.append(space.validate_subnet(dict(s.model_dump(exclude={"space"}), resolution=int(r))))
    return out


def tilted_sample(space: Space, rng: np.random.Generator, tilt: float) -> Subnet:
    """A random subnet whose choices lean to the small (tilt < 0) or large (tilt > 0) end of each
    choice list (tilt 0: `Space.sample`'s uniform choice), so a pool covers the whole MAC range."""
    def pick(choices: list[int]) -> int:
        w = np.exp(tilt * np.linspace(-1.0, 1.0, len(choices)))
        return int(rng.choice(choices, p=w / w.sum()))

    depths = [pick(s.depths) for s in space.stages]
    return space.validate_subnet(dict(
        resolution=int(rng.choice(space.resolutions)), depths=depths,
        kernels=[[pick(s.kernels) for _ in range(d)] for s, d in zip(space.stages, depths)],
        expands=[[pick(s.expands) for _ in range(d)] for s, d in zip(space.stages, depths)]))


def mixed_pool(space: Space, rng: np.random.Generator, draws: int, *, tilt: tuple[float, float] = (-3.0, 3.0),
               resolutions: list[int] | None = None, exclude: set[str] | frozenset[str] = frozenset()) -> list[Subnet]:
    """The distinct subnets of `draws` seeded draws, in first-drawn order: every other draw is uniform
    (`Space.sample`), the rest lean to small or large choices (`tilted_sample`, tilt drawn from `tilt`),
    so the pool covers the whole MACs range where uniform draws cluster in the middle. With
    `resolutions` each draw's resolution is drawn from them; keys in `exclude` are left out."""
    pool: dict[str, Subnet] = {}
    for i in range(draws):
        s = space.sample(rng=rng) if i % 2 == 0 else tilted_sample(space, rng, float(rng.uniform(*tilt)))
        if resolutions is not None:
            s = space.validate_subnet(dict(s.model_dump(exclude={"space"}), resolution=int(rng.choice(resolutions))))
        if s.key() not in exclude:
            pool.setdefault(s.key(), s)
    return list(pool.values())


def spread_evenly(items: list, k: int) -> list:
    """`k` entries of `items` at evenly spaced positions, first and last included (all of them if shorter)."""
    if k >= len(items):
        return list(items)
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, k)]


# ---------------------------------------------------------------- graphs

def build_module(p: StemPlan | BlockPlan | HeadPlan, seed: int = 0):
    """The PyTorch module for a piece (random weights: latency does not depend on their values)."""
    import torch

    from hwnas.supernet.static import Head, MBConv, init_weights, make_stem

    torch.manual_seed(seed)
    m = make_stem(p) if isinstance(p, StemPlan) else Head(p) if isinstance(p, HeadPlan) else MBConv(p)
    init_weights(m)
    return m.eval()


def export_piece(p: StemPlan | BlockPlan | HeadPlan) -> bytes:
    """ONNX bytes of one piece structure with free batch/height/width (pinned at session time)."""
    import torch

    from hwnas.runtime import export_onnx_bytes

    x = torch.randn(*input_shape(p))
    return export_onnx_bytes(build_module(p), x, dynamic_batch=True, dynamic_spatial=True, input_name=INPUT, output_name=OUTPUT)


def piece_overrides(p: StemPlan | BlockPlan | HeadPlan) -> dict[str, int]:
    return {"batch": 1, "height": p.in_size, "width": p.in_size}


def compose(parts: list[bytes], in_channels: int, resolution: int, num_classes: int, output_name: str = "logits") -> bytes:
    """Chain piece graphs (stem, blocks, head) into one whole-network graph.

    The result has the structure `StaticNet` exports to (same ops in the same order; only weights
    and node names differ), with a free batch and a static spatial size, like a deployed model.
    It costs milliseconds instead of a full PyTorch export per calibration subnet."""
    import onnx
    from onnx import TensorProto, helper

    models = [onnx.load_from_string(b) for b in parts]
    nodes, inits = [], []
    prev = INPUT
    for i, m in enumerate(models):
        g = m.graph
        out = output_name if i == len(models) - 1 else f"x{i}"
        ren = {g.input[0].name: prev, g.output[0].name: out}

        def rn(name: str, i: int = i, ren: dict = ren) -> str:
            return "" if name == "" else ren.get(name, f"p{i}/{name}")

        for t in g.initializer:
            t2 = onnx.TensorProto()
            t2.CopyFrom(t)
            t2.name = rn(t.name)
            inits.append(t2)
        for nd in g.node:
            n2 = onnx.NodeProto()
            n2.CopyFrom(nd)
            n2.name = f"p{i}/{nd.name}"
            del n2.input[:]
            n2.input.extend(rn(x) for x in nd.input)
            del n2.output[:]
            n2.output.extend(rn(x) for x in nd.output)
            nodes.append(n2)
        prev = out
    graph = helper.make_graph(
        nodes, "hwnas_net",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", in_channels, resolution, resolution])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", num_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=list(models[0].opset_import))
    model.ir_version = models[0].ir_version
    return model.SerializeToString()
