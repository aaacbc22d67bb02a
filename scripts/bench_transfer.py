"""Benchmark (issue 11): does `hwnas train --init` (transfer) pay, at equal fine-tuning time?

1. pretrain a supernet on five classes of cifar10-small (all their training images);
2. on the other five classes with few images (--per-class, default 200 per class), train the same
   supernet for the same time budget twice: from the pretrained one (`--init`, transfer defaults)
   and from scratch (default config);
3. evaluate the smallest, middle and largest subnets of both (BN recalibrated, the five classes'
   full validation split).

The images are symlinked into a temporary folder (nothing is copied). Run it under the heavy lock:

    flock /tmp/hwnas-heavy.lock python scripts/bench_transfer.py [--pretrain 6m] [--finetune 3m] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-small"


def bench_space(name: str):
    """mbv3-tiny's blocks at CIFAR's 32x32 (default), so that a CPU-minute budget trains several epochs;
    or any preset / space file."""
    from hwnas.space import Space, load_space

    if name != "tiny32":
        return load_space(name)
    d = load_space("mbv3-tiny").to_file_dict()
    d.update(name="mbv3-tiny-32", resolutions=[24, 28, 32], default_resolution=32)
    return Space.model_validate(d)


def link_split(src: Path, dst: Path, classes: list[str], split: str, per_class: int | None) -> None:
    for c in classes:
        files = sorted(p for p in (src / split / c).iterdir() if not p.name.startswith("."))
        (dst / split / c).mkdir(parents=True, exist_ok=True)
        for f in files[:per_class] if per_class else files:
            os.symlink(f, dst / split / c / f.name)


def middle(space):
    """The middle choice of every dimension (depth, kernel, expand), at the evaluation resolution."""
    depths = [s.depths[len(s.depths) // 2] for s in space.stages]
    return space.validate_subnet(dict(
        resolution=space.eval_resolution, depths=depths,
        kernels=[[s.kernels[len(s.kernels) // 2]] * d for s, d in zip(space.stages, depths)],
        expands=[[s.expands[len(s.expands) // 2]] * d for s, d in zip(space.stages, depths)]))


def evaluate(ckpt: Path, data: Path) -> dict[str, float]:
    from hwnas.data import calibration_subset, load_dataset
    from hwnas.train import evaluate_subnet, load_supernet

    net, _ = load_supernet(ckpt)
    ds = load_dataset(str(data))
    calib = calibration_subset(ds, n=1000)
    sp = net.space
    subs = {"smallest": sp.smallest(sp.eval_resolution), "middle": middle(sp), "largest": sp.largest(sp.eval_resolution)}
    return {k: evaluate_subnet(net, s, ds, calib=calib) for k, s in subs.items()}


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--space", default="tiny32", help="tiny32 (mbv3-tiny at 24..32 px, default), or a preset / space file")
    ap.add_argument("--pretrain", default="6m", help="time budget of the pretraining")
    ap.add_argument("--finetune", default="3m", help="time budget of each of transfer and scratch (equal)")
    ap.add_argument("--per-class", type=int, default=200, help="training images per class of the target task")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args()
    import torch

    from hwnas.train import train_supernet

    torch.set_num_threads(1)
    data = Path(a.data)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    src_cls, dst_cls = classes[:5], classes[5:10]
    space = bench_space(a.space)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_start": load_avg(),
                 "space": space.name, "source_classes": src_cls, "target_classes": dst_cls, "per_class": a.per_class,
                 "pretrain_budget": a.pretrain, "finetune_budget": a.finetune}
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        t = Path(tmp)
        for split in ("train", "val"):
            link_split(data, t / "A", src_cls, split, None)
            link_split(data, t / "B", dst_cls, split, a.per_class if split == "train" else None)
        t0 = time.perf_counter()
        log(f"pretrain on {src_cls} ({a.pretrain})")
        r = train_supernet(space, str(t / "A"), t / "A.pt", time_budget=a.pretrain, progress=False)
        res["pretrain"] = {k: r[k] for k in ("epochs", "val_acc_max", "val_acc_min", "seconds")}
        for name, init in (("transfer", t / "A.pt"), ("scratch", None)):
            log(f"{name} on {dst_cls}, {a.per_class}/class ({a.finetune})")
            r = train_supernet(space, str(t / "B"), t / f"{name}.pt", time_budget=a.finetune, progress=False, init=init)
            res[name] = {k: r[k] for k in ("epochs", "seconds", "schedule")}
            res[name]["acc"] = evaluate(t / f"{name}.pt", t / "B")
            log(f"  {name}: {res[name]['acc']}")
        res["total_seconds"] = round(time.perf_counter() - t0, 1)
    res["load_end"] = load_avg()
    res["transfer_wins"] = {k: res["transfer"]["acc"][k] > res["scratch"]["acc"][k] for k in ("smallest", "middle", "largest")}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print("\n| subnet | transfer | scratch |\n| --- | --- | --- |")
    for k in ("smallest", "middle", "largest"):
        print(f"| {k} | {res['transfer']['acc'][k]:.3f} | {res['scratch']['acc'][k]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
