"""Benchmark: is bf16 autocast worth it for supernet training on this CPU?

Times sandwich steps of the mbv3-cifar supernet at 32x32 (batch 128, the small-image default's subnets
per step) in fp32 and under `torch.autocast("cpu", torch.bfloat16)`, channels_last as the trainer
uses, on the same subnets and batches; and one training step of the smallest, a middle and the
largest subnet as a static network (what the alone networks and the direct route train). Prints a
table with the CPU's bf16 support, thread count and load average. Random data: speed only.

    python scripts/bench_cpu_bf16.py --threads 2 --steps 6
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.runtime.ortbench import fingerprint
from hwnas.space import load_space
from hwnas.supernet import Supernet
from hwnas.train.config import default_config
from hwnas.train.phases import sample_step


def cpu_flags() -> str:
    try:
        flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "?"
    return " ".join(f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni") if f in flags.split()) or "none"


def timed_steps(step, n: int) -> list[float]:
    out = []
    for i in range(n + 1):  # the first is a warm-up (allocator, oneDNN primitive creation)
        t0 = time.perf_counter()
        step(i)
        if i:
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = load_space("mbv3-cifar")
    space = base.model_copy(update={"resolutions": [32], "default_resolution": 32})
    cfg = default_config(space, "cifar")
    phase = cfg.phases[-1]
    model = Supernet(space).train()
    x0 = torch.randn(a.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y0 = torch.randint(0, 10, (a.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    rows = []

    def supernet_step(bf16: bool):
        def step(i: int) -> None:
            _, subs = sample_step(space, phase, 0, 0, 0, i % 3)
            opt.zero_grad(set_to_none=True)
            for sub in subs:
                model.set_active(sub)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(model(x0).float(), y0)
                loss.backward()
            opt.step()
        return step

    for bf16 in (False, True):
        t = timed_steps(supernet_step(bf16), a.steps)
        rows.append((f"supernet step, {phase.subnets_per_step} subnets", "bf16" if bf16 else "fp32", float(np.median(t))))
    subs = [space.smallest(), space.sample(np.random.default_rng(3)), space.largest()]
    for name, sub in zip(("smallest", "a middle", "largest"), subs):
        net = model.extract(sub).train().to(memory_format=torch.channels_last)
        o = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
        for bf16 in (False, True):
            def step(i: int, net=net, o=o, bf16=bf16) -> None:
                o.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(net(x0).float(), y0)
                loss.backward()
                o.step()
            rows.append((f"{name} subnet alone, 1 step", "bf16" if bf16 else "fp32", float(np.median(timed_steps(step, a.steps)))))
    load = os.getloadavg()
    print(f"\nCPU: {fingerprint()['cpu_model']} (bf16 flags: {cpu_flags()}), torch {torch.__version__}, {a.threads} threads, "
          f"batch {a.batch}, median of {a.steps} steps, load average {load[0]:.2f} {load[1]:.2f}\n")
    print("| what | precision | s per step | fp32 / bf16 |")
    print("| --- | --- | ---: | ---: |")
    for i in range(0, len(rows), 2):
        (w, _, f32), (_, _, b16) = rows[i], rows[i + 1]
        print(f"| {w} | fp32 | {f32:.3f} | |")
        print(f"| {w} | bf16 | {b16:.3f} | {f32 / b16:.2f}x |")


if __name__ == "__main__":
    main()
