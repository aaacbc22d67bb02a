#!/usr/bin/env python
"""Benchmark: which supernet training recipe makes inherited subnets closest to the same nets trained alone?

Equal epochs, so the comparison does not depend on the machine's load: every recipe variant trains
a supernet from scratch with the real CLI (`hwnas train --config`) for exactly `--epochs` epochs in
all (a preset's phases are scaled together to that total, warm-up along), then the same 8 subnets
(spread evenly in MACs, as `bench_supernet_quality.py` picks them) are evaluated with inherited
weights (BN recalibrated on 2,000 training images). The same 8 subnets are trained alone from
scratch for the same epochs (`train_network`, the single-network recipe). Printed per variant:
mean inherited - alone, Kendall tau (inherited vs alone), Spearman (inherited vs MACs), the
supernet's throughput and wall time.

A variant is a name and the training-config fields it changes (YAML, deep-merged onto the default
config: `{kd_weight: 0}`, `{schedule: progressive}`, `{phases: {sandwich: {lr: 0.05}}}`, or a full
`phases` list whose epochs are shares of the total). WORK keeps everything; a piece whose result
JSON exists is not redone, and a variant killed mid-training goes on from its last checkpoint
(`train --resume`, so a run can span sessions; its wall time is then not recorded). The alone
trainings and the variants run as `--jobs` parallel processes (each trains with 1 CPU thread; on a
GPU they share the device, which is launch-bound, so parallel runs cost little).

    flock /tmp/hwnas-heavy.lock python scripts/bench_recipes.py --work /work/bench/rec --epochs 4 --jobs 2 \\
        --variant sandwich '{}' --variant kd0 '{kd_weight: 0}'
    python scripts/bench_recipes.py --work /tmp/rec --epochs 15 --device cuda --jobs 18 --preset all   # a GPU

Another draw of the alone column (seeds 100 + i), then every finished variant re-scored against the mean of it
and a column measured before (`--alone-acc`, one accuracy per subnet), nothing retrained:

    python scripts/bench_recipes.py --work /work/bench/rec --epochs 4 --alone-seed 1 --existing --alone-acc 0.61 ...
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_supernet_quality import (DEFAULT_DATA, Job, fmt, log, macs_of, make_subset, pick_subnets, r32_space,  # noqa: E402
                                    read_json, run_pool, train_alone_job, write_json, _zero_init)

PRESET_VARIANTS: dict[str, str] = {
    "sandwich": "{}",  # the current default
    "no-zero-init": "{zero_init_residual: false}",  # the default before 2026-11-27
    "kd0": "{kd_weight: 0}",
    "lr0.05": "{phases: {sandwich: {lr: 0.05}}}",
    "lr0.025": "{phases: {sandwich: {lr: 0.025}}}",
    "kd0-lr0.05": "{kd_weight: 0, phases: {sandwich: {lr: 0.05}}}",
    "two-per-step": "{phases: {sandwich: {subnets_per_step: 2}}}",
    "progressive": "{schedule: progressive}",
    "delayed": "{schedule: delayed}",
    "usage": "{grad_scaling: usage}",  # each weight's step scaled by how many of the step's subnets used it
    # sanity check of the machinery: only the largest subnet, no sharing: should match the largest alone
    "largest-only": "{schedule: custom, phases: [{name: full, epochs: 1, lr: 0.1, warmup_epochs: 0.02}]}",
}


def resolved_config(space: Any, data: str, over: dict[str, Any], epochs: float) -> dict[str, Any]:
    """The variant's full training config with its phases scaled to `epochs` in all (warm-up along)."""
    from hwnas.train.config import resolve_config

    cfg = resolve_config(space, data, over)
    scale = epochs / cfg.total_epochs
    cfg = cfg.with_epochs({p.name: p.epochs * scale for p in cfg.phases})
    return cfg.model_copy(update={"eval_at": "end", "eval_subnets": 0}).model_dump(mode="json")


