#!/usr/bin/env python
"""Benchmark: which single-network recipe trains a fixed net of the space best in the epochs a CPU budget gives?

The single-network recipe (`hwnas.train.standalone.StandaloneRecipe`) is what generate's direct route trains
the chosen subnet with at CPU scale, and what the supernet's alone twins are trained with. Every variant
trains the same uniform net of mbv3-cifar at 32x32 (`--arch D K E`) from the same seeded initialisation for
exactly `--epochs` epochs (equal epochs: the comparison does not depend on the machine's load; the seconds
of steps are printed too, for variants that change the cost of a step), on all of
`../shared/datasets/cifar10-small`, and is scored on its 2,000 validation images. A variant is a name and
the recipe fields it changes (YAML): `{weight_decay: 5e-4}`, `{cutout: 0.5}`. WORK keeps every result; a
variant whose JSON exists is not redone. Variants run as `--jobs` parallel processes, 1 CPU thread each.

    flock /tmp/hwnas-heavy.lock python scripts/bench_standalone_recipe.py --work /work/bench/rs --epochs 25 \\
        --variant base '{}' --variant wd5e-4 '{weight_decay: 5e-4}' --variant cutout '{cutout: 0.5}'
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_supernet_quality import (DEFAULT_DATA, Job, _fresh_net, log, macs_of, parse_duration, r32_space,  # noqa: E402
                                    read_json, run_pool, uniform_nets, write_json)


def recipe_job(*, out: str, name: str, over: dict[str, Any], space: dict[str, Any], subnet: dict[str, Any],
               data: str, epochs: float | None, time_budget_s: float | None, seed: int, device: str) -> dict[str, Any]:
    """(worker) Train the net from scratch with the default recipe changed by `over`; write and return the result."""
    from hwnas.space import Space
    from hwnas.train.standalone import StandaloneRecipe, train_network

    recipe = StandaloneRecipe.model_validate(over)
    net, sub, ds = _fresh_net(space, subnet, data, seed, recipe.zero_init_residual)
    length = f"{epochs:g} epochs" if epochs else f"{time_budget_s:g} s"
    log(f"{name}: {macs_of(Space.model_validate(space), sub) / 1e6:.1f}M MACs, {length}, {over}")
    r = train_network(net, ds, resolution=sub.resolution, epochs=epochs, time_budget_s=time_budget_s, recipe=recipe,
                      seed=seed, label=name, device=device, progress=True)
    res = dict(r, name=name, over=over, seed=seed, recipe=recipe.model_dump(mode="json"))
    write_json(Path(out), res)
    log(f"{name}: val acc {r['val_acc']:.4f} after {r['seconds']:.0f} s")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="every result is kept here; finished variants are reused")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--arch", type=int, nargs=3, default=[2, 5, 3], metavar=("DEPTH", "KERNEL", "EXPAND"),
                    help="the uniform net of mbv3-cifar at 32x32 every variant trains")
    length = ap.add_mutually_exclusive_group(required=True)
    length.add_argument("--epochs", type=float, help="equal epochs (load does not change the result)")
    length.add_argument("--time-budget", type=parse_duration, metavar="DURATION",
                        help="equal seconds of steps, e.g. 45m (what a user's time budget buys; run the variants side "
                             "by side so they share the machine alike)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="train every variant once per seed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "YAML"), default=[], required=True,
                    help="a name and the recipe fields to change, e.g. wd5e-4 '{weight_decay: 5e-4}'")
    a = ap.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    space = r32_space()
    sub = uniform_nets(space)[tuple(a.arch)]
    tag = f"{a.arch[0]}{a.arch[1]}{a.arch[2]}-" + (f"e{a.epochs:g}" if a.epochs else f"t{a.time_budget:g}")
    jobs = []
    for name, text in a.variant:
        over = yaml.safe_load(text) or {}
        if not isinstance(over, dict):
            raise SystemExit(f"variant {name}: give a YAML mapping of recipe fields, got {text!r}")
        for seed in a.seeds:
            jobs.append(Job(work / f"{tag}-{name}-s{seed}.json", recipe_job, dict(
                name=name, over=over, space=space.model_dump(mode="json"), subnet=sub.model_dump(mode="json"),
                data=a.data, epochs=a.epochs, time_budget_s=a.time_budget, seed=seed, device=a.device)))
    log(f"{len(jobs)} trainings, {a.jobs} at a time; load {os.getloadavg()[0]:.2f}")
    results = run_pool(jobs, a.jobs)
    print(f"\nuniform net {tuple(a.arch)} of mbv3-cifar at 32x32, {macs_of(space, sub) / 1e6:.1f}M MACs, "
          + (f"{a.epochs:g} epochs" if a.epochs else f"{a.time_budget:g} s of steps") + f", data {a.data}\n")
    print("| variant | changes | seed | val acc | epochs | final loss | steps s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for j in jobs:
        r = results.get(j.out) or read_json(j.out)
        if "error" in r:
            print(f"| {j.kwargs['name']} | {j.kwargs['over']} | {j.kwargs['seed']} | error: {r['error']} | | | |")
            continue
        print(f"| {r['name']} | {r['over'] or 'default'} | {r['seed']} | {r['val_acc']:.4f} | {r['epochs']:.1f} | {r['final_loss']:.3f} "
              f"| {r['seconds']:.0f} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
