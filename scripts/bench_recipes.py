#!/usr/bin/env python
"""Benchmark: which supernet training recipe makes inherited subnets closest to the same nets trained alone?

Runs after `scripts/bench_supernet_quality.py --part quality` has filled its work folder (the 8
subnets spread in MACs, each trained alone: `subnets.json`, `alone-N.json`, the space). Each recipe
variant trains a supernet from scratch with the real CLI (`hwnas train --config`) for exactly the
epochs the alone networks had (equal epochs, so the comparison does not depend on the machine's
load), then evaluates the same 8 subnets with inherited weights (BN recalibrated on 2,000 training
images) and prints inherited - alone, Kendall tau (inherited vs alone) and Spearman (inherited vs
MACs), one row per variant. A variant whose result JSON exists in WORK/recipes/NAME is not redone.

    flock /tmp/hwnas-heavy.lock python scripts/bench_recipes.py --work /work/bench/q30 \\
        --variant lr0.025 '{phases: {sandwich: {lr: 0.025}}}' --variant kd0 '{kd_weight: 0}'

Variants run one after another in this process; start two processes to use two cores (each trains
with 1 thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10-small"


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_variant(work: Path, name: str, over: dict[str, Any], data: str, epochs: float) -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    from hwnas.data import load_dataset
    from hwnas.space import build_plan, plan_cost
    from hwnas.train.checkpoint import load_supernet
    from hwnas.train.evaluate import evaluate_subnet

    w = work / "recipes" / name
    done = w / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    w.mkdir(parents=True, exist_ok=True)
    # equal epochs to the alone networks; warm-up as the time-budgeted default would scale it (2 of 100 epochs)
    base: dict[str, Any] = {"eval_at": "end"}
    if over.get("schedule", "sandwich") == "sandwich":  # another schedule names its own phases' epochs
        base["phases"] = {"sandwich": {"epochs": epochs, "warmup_epochs": 0.02 * epochs}}
    cfg = merge(base, over)
    (w / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    ckpt = w / "sn.pt"
    if not ckpt.is_file():
        r = subprocess.run([sys.executable, "-m", "hwnas", "train", "--space", str(work / "space.yaml"), "--data", data,
                            "--out", str(ckpt), "--config", str(w / "cfg.yaml"), "--json", "--no-progress"],
                           capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if r.returncode:
            raise SystemExit(f"{name}: hwnas train failed:\n{r.stderr[-3000:]}")
    wall = time.time() - t0
    ds = load_dataset(data)
    sup, _ = load_supernet(ckpt)
    space = sup.space
    subs = [space.validate_subnet(s) for s in json.loads((work / "subnets.json").read_text())]
    alone = [json.loads((work / f"alone-{i}.json").read_text())["val_acc"] for i in range(len(subs))]
    rows = []
    for s, a in zip(subs, alone):
        m = plan_cost(build_plan(space, s))[0] / 1e6
        rows.append((m, evaluate_subnet(sup, s, ds, calib_images=2000), a))
    inh = [r[1] for r in rows]
    res = dict(name=name, config=over, epochs=epochs, wall_s=wall, load_avg=os.getloadavg()[0], mean_inherited=float(np.mean(inh)),
               mean_diff=float(np.mean([r[1] - r[2] for r in rows])), tau=float(kendalltau(inh, alone).statistic),
               spearman=float(spearmanr([r[0] for r in rows], inh).statistic), rows=rows)
    done.write_text(json.dumps(res, indent=1))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="a bench_supernet_quality work folder (part quality done)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "YAML"), required=True,
                    help="a name and the training-config fields to change (YAML), e.g. kd0 '{kd_weight: 0}'")
    a = ap.parse_args()
    work = Path(a.work)
    epochs = float(json.loads((work / "supernet.json").read_text())["epochs"])
    results = [run_variant(work, name, yaml.safe_load(y) or {}, a.data, epochs) for name, y in a.variant]
    print(f"\nequal epochs: {epochs:.3f}; subnets and alone accuracies from {work}\n")
    print("| variant | config | mean inherited | mean inherited - alone | Kendall tau | Spearman (acc, MACs) | wall s | load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['name']} | `{json.dumps(r['config'])}` | {r['mean_inherited']:.4f} | {r['mean_diff']:+.4f} | {r['tau']:+.2f} | "
              f"{r['spearman']:+.2f} | {r['wall_s']:.0f} | {r['load_avg']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
