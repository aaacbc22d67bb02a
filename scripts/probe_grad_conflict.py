#!/usr/bin/env python
"""Diagnostic: do the largest subnet's gradients conflict with the other subnets' of a sandwich step?

In a sandwich step the largest subnet (first, the in-place teacher) and the smaller ones sum their
gradients on the shared weights. Where the two disagree (negative inner product), the larger one's
pull can cancel what the smaller ones need: the middle of the space is what loses to the same nets
trained alone (BENCHMARKS.md). This script takes a supernet (a checkpoint, or fresh with `--fresh`),
runs `--batches` sandwich steps of the given config's first phase without updating the weights, and
prints per step the cosine between the largest's gradient and the sum of the others', over all
weights and per weight tensor (share of gradient norm in tensors where they conflict).

    python scripts/probe_grad_conflict.py --work /work/bench/r19 --supernet /work/bench/r19/recipes/kd-half-cut25/sn.pt \\
        --config '{regularize: all}'
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_supernet_quality import DEFAULT_DATA  # noqa: E402

from hwnas.data import load_dataset  # noqa: E402
from hwnas.data.loader import BatchIterator  # noqa: E402
from hwnas.space import load_space, with_classes  # noqa: E402
from hwnas.supernet import Supernet  # noqa: E402
from hwnas.train.step import regularized, step_inputs, subnet_loss  # noqa: E402
from hwnas.train.checkpoint import load_supernet  # noqa: E402
from hwnas.train.config import resolve_config  # noqa: E402
from hwnas.train.phases import sample_step  # noqa: E402


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a bench_recipes.py work folder (space.yaml)")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--supernet", help="a trained supernet checkpoint of that space")
    which.add_argument("--fresh", action="store_true", help="a freshly initialised supernet (zero-init residuals)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--config", default="{}", help="training-config fields changed from the default (YAML, e.g. "
                    "'{regularize: all}': the setting of the recorded run in BENCHMARKS.md)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ds = load_dataset(a.data)
    space = with_classes(load_space(str(Path(a.work) / "space.yaml")), ds.num_classes)
    cfg = resolve_config(space, a.data, yaml.safe_load(a.config) or {})
    if a.fresh:
        torch.manual_seed(0)
        model = Supernet(space)
        model.zero_init_residual()
    else:
        model, _ = load_supernet(Path(a.supernet), map_location="cpu")
    model.train()
    phase = cfg.phases[0]
    it = BatchIterator(ds.train_x, ds.train_y, cfg.batch_size, shuffle=True, seed=1, drop_last=True)
    gen = torch.Generator().manual_seed(1)
    rows = []
    for b, (xb, yb) in enumerate(it):
        if b >= a.batches:
            break
        resolution, subs = sample_step(space, phase, 0, 1, 0, b)
        xs = step_inputs(xb, resolution, ds, cfg, phase, len(subs), gen, torch.device("cpu"))
        reg = regularized(cfg, phase, len(subs))
        model.zero_grad(set_to_none=True)
        model.set_active(subs[0])
        big_logits = model(xs[0])
        subnet_loss(big_logits, yb, None, cfg, reg[0]).backward()
        g_big = grads(model)
        soft = big_logits.detach()
        per_sub = []
        rest = [torch.zeros_like(g) for g in g_big]
        for i in range(1, len(subs)):
            model.zero_grad(set_to_none=True)
            model.set_active(subs[i])
            subnet_loss(model(xs[i]), yb, soft, cfg, reg[i]).backward()
            g = grads(model)
            per_sub.append(g)
            rest = [r + x for r, x in zip(rest, g)]
        flat_big = torch.cat([g.flatten() for g in g_big])
        flat_rest = torch.cat([g.flatten() for g in rest])
        cos = float(flat_big @ flat_rest / (flat_big.norm() * flat_rest.norm() + 1e-12))
        cos_each = [float(flat_big @ torch.cat([x.flatten() for x in g]) /
                          (flat_big.norm() * torch.cat([x.flatten() for x in g]).norm() + 1e-12)) for g in per_sub]
        conflict_norm = sum(float(gb.norm() ** 2) for gb, gr in zip(g_big, rest) if float((gb * gr).sum()) < 0)
        share = conflict_norm / float(flat_big.norm() ** 2 + 1e-12)
        rows.append((cos, *cos_each, share))
        print(f"step {b}: cos(largest, rest) {cos:+.3f}; per subnet " + " ".join(f"{c:+.3f}" for c in cos_each)
              + f"; largest's grad norm^2 in conflicting tensors {share:.2f}", flush=True)
    m = np.array(rows)
    print(f"mean cos(largest, rest) {m[:, 0].mean():+.3f} (steps with cos < 0: {(m[:, 0] < 0).mean():.2f}); "
          f"mean cos with each: " + " ".join(f"{v:+.3f}" for v in m[:, 1:-1].mean(0))
          + f"; mean share of the largest's grad norm^2 in conflicting tensors {m[:, -1].mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
