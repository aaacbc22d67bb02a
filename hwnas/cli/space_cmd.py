"""`hwnas space`: describe a search space."""

from __future__ import annotations

import argparse

from hwnas.cli.common import add_json_flag, emit
from hwnas.space import build_plan, load_space, plan_cost


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="describe a search space: choices, subnet count, MACs and parameter range")
    p.add_argument("--space", required=True, help="preset name (mbv3-imagenet, mbv3-imagenet-w1.2, mbv3-cifar, mbv3-tiny) or a JSON/YAML file")
    add_json_flag(p)
    p.set_defaults(handler=run)


def describe(space_spec: str) -> dict:
    space = load_space(space_spec)
    small = plan_cost(build_plan(space, space.smallest()))
    large = plan_cost(build_plan(space, space.largest()))
    n = space.num_subnets_per_resolution()
    return {
        "space": space.name,
        "num_subnets": n,
        "num_subnets_total": n * len(space.resolutions),
        "resolutions": space.resolutions,
        "macs_min": small[0],
        "macs_max": large[0],
        "params_min": small[1],
        "params_max": large[1],
        "stages": [
            {"out_channels": space.stage_channels(i), "stride": s.stride, "act": s.act, "se": s.se,
             "depths": s.depths, "kernels": s.kernels, "expands": s.expands}
            for i, s in enumerate(space.stages)
        ],
        "num_classes": space.num_classes,
    }


def run(args: argparse.Namespace) -> int:
    d = describe(args.space)
    lines = [
        f"space        {d['space']}",
        f"subnets      {d['num_subnets']:.4g} per resolution x {len(d['resolutions'])} resolutions",
        f"resolutions  {d['resolutions'][0]}..{d['resolutions'][-1]} ({', '.join(map(str, d['resolutions']))})",
        f"MACs         {d['macs_min'] / 1e6:.2f}M .. {d['macs_max'] / 1e6:.2f}M",
        f"params       {d['params_min'] / 1e6:.3f}M .. {d['params_max'] / 1e6:.3f}M",
        "stages:",
    ]
    for i, s in enumerate(d["stages"]):
        lines.append(
            f"  {i + 1}: {s['out_channels']:4d} ch  stride {s['stride']}  {s['act']:6s}  SE {'yes' if s['se'] else 'no ':3s}"
            f"  depth {s['depths']}  kernel {s['kernels']}  expand {s['expands']}"
        )
    emit(args, d, "\n".join(lines))
    return 0
