#!/usr/bin/env python
"""Benchmark: what one supernet training step costs on CUDA, cold and warm, per memory format.

Times sandwich steps (batch 128, the default phase of mbv3-cifar at 32x32, bf16 autocast) in a
fresh process per setting: the first step, steps on subnets never seen before, and the same steps
again. Shows the per-shape cost that cuDNN's compiled channels_last kernels add, which is why
training uses contiguous tensors on CUDA (`hwnas.train.distributed.memory_format_for`).

    python scripts/bench_cuda_step.py --data ../shared/datasets/cifar10-small
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

SETTINGS = ("channels_last", "contiguous", "channels_last-nocudnn")


def run_one(data: str, setting: str) -> list[float]:
    import torch

    from hwnas.data import augment_batch, load_dataset
    from hwnas.space import load_space, with_classes
    from hwnas.supernet import Supernet
    from hwnas.train.step import step_loss
    from hwnas.train.config import default_config
    from hwnas.train.phases import sample_step
    from hwnas.train.schedule import make_optimizer

    torch.backends.cudnn.enabled = not setting.endswith("nocudnn")
    fmt = torch.contiguous_format if setting == "contiguous" else torch.channels_last
    dev = torch.device("cuda")
    ds = load_dataset(data)
    space = load_space("mbv3-cifar")
    space = with_classes(space.model_copy(update={"resolutions": [32], "default_resolution": 32}), ds.num_classes)
    cfg = default_config(space, data)
    phase = cfg.phases[0]
    model = Supernet(space).to(device=dev, memory_format=fmt).train()
    opt = make_optimizer(model, 0.05, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    xb, yb = ds.train_x[:128].to(dev), ds.train_y[:128].to(dev)

    def steps(idx: range) -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in idx:
            res, subs = sample_step(space, phase, 0, 0, 0, i)
            x = augment_batch(xb, res, ds.mean, ds.std, train=True).contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                float(step_loss(model, model, x, yb, subs, phase, cfg, None))
            opt.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / len(idx)

    return [steps(range(0, 1)), steps(range(1, 21)), steps(range(21, 61)), steps(range(1, 21))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageFolder root (train/ and val/), e.g. cifar10-small")
    ap.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)  # one setting, in a child process
    args = ap.parse_args()
    if args.setting:
        print(" ".join(f"{t:.4f}" for t in run_one(args.data, args.setting)))
        return 0
    import torch

    print(f"# bench_cuda_step  {torch.cuda.get_device_name(0)}  torch {torch.__version__}\n")
    print("| memory format | first step | steps 1-20 (new subnets) | steps 21-60 (new subnets) | steps 1-20 again |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for s in SETTINGS:  # a fresh process each: cuDNN's caches are per process
        out = subprocess.run([sys.executable, __file__, "--data", args.data, "--setting", s],
                             capture_output=True, text=True, check=True).stdout.split()
        t = [float(v) for v in out[-4:]]
        print(f"| {s} | {t[0]:.2f} s | {t[1] * 1e3:.0f} ms | {t[2] * 1e3:.0f} ms | {t[3] * 1e3:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
