"""Benchmark: are subnets inherited from the progressively-shrunk supernet as good as trained from scratch?

Takes N random subnets of a space (default mbv3-cifar at 32x32), compares their validation
accuracy inherited from the supernet (BN recalibrated, no fine-tuning) with the same
architectures trained from scratch for the same number of epochs on the same data, and
reports the mean difference and Kendall tau between the two rankings (OFA's claim:
inherited >= scratch on average, tau >= 0.6). Also reports training throughput of the
supernet against a static network of the largest subnet.

CPU budget: the full cifar10-small (10k images) for OFA-length schedules would take days on
2 cores, so `--train-images` takes a fixed random subset and `--epochs` sets the phase
epochs (full, kernel, depth1, depth2, expand1, expand2); the scratch baselines get their sum.

    flock /work/heavy.lock /work/venv/bin/python scripts/bench_supernet_quality.py \\
        --data ../shared/datasets/cifar10-small --train-images 2000 --epochs 3 1 1 1 1 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from hwnas.data import BatchIterator, augment_batch, load_dataset
from hwnas.space import build_plan, load_space, plan_cost, with_classes
from hwnas.supernet import StaticNet, init_weights
from hwnas.train.bn import recalibrate_bn
from hwnas.train.checkpoint import load_supernet
from hwnas.train.config import PHASES, default_config
from hwnas.train.evaluate import accuracy, evaluate_subnet
from hwnas.train.losses import training_loss
from hwnas.train.schedule import CosineSchedule, make_optimizer


def make_subset(src: Path, dst: Path, n_train: int, seed: int) -> Path:
    """An ImageFolder of symlinks: a fixed random `n_train` training images (all val images)."""
    files = sorted(p for p in (src / "train").glob("*/*") if p.is_file())
    rng = np.random.default_rng(seed)
    pick = files if n_train >= len(files) else [files[i] for i in sorted(rng.choice(len(files), n_train, replace=False))]
    for p in pick:
        d = dst / "train" / p.parent.name
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name).symlink_to(p.resolve())
    (dst / "val").mkdir(parents=True, exist_ok=True)
    for c in sorted((src / "val").iterdir()):
        if c.is_dir():
            (dst / "val" / c.name).symlink_to(c.resolve(), target_is_directory=True)
    return dst


def train_scratch(net: torch.nn.Module, ds, cfg, epochs: int, resolution: int, seed: int) -> tuple[float, float]:
    """Train a static network with the supernet's phase-1 recipe (no distillation); returns (seconds, img/s)."""
    net.to(memory_format=torch.channels_last).train()
    p = cfg.phases.full
    opt = make_optimizer(net, p.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    it = BatchIterator(ds.train_x, ds.train_y, cfg.batch_size, shuffle=True, seed=seed, drop_last=True)
    sched = CosineSchedule(p.lr, epochs * len(it), round(p.warmup_epochs * len(it)))
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    n = 0
    for e in range(epochs):
        it.set_epoch(e)
        for xb, yb in it:
            x = augment_batch(xb, resolution, ds.mean, ds.std, train=True, generator=g, flip=cfg.flip)
            loss = training_loss(net(x.contiguous(memory_format=torch.channels_last)), yb, None,
                                 label_smoothing=cfg.label_smoothing, kd_weight=0.0, kd_temperature=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sched.apply(opt)
            opt.step()
            sched.step()
            n += xb.shape[0]
    dt = time.perf_counter() - t0
    return dt, n / dt


def _cycle(it: BatchIterator):
    e = 0
    while True:
        it.set_epoch(e)
        yield from it
        e += 1


def static_throughput(net: torch.nn.Module, ds, cfg, resolution: int, steps: int = 8) -> float:
    """Training images/s of a plain network (same batch, augmentation and optimizer as the supernet)."""
    net.to(memory_format=torch.channels_last).train()
    opt = make_optimizer(net, 0.01, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    it = BatchIterator(ds.train_x, ds.train_y, cfg.batch_size, shuffle=True, seed=0, drop_last=True)
    batches = [b for _, b in zip(range(steps + 1), _cycle(it))]
    g = torch.Generator().manual_seed(0)
    n, t = 0, 0.0
    for i, (xb, yb) in enumerate(batches):
        t0 = time.perf_counter()
        x = augment_batch(xb, resolution, ds.mean, ds.std, train=True, generator=g, flip=cfg.flip)
        loss = training_loss(net(x.contiguous(memory_format=torch.channels_last)), yb, None,
                             label_smoothing=cfg.label_smoothing, kd_weight=0.0, kd_temperature=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i > 0:  # first step warms up allocators
            n += xb.shape[0]
            t += time.perf_counter() - t0
    return n / t


def main() -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mbv3-cifar")
    ap.add_argument("--data", default=str(here.parent / "shared" / "datasets" / "cifar10-small"))
    ap.add_argument("--resolution", type=int, default=32, help="train and evaluate at this resolution only")
    ap.add_argument("--train-images", type=int, default=2000)
    ap.add_argument("--epochs", type=int, nargs=6, default=[3, 1, 1, 1, 1, 1], metavar="E",
                    help="epochs of the phases full kernel depth1 depth2 expand1 expand2")
    ap.add_argument("--subnets", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, nargs=2, default=[0.1, 0.03], metavar=("FULL", "LATER"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="keep the supernet and subset here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hwnas-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    base = load_space(args.space)
    if args.resolution not in base.resolutions:
        print(f"--resolution {args.resolution} is not one of {base.resolutions}", file=sys.stderr)
        return 2
    space = base.model_copy(update={"name": f"{base.name}-r{args.resolution}", "resolutions": [args.resolution],
                                    "default_resolution": args.resolution})
    (work / "space.yaml").write_text(yaml.safe_dump(space.model_dump(mode="json", exclude_none=True)))
    subset = work / "data"
    if not subset.exists():
        make_subset(Path(args.data), subset, args.train_images, args.seed)
    ds = load_dataset(str(subset))
    space = with_classes(space, ds.num_classes)

    cfg_d = default_config(space, str(subset)).model_dump()
    for name, e in zip(PHASES, args.epochs):
        cfg_d["phases"][name].update(epochs=e, lr=args.lr[0] if name == "full" else args.lr[1],
                                     warmup_epochs=min(1, e) if name == "full" else 0)
    cfg_d.update(batch_size=args.batch_size, eval_subnets=0, seed=args.seed, checkpoint_every_seconds=600)
    (work / "train.yaml").write_text(yaml.safe_dump(cfg_d))
    from hwnas.train.config import TrainConfig

    cfg = TrainConfig.model_validate(cfg_d)
    total_epochs = cfg.total_epochs

    ckpt = work / "supernet.pt"
    cmd = [sys.executable, "-m", "hwnas", "train", "--space", str(work / "space.yaml"), "--data", str(subset),
           "--out", str(ckpt), "--config", str(work / "train.yaml"), "--device", "cpu", "--json", "--no-progress"]
    if ckpt.exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    sn_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    sn_res = json.loads(proc.stdout.strip().splitlines()[-1])
    log = [json.loads(x) for x in Path(sn_res["metrics"]).read_text().splitlines()]
    phase_ips = {r["phase"]: r["images_per_s"] for r in log if r["type"] == "epoch"}
    print(f"supernet trained: {sn_res['epochs']} epochs, {sn_res['train_seconds_total']:.0f} s of steps, "
          f"{sn_seconds:.0f} s wall", file=sys.stderr, flush=True)

    sup, _ = load_supernet(ckpt)
    rng = np.random.default_rng([args.seed, 4242])
    subs = [space.sample(rng=rng) for _ in range(args.subnets)]
    rows = []
    for i, sub in enumerate(subs):
        inherited = evaluate_subnet(sup, sub, ds, calib_images=2000)
        torch.manual_seed(args.seed + i)
        net = StaticNet(build_plan(space, sub))
        init_weights(net)
        secs, ips = train_scratch(net, ds, cfg, total_epochs, args.resolution, args.seed + i)
        recalibrate_bn(net, ds.train_x[:2000], args.resolution, ds.mean, ds.std)
        scratch = accuracy(net, ds.val_x, ds.val_y, args.resolution, ds.mean, ds.std)
        macs = plan_cost(build_plan(space, sub))[0]
        rows.append(dict(i=i, macs=macs, inherited=inherited, scratch=scratch, scratch_s=secs, scratch_ips=ips))
        print(f"subnet {i}: {macs / 1e6:.1f}M MACs inherited {inherited:.3f} scratch {scratch:.3f} ({secs:.0f} s)",
              file=sys.stderr, flush=True)

    from scipy.stats import kendalltau

    inh = np.array([r["inherited"] for r in rows])
    scr = np.array([r["scratch"] for r in rows])
    tau = float(kendalltau(inh, scr).statistic) if len(rows) > 1 else float("nan")
    largest = sup.extract(space.largest())
    static_ips = static_throughput(largest, ds, cfg, args.resolution)

    load = os.getloadavg()
    print(f"# bench_supernet_quality  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  "
          f"{os.cpu_count()} cores, 1 thread  load avg {load[0]:.1f}/{load[1]:.1f}")
    print(f"space {space.name} ({args.space} choices, resolution {args.resolution} only), data {args.data}: "
          f"{ds.train_x.shape[0]} train / {ds.val_x.shape[0]} val images, batch {args.batch_size}")
    print(f"supernet phases (epochs) {dict(zip(PHASES, args.epochs))} = {total_epochs} epochs; "
          f"scratch baselines: {total_epochs} epochs each, phase-1 recipe without distillation")
    print()
    print("| subnet | MACs (M) | inherited acc | scratch acc | diff |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['i']} | {r['macs'] / 1e6:.1f} | {r['inherited']:.3f} | {r['scratch']:.3f} | {r['inherited'] - r['scratch']:+.3f} |")
    print(f"| mean | | {inh.mean():.3f} | {scr.mean():.3f} | {inh.mean() - scr.mean():+.3f} |")
    print()
    print("| measure | value | target | met |")
    print("| --- | --- | --- | --- |")
    print(f"| mean inherited - scratch | {inh.mean() - scr.mean():+.3f} | >= 0 | {'yes' if inh.mean() >= scr.mean() else 'NO'} |")
    print(f"| Kendall tau (inherited vs scratch ranking) | {tau:.2f} | >= 0.6 | {'yes' if tau >= 0.6 else 'NO'} |")
    print(f"| supernet largest/smallest val acc (end of training) | {sn_res['val_acc_max']:.3f} / {sn_res['val_acc_min']:.3f} | | |")
    print()
    print("| training throughput | images/s |")
    print("| --- | --- |")
    print(f"| static largest subnet (plain StaticNet) | {static_ips:.0f} |")
    for ph in PHASES:
        if ph in phase_ips:
            print(f"| supernet, phase {ph} | {phase_ips[ph]:.0f} |")
    ep = [r for r in log if r["type"] == "epoch"]
    whole = sum(r["images_per_s"] * r["seconds"] for r in ep) / max(sum(r["seconds"] for r in ep), 1e-9)
    print(f"| supernet, whole run | {whole:.0f} |")
    print()
    print("supernet images/s count each batch once, however many subnets a step trains (1/1/2/2/4/4 per phase)")
    print(f"supernet training {sn_res['train_seconds_total']:.0f} s (wall {sn_seconds:.0f} s incl. per-phase evaluation); "
          f"scratch training {sum(r['scratch_s'] for r in rows):.0f} s; whole benchmark {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
