#!/usr/bin/env python
"""Diagnostic: would `torch.compile` make CPU training of one fixed network faster?

generate's direct route and fine-tuning (`train_network`) train one static subnet, so a compiled graph
would be compiled once per network, unlike the elastic supernet (a new graph for each subnet shape).
This script times one fwd+bwd+SGD step (batch 128, channels_last, random data, label smoothing) of the
smallest, one middle and the largest subnet of mbv3-cifar, eager against `torch.compile` (inductor,
default mode): the first step (for compile, the compile time) and the median of the next `--steps` (6).

    python scripts/probe_compile.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas import Supernet, load_space  # noqa: E402
from hwnas.space.cost import macs  # noqa: E402


def step_times(net: torch.nn.Module, resolution: int, compiled: bool, steps: int) -> tuple[float, list[float]]:
    """Seconds of the first step (compile included) and of each of the next `steps`."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    f = torch.compile(net) if compiled else net
    x = torch.randn(128, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(f(x), y, label_smoothing=0.1).backward()
        opt.step()
        return time.perf_counter() - t

    first = step()
    return first, sorted(step() for _ in range(steps))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space("mbv3-cifar")
    sn = Supernet(space)
    subs = {"smallest": space.smallest(32), "middle (sample seed 3)": space.sample(seed=3), "largest": space.largest(32)}
    print(f"probe_compile: mbv3-cifar, batch 128, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.steps} steps\n")
    print("| subnet | res | MACs (M) | eager first s | eager median ms | compiled first s (compile) "
          "| compiled median ms | eager / compiled |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, sub in subs.items():
        row = []
        for compiled in (False, True):
            torch.manual_seed(0)
            net = sn.extract(sub).to(memory_format=torch.channels_last).train()
            first, ts = step_times(net, sub.resolution, compiled, args.steps)
            row.append((first, ts[len(ts) // 2]))
        (ef, em), (cf, cm) = row
        print(f"| {name} | {sub.resolution} | {macs(space, sub) / 1e6:.1f} | {ef:.2f} | {em * 1000:.0f} | {cf:.1f} "
              f"| {cm * 1000:.0f} | {em / cm:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
