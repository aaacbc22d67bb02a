#!/usr/bin/env python
"""Diagnostic: how far is the in-place teacher's soft target from what it would say on its student's view?

With `augment_per_subnet` each subnet of a sandwich step trains on its own random crop and flip of the
batch, and the step's largest subnet (the in-place teacher) also gets the cutout. Its soft targets come
from its own view, so a student is pulled towards the teacher's prediction on another crop of the same
image, with a square blanked. This script takes a trained supernet, builds its largest subnet (BN
recalibrated, eval mode) and compares, on a fixed sample of training images, the teacher's predictions
on four views: A (a crop and flip), A with the cutout (what the teacher trains on), B and B2 (two more
independent crops and flips, what students see). It prints each view's training accuracy and entropy,
and the mean KL and argmax agreement between pairs: B || A-with-hole is the target noise a student gets
today; B || B2 the part due to the crop alone; A || A-with-hole the part due to the hole alone.

    python scripts/probe_kd_view.py --work /work/bench/r11 --supernet /work/bench/r11/recipes/e11-rule-off/sn.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_supernet_quality import DEFAULT_DATA  # noqa: E402

from hwnas.data import augment_batch, load_dataset  # noqa: E402
from hwnas.data.augment import cutout_batch  # noqa: E402
from hwnas.space import load_space, with_classes  # noqa: E402
from hwnas.train.checkpoint import load_supernet  # noqa: E402
from hwnas.train.evaluate import inherited_subnet  # noqa: E402


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row."""
    return (p * (p.clamp_min(1e-8).log() - q.clamp_min(1e-8).log())).sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="a bench_recipes.py work folder (its space.yaml)")
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--cutout", type=float, default=0.25, help="the teacher's cutout fraction")
    ap.add_argument("--images", type=int, default=2000, help="training images sampled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ds = load_dataset(str(args.data))
    space = with_classes(load_space(str(Path(args.work) / "space.yaml")), ds.num_classes)
    sup, _ = load_supernet(args.supernet, space=space)
    sub = space.largest()
    net = inherited_subnet(sup, sub, ds).eval()
    res = sub.resolution
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(ds.train_x.shape[0], generator=g)[: args.images]
    xs, ys = ds.train_x[idx], ds.train_y[idx]

    def view(x: torch.Tensor) -> torch.Tensor:
        return augment_batch(x, res, ds.mean, ds.std, train=True, generator=g, flip=True)

    probs: dict[str, list[torch.Tensor]] = {k: [] for k in ("A", "A with hole", "B", "B2")}
    with torch.no_grad():
        for i in range(0, len(xs), 250):
            x = xs[i : i + 250]
            a = view(x)
            views = {"A": a, "A with hole": cutout_batch(a.clone(), args.cutout, g), "B": view(x), "B2": view(x)}
            for k, v in views.items():
                probs[k].append(F.softmax(net(v), 1))
    p = {k: torch.cat(v) for k, v in probs.items()}
    print(f"largest subnet, {len(xs)} training images, teacher cutout {args.cutout}")
    print("| view | train acc | entropy |\n| --- | ---: | ---: |")
    for k, q in p.items():
        ent = float(-(q * q.clamp_min(1e-8).log()).sum(1).mean())
        print(f"| {k} | {float((q.argmax(1) == ys).float().mean()):.4f} | {ent:.3f} |")
    print("| pair | mean KL | argmax agree |\n| --- | ---: | ---: |")
    for a, b in (("B", "A with hole"), ("B", "B2"), ("B", "A"), ("A", "A with hole")):
        agree = float((p[a].argmax(1) == p[b].argmax(1)).float().mean())
        print(f"| KL({a} ‖ {b}) | {float(kl(p[a], p[b]).mean()):.4f} | {agree:.4f} |")


if __name__ == "__main__":
    main()
