#!/usr/bin/env python
"""Diagnostic: how much do a subnet's residual blocks contribute, inherited from the supernet vs trained alone?

A residual MBConv adds `BN(project(...))` to its input; with zero-initialised residual blocks that BN's
scale starts at 0 and the block is the identity. The mean |scale| of that last BN is, to first order, the
branch's output standard deviation next to a skip path of about 1, so it says how far each block moved
from the identity. This script trains one subnet of a `bench_recipes.py` work folder alone (the
single-network recipe, zero-init, as `bench_recipes.py --alone-zero-init` does) and prints, block by
block, that scale for the trained-alone network and for the same blocks inherited from a supernet
checkpoint, with both accuracies.

    python scripts/probe_residual_scale.py --work /work/bench/rwd --supernet /work/bench/rwd/recipes/wd5e-4/sn.pt \
        --subnet 3 --epochs 7
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_supernet_quality import DEFAULT_DATA, fresh_network  # noqa: E402

from hwnas.data import load_dataset  # noqa: E402
from hwnas.space import load_space, with_classes  # noqa: E402
from hwnas.supernet import MBConv  # noqa: E402
from hwnas.train.checkpoint import load_supernet  # noqa: E402
from hwnas.train.evaluate import evaluate_subnet  # noqa: E402
from hwnas.train.standalone import train_network  # noqa: E402


def residual_scales(net: torch.nn.Module) -> list[tuple[int, float]]:
    """(block index, mean |scale| of the last BN) for every residual MBConv, in order."""
    out = []
    for i, m in enumerate(b for b in net.modules() if isinstance(b, MBConv)):
        if m.plan.residual:
            out.append((i, float(m.project[1].weight.detach().abs().mean())))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a bench_recipes.py work folder (space.yaml, subnets.json)")
    ap.add_argument("--supernet", required=True, help="a trained supernet checkpoint of that space")
    ap.add_argument("--subnet", type=int, required=True, help="index into subnets.json")
    ap.add_argument("--epochs", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--no-alone", action="store_true",
                    help="print the inherited scales only (seconds, not a training): to compare supernets of one work "
                         "folder against an alone column measured before")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(a.work)
    ds = load_dataset(a.data)
    space = with_classes(load_space(str(work / "space.yaml")), ds.num_classes)
    sub = space.validate_subnet(json.loads((work / "subnets.json").read_text())[a.subnet])

    sup, _ = load_supernet(Path(a.supernet), map_location="cpu")
    inherited_acc = evaluate_subnet(sup, sub, ds, calib_images=2000)
    inherited = residual_scales(sup.extract(sub))

    if a.no_alone:
        print(f"subnet {a.subnet}: depths {sub.depths}; inherited accuracy {inherited_acc:.4f} ({a.supernet})")
        print("| block | mean abs scale, inherited |")
        print("| ---: | ---: |")
        for i, s_inh in inherited:
            print(f"| {i} | {s_inh:.3f} |")
        print(f"| mean | {sum(s for _, s in inherited) / len(inherited):.3f} |")
        return 0

    net, _ = fresh_network(space.model_dump(mode="json"), sub.model_dump(mode="json"), a.seed, zero_init=True)
    t0 = time.time()
    r = train_network(net, ds, resolution=sub.resolution, epochs=a.epochs, seed=a.seed, label=f"alone {a.subnet}")
    alone = residual_scales(net)

    print(f"subnet {a.subnet}: depths {sub.depths}; {a.epochs:g} epochs alone in {time.time() - t0:.0f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"accuracy: inherited {inherited_acc:.4f}, alone {r['val_acc']:.4f}")
    print("| block | mean abs scale, inherited | mean abs scale, alone | inherited / alone |")
    print("| ---: | ---: | ---: | ---: |")
    for (i, s_inh), (_, s_al) in zip(inherited, alone):
        print(f"| {i} | {s_inh:.3f} | {s_al:.3f} | {s_inh / s_al:.2f} |")
    mi = sum(s for _, s in inherited) / len(inherited)
    ma = sum(s for _, s in alone) / len(alone)
    print(f"| mean | {mi:.3f} | {ma:.3f} | {mi / ma:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
