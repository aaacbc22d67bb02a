#!/usr/bin/env python
"""Benchmark (issue 11, item 5): `hwnas search` on 1 process against `torchrun --nproc-per-node K`.

The same search (same seed, supernet, table, data) is run as
  1. `python -m hwnas search ...` (one process, torch's default thread count),
  2. the same with OMP_NUM_THREADS=1 (one process, one thread),
  3. `python -m torch.distributed.run --standalone --nproc-per-node K -m hwnas search ...` (K processes, one
     thread each, gloo on CPU),
and a table gives each run's wall seconds (whole command, process start included) and whether its
pareto.json and best.json are byte-identical to run 1's. With no --ckpt, a mbv3-tiny supernet is first
trained on digits (`hwnas train --time-budget`). Run it under `flock /tmp/hwnas-heavy.lock`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    eta = [ln for ln in p.stderr.splitlines() if "ETA" in ln]
    if eta:
        print(f"  {eta[0].strip()}", file=sys.stderr)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None, help="supernet CKPT (default: train mbv3-tiny on digits first)")
    ap.add_argument("--table", default=str(ROOT / "latency_tables" / "mbv3-tiny-cpu-1t.json"))
    ap.add_argument("--data", default="digits")
    ap.add_argument("--train-budget", default="90s", help="--time-budget of the supernet trained when no --ckpt")
    ap.add_argument("--budget-factor", type=float, default=2.0, help="latency budget = factor x the space's minimum")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-images", type=int, default=None)
    ap.add_argument("--search-args", default="", help="extra `hwnas search` arguments, e.g. '--init-samples 30'")
    ap.add_argument("--skip-default-threads", action="store_true",
                    help="leave out run 1 (slow when the cores are shared); the 1-thread run is then the reference")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-search-dist-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    ckpt = args.ckpt
    if ckpt is None:
        ckpt = str(work / "tiny.pt")
        if not Path(ckpt).exists():
            t = _run([py, "-m", "hwnas", "train", "--space", "mbv3-tiny", "--data", args.data, "--out", ckpt,
                      "--time-budget", args.train_budget, "--no-progress"], _env())
            print(f"trained {ckpt} in {t:.0f} s", file=sys.stderr)

    from hwnas.latency import latency_model, load_table
    from hwnas.train import load_supernet

    _, meta = load_supernet(ckpt)
    space = meta.get_space()
    budget = round(args.budget_factor * latency_model(load_table(args.table, space), space).min_latency_ms(), 4)
    base = ["search", "--supernet", ckpt, "--table", args.table, "--budget-ms", str(budget), "--data", args.data,
            "--seed", str(args.seed), "--device", "cpu", "--force", *args.search_args.split()]
    if args.val_images:
        base += ["--val-images", str(args.val_images)]

    runs = [
        ("1 process, default threads", [py, "-m", "hwnas", *base], _env()),
        ("1 process, 1 thread", [py, "-m", "hwnas", *base], _env(OMP_NUM_THREADS="1")),
        (f"torchrun, {args.procs} processes x 1 thread",
         [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.procs), "-m", "hwnas", *base],
         _env(OMP_NUM_THREADS="1")),
    ]
    if args.skip_default_threads:
        runs = runs[1:]
    rows = []
    for i, (name, cmd, env) in enumerate(runs):
        out = work / f"run{i}"
        load = os.getloadavg()[0]
        dt = _run([*cmd, "--out", str(out)], env)
        same = all((out / f).read_bytes() == (work / "run0" / f).read_bytes() for f in ("pareto.json", "best.json"))
        m = re.search(r"real evaluations took ([0-9.]+)s", (out / "search.log").read_text())
        rows.append((name, dt, same, load, float(m.group(1)) if m else float("nan")))
        print(f"  {name}: {dt:.1f} s", file=sys.stderr)

    print(f"\n## hwnas search: 1 process vs torchrun ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, load avg at start {os.getloadavg()[0]:.2f})")
    print(f"space {space.name}, data {args.data}, table {Path(args.table).name}, budget {budget} ms, seed {args.seed}, "
          f"search args '{' '.join(base[14:])}'\n")
    print(f"| run | wall s | scoring s | speed-up vs {runs[0][0]} | same front as {runs[0][0]} | load avg before |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for name, dt, same, load, score in rows:
        print(f"| {name} | {dt:.1f} | {score:.1f} | {rows[0][1] / dt:.2f}x | {'yes' if same else 'NO'} | {load:.2f} |")
    print("\nwall s: the whole command (process start, data loading, search, outputs); scoring s: the time spent scoring "
          "subnets for real (search.log), what torchrun divides.")


if __name__ == "__main__":
    main()
