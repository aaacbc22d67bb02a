#!/usr/bin/env python
"""Benchmark `hwnas generate` as a new user meets it, and fp32 vs INT8 export.

Part 1: three budgets on the embedded default (digits, mbv3-tiny), each run through the real
CLI (`hwnas generate --json`, a fresh process). The first run starts from an empty
XDG_CACHE_HOME, so it includes profiling this machine and training the supernet; the other
two reuse those caches. Prints wall time per stage, measured vs predicted latency, accuracy.

Part 2: one subnet of mbv3-cifar on ../shared/datasets/cifar10-small, exported fp32 and INT8
(ONNX Runtime static QDQ): latency (1 thread, median) and validation accuracy of both. The
supernet is trained briefly, only on that subnet (`--cifar-epochs` epochs, default 4, of SGD with the
subnet active), which is enough to make the accuracy comparison meaningful, not to be good.

Run it alone: `flock /work/heavy.lock python scripts/bench_generate.py` (latency is noise-sensitive).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_generate(budget: float, out: Path, env: dict[str, str], log: Path) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "hwnas", "generate", "--budget-ms", str(budget), "--out", str(out), "--json"]
    t = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 3):  # 3: no candidate measured within the budget (the JSON is still printed)
        raise SystemExit(f"generate --budget-ms {budget} failed (exit {p.returncode}); see {log}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def part1(budgets: list[float], work: Path) -> list[dict]:
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "xdg-cache"))
    rows = []
    for i, b in enumerate(budgets):
        out = work / f"generate-{b:g}ms"
        r, wall = run_generate(b, out, env, work / f"generate-{b:g}ms.log")
        rows.append(dict(r, wall=wall))
        print(f"  run {i + 1}: budget {b:g} ms done in {wall:.1f} s (cache table {r['cache']['table']}, supernet {r['cache']['supernet']})",
              file=sys.stderr, flush=True)
    return rows


def print_part1(rows: list[dict]) -> None:
    print("\n## generate on the default (digits, mbv3-tiny)\n")
    hdr = ["budget ms", "caches (table/supernet)", "profile s", "train s", "search s", "export s", "total wall s",
           "predicted ms", "measured ms", "meas/budget", "val acc (ORT)", "subnet res", "MACs"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---:" for _ in hdr) + "|")
    for r in rows:
        s = r["stage_seconds"]
        print("| " + " | ".join([
            f"{r['budget_ms']:g}", f"{r['cache']['table']}/{r['cache']['supernet']}", f"{s.get('profile', 0):.1f}",
            f"{s.get('train', 0):.1f}", f"{s.get('search', 0):.1f}", f"{s.get('export', 0):.1f}", f"{r['wall']:.1f}",
            f"{r['predicted_latency_ms']:.4f}", f"{r['measured_latency_ms']:.4f}", f"{r['measured_latency_ms'] / r['budget_ms']:.2f}",
            f"{r['val_acc']:.4f}", str(r["subnet"]["resolution"]), f"{r['macs'] / 1e6:.2f}M",
        ]) + " |")
    for r in rows:
        exports = [a for a in r["attempts"] if a.get("kind", "export") == "export"]
        if len(exports) > 1 or r["warnings"] or not r["within_budget"]:
            print(f"\nbudget {r['budget_ms']:g}: {len(exports)} export attempt(s) of {len(r['attempts'])} measured"
                  + ("" if r["within_budget"] else ", none within the budget (exit 3)") + f"; warnings: {r['warnings']}")


def part2(data: str, epochs: int, work: Path, train_images: int | None = None) -> dict:
    import torch
    from torch import nn

    from hwnas import Supernet, load_space
    from hwnas.data import BatchIterator, augment_batch, load_dataset
    from hwnas.export import export_subnet
    from hwnas.space import with_classes

    torch.manual_seed(0)
    t0 = time.perf_counter()
    ds = load_dataset(data)
    space = with_classes(load_space("mbv3-cifar"), ds.num_classes)
    sub = space.validate_subnet(dict(resolution=32, depths=[2, 2, 2, 2, 2], kernels=[[3, 5], [3, 5], [3, 5], [3, 3], [3, 3]],
                                     expands=[[3, 4], [3, 3], [3, 3], [3, 3], [3, 3]]))
    net = Supernet(space)
    net.set_active(sub)
    params = [p for p in net.parameters() if p.requires_grad]
    n = min(train_images or len(ds.train_y), len(ds.train_y))
    idx = torch.randperm(len(ds.train_y), generator=torch.Generator().manual_seed(0))[:n]  # a class-balanced-ish subset
    it = BatchIterator(ds.train_x[idx], ds.train_y[idx], 128, shuffle=True, seed=0, drop_last=True)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=epochs * len(it), pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    net.train()
    for ep in range(epochs):
        it.set_epoch(ep)
        for xb, yb in it:
            x = augment_batch(xb, sub.resolution, ds.mean, ds.std, train=True, generator=g)
            loss = loss_fn(net(x), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"  cifar: epoch {ep + 1}/{epochs} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    net.eval()
    r = export_subnet(net, sub, ds, work / "cifar" / "model.onnx", int8=True, force=True, progress=True)
    return dict(r.model_dump(mode="json"), train_seconds=train_s, epochs=epochs, train_images=n)


def print_part2(r: dict, data: str) -> None:
    print(f"\n## fp32 vs INT8: one subnet of mbv3-cifar on {data}\n")
    print(f"subnet: resolution {r['resolution']}, {r['macs'] / 1e6:.2f}M MACs, {r['params'] / 1e6:.3f}M params; "
          f"trained {r['epochs']} epoch(s) on {r['train_images']} training images, that subnet only ({r['train_seconds']:.0f} s); "
          f"{r['val_images']} validation images; latency: ONNX Runtime, {r['threads']} thread, batch 1, median\n")
    print("| model | latency ms | val acc | max abs diff vs PyTorch |")
    print("|---|---:|---:|---:|")
    print(f"| fp32 | {r['measured_latency_ms']:.3f} | {r['val_acc']:.4f} | {r['max_abs_diff']:.2e} |")
    print(f"| INT8 (QDQ, static, per-channel) | {r['int8_measured_latency_ms']:.3f} | {r['int8_val_acc']:.4f} | - |")
    print(f"\nINT8 accuracy change {r['int8_acc_change']:+.4f}, speed-up {r['int8_speedup']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs=3, default=[0.06, 0.1, 0.15], help="ms, first one runs on an empty cache")
    ap.add_argument("--cifar", default=str(ROOT.parent / "shared" / "datasets" / "cifar10-small"))
    ap.add_argument("--cifar-epochs", type=int, default=4)
    ap.add_argument("--cifar-train-images", type=int, help="train on N random training images only (default all)")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--work", help="keep outputs here (default: a temporary folder)")
    args = ap.parse_args()
    import torch

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-generate-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_generate ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}); outputs in {work}")
    if not args.skip_generate:
        print_part1(part1(args.budgets, work))
    if not args.skip_int8:
        torch.set_num_threads(os.cpu_count() or 1)
        print_part2(part2(args.cifar, args.cifar_epochs, work, args.cifar_train_images), args.cifar)


if __name__ == "__main__":
    main()
