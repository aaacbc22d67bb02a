"""How far inherited subnets fit their training images beyond validation: accuracy on a fixed random sample
of training images (no augmentation) against the validation split, per supernet and subnet.

Why: a supernet's subnets share weights that see each image several times an epoch (one pass per subnet per
step). Whether inherited subnets trail the same nets trained alone because the shared weights fit the training
images less (under-fitting) or generalise worse (overfitting) decides the lever; compare with `--alone-epochs`.

    python scripts/probe_train_val.py --data ../shared/datasets/cifar10-small \\
        --run /work/bench/q45n --run /work/bench/q45t2 --subnets 0 2 7

Each --run is a bench_supernet_quality.py work folder (supernet.pt and subnets.json). `--alone-epochs E` also
trains the same subnets (of the first run's subnets.json) from scratch for E epochs, as that benchmark's alone
column does (seed = subnet index, one thread), and reports their train - val.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hwnas.data import load_dataset
from hwnas.train.checkpoint import load_supernet
from hwnas.train.evaluate import accuracy, inherited_subnet
from hwnas.train.standalone import train_network

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_supernet_quality import fresh_network  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageFolder root (train/ and val/)")
    ap.add_argument("--run", action="append", required=True, help="a work folder with supernet.pt and subnets.json")
    ap.add_argument("--subnets", type=int, nargs="+", default=[0, 2, 7], help="indices into subnets.json")
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--alone-epochs", type=float, default=None, metavar="E",
                    help="also train the subnets alone for E epochs (the benchmark's single-network recipe) and probe them")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    idx = torch.randperm(ds.train_x.shape[0], generator=torch.Generator().manual_seed(0))[: args.train_images]
    tx, ty = ds.train_x[idx], ds.train_y[idx]
    print("| run | subnet | train acc | val acc | train − val (points) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    first: tuple = ()  # the first run's space and subnets: the ones --alone-epochs trains
    for run in map(Path, args.run):
        sup, _ = load_supernet(run / "supernet.pt")
        subs = json.loads((run / "subnets.json").read_text())
        first = first or (sup.space, subs)
        for i in args.subnets:
            sub = sup.space.validate_subnet(subs[i])
            torch.manual_seed(0)
            net = inherited_subnet(sup, sub, ds, calib_images=2000, device="cpu", batch_size=256)
            tr = accuracy(net, tx, ty, sub.resolution, ds.mean, ds.std, batch_size=500, device="cpu")
            va = accuracy(net, ds.val_x, ds.val_y, sub.resolution, ds.mean, ds.std, batch_size=500, device="cpu")
            print(f"| {run.name} | {i} | {tr:.4f} | {va:.4f} | {100 * (tr - va):+.2f} |", flush=True)
    if args.alone_epochs:
        space, subs = first
        for i in args.subnets:
            net, sub = fresh_network(space.model_dump(mode="json"), subs[i], seed=i)
            r = train_network(net, ds, resolution=sub.resolution, epochs=args.alone_epochs, seed=i, device="cpu")
            tr = accuracy(net, tx, ty, sub.resolution, ds.mean, ds.std, batch_size=500, device="cpu")
            print(f"| alone, {args.alone_epochs:g} epochs | {i} | {tr:.4f} | {r['val_acc']:.4f} | {100 * (tr - r['val_acc']):+.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
