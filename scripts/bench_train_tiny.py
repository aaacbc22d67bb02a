"""Benchmark: the default `hwnas train --space mbv3-tiny --data digits` (what `hwnas generate` runs).

Target (issue 4): finishes in <= 7 minutes on a 2-core CPU with validation accuracy >= 95% for
the largest and >= 85% for the smallest subnet (BN recalibrated, no fine-tuning).

    flock /work/heavy.lock /work/venv/bin/python scripts/bench_train_tiny.py [--epochs-scale F] [--config FILE]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--config", default=None)
    ap.add_argument("--keep", default=None, help="keep the checkpoint at this path")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "tiny-digits.pt"
        cmd = [sys.executable, "-m", "hwnas", "train", "--space", "mbv3-tiny", "--data", "digits", "--out", str(out),
               "--epochs-scale", str(args.epochs_scale), "--json", "--no-progress"]
        if args.config:
            cmd += ["--config", args.config]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"train failed with exit {proc.returncode}")
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        evals = [json.loads(line) for line in Path(res["metrics"]).read_text().splitlines()]
    load = os.getloadavg()
    print(f"# bench_train_tiny  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  "
          f"{os.cpu_count()} cores  load avg {load[0]:.1f}/{load[1]:.1f}  epochs-scale {args.epochs_scale}")
    print()
    print("| phase | epoch | loss | img/s | smallest | largest | random subnets |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    last_epoch: dict = {}
    for r in evals:
        if r["type"] == "epoch":
            last_epoch = r
        elif r["type"] == "eval":
            acc = r["acc"]
            rnd = ", ".join(f"{v:.3f}" for k, v in acc.items() if k.startswith("random"))
            print(f"| {r['phase']} | {r['epoch']} | {last_epoch.get('loss', float('nan')):.3f} | "
                  f"{last_epoch.get('images_per_s', 0):.0f} | {acc['smallest']:.3f} | {acc['largest']:.3f} | {rnd} |")
    print()
    ok_t, ok_max, ok_min = wall <= 420, res["val_acc_max"] >= 0.95, res["val_acc_min"] >= 0.85
    print("| measure | value | target | met |")
    print("| --- | --- | --- | --- |")
    print(f"| wall time (whole command) | {wall:.0f} s | <= 420 s | {'yes' if ok_t else 'NO'} |")
    print(f"| training time (steps only) | {res['train_seconds_total']:.0f} s | | |")
    print(f"| val acc, largest subnet | {res['val_acc_max']:.3f} | >= 0.95 | {'yes' if ok_max else 'NO'} |")
    print(f"| val acc, smallest subnet | {res['val_acc_min']:.3f} | >= 0.85 | {'yes' if ok_min else 'NO'} |")
    print(f"| epochs | {res['epochs']} | | |")
    return 0 if (ok_t and ok_max and ok_min) else 3


if __name__ == "__main__":
    sys.exit(main())