def variant_job(*, out: str, name: str, over: dict[str, Any], data: str, epochs: float, device: str) -> dict[str, Any]:
    """(worker) Train one variant's supernet with the CLI, evaluate the 8 subnets inherited; write and return the result."""
    from scipy.stats import spearmanr

    from hwnas.data import load_dataset
    from hwnas.space import load_space, with_classes
    from hwnas.train.checkpoint import load_supernet
    from hwnas.train.evaluate import evaluate_subnet

    w = Path(out).parent
    work = w.parent.parent
    ds = load_dataset(data)
    space = with_classes(load_space(str(work / "space.yaml")), ds.num_classes)
    cfg = resolved_config(space, data, over, epochs)
    (w / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = w / "sn.pt"
    train: dict[str, Any] = read_json(w / "train.json") if (w / "train.json").is_file() else {}
    if not train:
        # a killed run goes on from its last checkpoint (`train --resume` is exact); its wall time then spans
        # several invocations and is not recorded (`train_seconds_total` still is)
        resume = ckpt.exists()
        t0 = time.time()
        log(f"variant {name}: {'resuming' if resume else 'training'} {epochs:g} epochs ({cfg['schedule']})")
        r = subprocess.run([sys.executable, "-m", "hwnas", "train", "--space", str(work / "space.yaml"), "--data", data,
                            "--out", str(ckpt), "--config", str(w / "cfg.yaml"), "--json", "--no-progress",
                            "--device", device] + (["--resume"] if resume else []),
                           capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if r.returncode:
            raise RuntimeError(f"{name}: hwnas train failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        train = json.loads(r.stdout.strip().splitlines()[-1])
        train["wall_s"] = None if resume else time.time() - t0
        write_json(w / "train.json", train)
    sup, _ = load_supernet(ckpt, map_location=device)
    subs = [space.validate_subnet(s) for s in read_json(work / "subnets.json")]
    rows = [dict(macs=macs_of(space, s), inherited=evaluate_subnet(sup, s, ds, calib_images=2000, device=device))
            for s in subs]
    inh = [r["inherited"] for r in rows]
    res = dict(name=name, config=over, epochs=epochs, wall_s=train["wall_s"], images_per_s=train.get("images_per_s"),
               train_seconds=train.get("train_seconds_total"), device=train.get("device"), load_avg=os.getloadavg()[0],
               mean_inherited=float(np.mean(inh)), spearman=float(spearmanr([r["macs"] for r in rows], inh).statistic),
               rows=rows)
    write_json(Path(out), res)
    log(f"variant {name}: mean inherited {res['mean_inherited']:.4f}, Spearman with MACs {res['spearman']:+.2f}")
    return res


def setup(work: Path, data: str, epochs: float, k: int, seed: int) -> list[Any]:
    """The space (mbv3-cifar at 32x32), the `k` subnets spread in MACs, and the epochs every run gets."""
    from hwnas.data import load_dataset
    from hwnas.space import with_classes

    work.mkdir(parents=True, exist_ok=True)
    space0 = r32_space()
    (work / "space.yaml").write_text(yaml.safe_dump(space0.model_dump(mode="json", exclude_none=True)))
    ds = load_dataset(data)  # decodes once, into the cache every worker then reads
    space = with_classes(space0, ds.num_classes)
    subs = pick_subnets(space, k, seed)
    meta = work / "setup.json"
    if meta.exists():
        old = read_json(meta)
        if abs(old["epochs"] - epochs) > 1e-9 or old["subnets"] != [s.model_dump(mode="json") for s in subs]:
            raise SystemExit(f"{work} was set up for {old['epochs']:g} epochs / other subnets; use another --work")
    write_json(meta, dict(epochs=epochs, subnets=[s.model_dump(mode="json") for s in subs], data=data))
    write_json(work / "subnets.json", [s.model_dump(mode="json") for s in subs])
    return [space, subs]


def main() -> int:
    from scipy.stats import kendalltau

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="everything is kept here; finished pieces are reused")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=float, required=True, help="epochs of every supernet run and of every alone training")
    ap.add_argument("--subnets", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (alone trainings and variants)")
    ap.add_argument("--no-alone", action="store_true",
                    help="train no network alone (half the cost): compare the variants by inherited accuracy, or "
                         "against --alone-acc")
    init = ap.add_mutually_exclusive_group()
    init.add_argument("--alone-plain-init", dest="alone_zero_init", action="store_false",
                      help="the alone networks start without zero-initialised residual blocks (files alone-N.json); "
                           "not the single-network recipe, which zero-inits and scores several points higher")
    init.add_argument("--alone-zero-init", dest="alone_zero_init", action="store_true",
                      help="residual blocks start as the identity (files alone-zi-N.json); without either flag the "
                           "alone networks start as the single-network recipe says (today: zero-init)")
    ap.set_defaults(alone_zero_init=None)  # None: follow StandaloneRecipe.zero_init_residual
    ap.add_argument("--alone-subset", type=int, nargs="+", default=None, metavar="I",
                    help="train only these subnets alone (indices; the others' columns stay empty)")
    ap.add_argument("--alone-acc", type=float, nargs="+", default=None, metavar="ACC",
                    help="the alone accuracies of the subnets, measured before at these epochs (e.g. BENCHMARKS.md, "
                         "another script's draw): with --no-alone the alone column; with draws trained here, one "
                         "more draw of it (the column is the mean of all)")
    ap.add_argument("--alone-seed", type=int, nargs="+", default=[0], metavar="S",
                    help="draws of the alone column: in draw S subnet i trains alone with seed --seed + 100*S + i "
                         "(files alone[-zi]-seedS-i.json; draw 0 is alone[-zi]-i.json); with several draws the "
                         "alone column is their mean. The subnets themselves do not change")
    ap.add_argument("--alone-recipe", nargs=2, default=None, metavar=("NAME", "YAML"),
                    help="the alone networks train with these single-network recipe fields changed, e.g. bs64 "
                         "'{batch_size: 64, lr: 0.07}' (files alone-NAME-...json)")
    ap.add_argument("--train-limit", type=int, default=None, metavar="N", help="a random N training images (smoke tests only)")
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "YAML"), default=[],
                    help="a name and the training-config fields to change (YAML), e.g. kd0 '{kd_weight: 0}'")
    ap.add_argument("--preset", nargs="*", default=[], metavar="NAME",
                    help=f"named variants: {', '.join(PRESET_VARIANTS)} (or 'all')")
    ap.add_argument("--existing", action="store_true",
                    help="also print every variant already finished in WORK/recipes (nothing of them is retrained): "
                         "re-scores them all against this run's alone column")
    a = ap.parse_args()
    work = Path(a.work).resolve()
    data = a.data
    if a.train_limit:
        sub = work / f"data-{a.train_limit}"
        if not sub.exists():
            make_subset(Path(a.data), sub, a.train_limit, a.seed)
        data = str(sub)
    names = list(PRESET_VARIANTS) if a.preset == ["all"] else a.preset
    unknown = [n for n in names if n not in PRESET_VARIANTS]
    if unknown:
        raise SystemExit(f"--preset: unknown {unknown}; known: {', '.join(PRESET_VARIANTS)}")
    variants = [(n, PRESET_VARIANTS[n]) for n in names] + [tuple(v) for v in a.variant]
    if a.existing:
        given = {n for n, _ in variants}
        variants += [(d.name, "{}") for d in sorted((work / "recipes").glob("*"))
                     if d.name not in given and (d / "result.json").exists()]
    if not variants:
        raise SystemExit("give --variant NAME YAML, --preset NAME ... or --existing")
    space, subs = setup(work, data, a.epochs, a.subnets, a.seed)
    t0 = time.time()
    tag = "alone-zi" if _zero_init(a.alone_zero_init) else "alone"
    alone_recipe = None
    if a.alone_recipe:
        tag += f"-{a.alone_recipe[0]}"
        alone_recipe = yaml.safe_load(a.alone_recipe[1]) or {}
        from pydantic import ValidationError

        from hwnas.train.standalone import StandaloneRecipe
        try:  # here, not in the worker: the pool trains the variants first, so a typo would surface hours later
            StandaloneRecipe(**alone_recipe)
        except (TypeError, ValidationError) as e:
            raise SystemExit(f"--alone-recipe: {e}") from None
    alone_jobs = [Job(work / (f"{tag}-{i}.json" if d == 0 else f"{tag}-seed{d}-{i}.json"), train_alone_job,
                      dict(space=space.model_dump(mode="json"), subnet=s.model_dump(mode="json"), data=data,
                           epochs=a.epochs, seed=a.seed + 100 * d + i, index=i, device=a.device, zero_init=a.alone_zero_init,
                           recipe=alone_recipe))
                  for d in dict.fromkeys(a.alone_seed)
                  for i, s in enumerate(subs) if a.alone_subset is None or i in a.alone_subset]
    if a.no_alone:
        alone_jobs = []
    for n, _ in variants:
        (work / "recipes" / n).mkdir(parents=True, exist_ok=True)
    vjobs = [Job(work / "recipes" / n / "result.json", variant_job,
                 dict(name=n, over=yaml.safe_load(y) or {}, data=data, epochs=a.epochs, device=a.device))
             for n, y in variants]
    # one pool: the variants train their supernets while the alone nets train
    results = run_pool(vjobs + alone_jobs, a.jobs)
    alone = {j.out: results[j.out] for j in alone_jobs}
    if any("error" in r for r in alone.values()):
        raise SystemExit(f"alone trainings failed: {[r['error'] for r in alone.values() if 'error' in r]}")
    if a.alone_acc and len(a.alone_acc) != len(subs):
        raise SystemExit(f"--alone-acc: {len(subs)} accuracies needed, got {len(a.alone_acc)}")
    draws: dict[int, list[dict[str, Any]]] = {}  # subnet index -> its alone results, one per draw
    for j in alone_jobs:
        draws.setdefault(j.kwargs["index"], []).append(alone[j.out])
    for i, acc in enumerate(a.alone_acc or []):  # a draw measured before counts as one more
        draws.setdefault(i, []).append({"val_acc": acc})
    by_index = {i: float(np.mean([r["val_acc"] for r in rs])) for i, rs in draws.items()}
    idx = sorted(by_index)
    alone_acc = [by_index[i] for i in idx]
    print(f"\n# bench_recipes: {a.epochs:g} epochs each, {len(subs)} subnets, device {a.device}, data {data}, "
          f"{time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f}\n")
    n_draws = max((len(rs) for rs in draws.values()), default=0)
    print(f"| subnet | MACs (M) | alone acc{f' (mean of {n_draws} draws)' if n_draws > 1 else ''} | each draw | alone img/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for i, s in enumerate(subs):
        rs = draws.get(i, [{}])
        acc = by_index.get(i, float("nan"))
        each = " / ".join(f"{r['val_acc']:.4f}" for r in rs if "val_acc" in r)
        print(f"| {i} | {macs_of(space, s) / 1e6:.1f} | {acc:.4f} | {each} | {rs[0].get('images_per_s') or 0:.0f} |")
    if alone_acc:
        print(f"\nalone: mean {np.mean(alone_acc):.4f}\n")
    print("| variant | config | mean inherited | inherited - alone | Kendall tau | Spearman (acc, MACs) | smallest / largest inherited | img/s | wall s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for j in vjobs:
        r = results.get(j.out, {})
        if "error" in r or not r:
            print(f"| {j.kwargs['name']} | `{json.dumps(j.kwargs['over'])}` | failed: {str(r.get('error'))[:200]} | | | | | | |")
            continue
        ends = f"{r['rows'][0]['inherited']:.3f} / {r['rows'][-1]['inherited']:.3f}"
        inh = [r["rows"][i]["inherited"] for i in idx]
        diff, tau = float("nan"), float("nan")
        if alone_acc:
            diff = float(np.mean(np.array(inh) - np.array(alone_acc)))
            tau = float(kendalltau(inh, alone_acc).statistic)
        print(f"| {r['name']} | `{json.dumps(r['config'])}` | {r['mean_inherited']:.4f} | {diff:+.4f} | {tau:+.2f} | "
              f"{r['spearman']:+.2f} | {ends} | {r['images_per_s'] or 0:.0f} | {fmt(r['wall_s'], '.0f')} |")
    if alone_acc:  # where each variant loses: the per-subnet gaps
        print("\ninherited - alone per subnet (points)\n")
        print("| variant | " + " | ".join(str(i) for i in idx) + " |")
        print("| --- |" + " ---: |" * len(idx))
        for j in vjobs:
            r = results.get(j.out, {})
            if r and "error" not in r:
                gaps = [100 * (r["rows"][i]["inherited"] - by_index[i]) for i in idx]
                print(f"| {r['name']} | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
