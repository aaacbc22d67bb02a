#!/usr/bin/env python
"""Benchmark: is the trained supernet worth it?

Part 1, `quality`: are subnets inherited from the supernet as good as the same networks
trained alone, and ranked right? The space is mbv3-cifar restricted to 32x32. The supernet is
trained by the real CLI (`hwnas train --time-budget`); then `--subnets` subnets spread evenly
in MACs (smallest, largest, and the closest random subnets to evenly spaced MAC targets) are
evaluated with inherited weights (BN recalibrated on 2,000 training images) and trained alone
from scratch (`hwnas.train.standalone.train_network`) for as many epochs as the whole
supernet run. Reports inherited - alone (target: mean >= -0.01), Kendall tau of the two
rankings (>= 0.7), Spearman of inherited accuracy vs MACs (>= 0.8), and how well
`hwnas train` kept its time budget (within +-10%).

Part 2, `generate`: does `hwnas generate --time-budget T` beat the obvious alternative, a
fixed MobileNetV3-style network trained alone for the same time T? Three latency budgets
(1.05 x the predicted latency of the uniform nets (d,k,e) = (2,3,3), (3,5,4), (4,7,6) at
32x32, from a latency table of this machine). The baseline for a budget is the uniform net
(same depth in every stage, same kernel and expand in every block, 32x32) with the most MACs
whose predicted latency fits it. The generates run one after another (they share a supernet
cached under WORK/xdg-cache); the baselines train in worker processes meanwhile, never more
than `--jobs` busy processes in all. Baseline latencies are measured at the end, when nothing
else runs, with the table's protocol (the same export and measurement as `hwnas export`).

Data: ../shared/datasets/cifar10-small (ImageFolder, 10,000 train / 2,000 val, 32x32), all
images (`--train-limit N`: a random N training images, for smoke tests only). Everything is
kept in --work; a piece whose result JSON exists there is not redone, so a killed run
continues where it stopped. Results: stdout (markdown) and WORK/results.json.

Full runs (each takes the whole machine for about 1.5-2 h; run them alone):

    flock /tmp/hwnas-heavy.lock python scripts/bench_supernet_quality.py --work /work/bench-q \\
        --part quality --supernet-budget 45m
    flock /tmp/hwnas-heavy.lock python scripts/bench_supernet_quality.py --work /work/bench-g \\
        --part generate --generate-budget 45m

Smoke test (a few minutes):

    python scripts/bench_supernet_quality.py --work /tmp/bq-smoke --part quality \\
        --train-limit 300 --supernet-budget 150s --subnets 3
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from hwnas.latency.pieces import mixed_pool
from hwnas.space import Space, Subnet, build_plan, load_space, plan_cost, with_classes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10-small"
RESOLUTION = 32
CALIB_IMAGES = 2000
SUBNET_POOL = 20_000
"""Random subnets drawn to find one close in MACs to each target."""
TARGET_MEAN_DIFF, TARGET_TAU, TARGET_SPEARMAN = -0.01, 0.7, 0.8
BUDGET_TIME_TOLERANCE = 0.10
"""`hwnas train` keeps its time budget when its wall time is within this fraction of it."""
BUDGET_ANCHORS: tuple[tuple[int, int, int], ...] = ((2, 3, 3), (3, 5, 4), (4, 7, 6))
BUDGET_MARGIN = 1.05
LATENCY_TOLERANCE = 0.05
"""A measured latency up to this fraction over the budget counts as within (as hwnas.generate.BUDGET_TOLERANCE)."""
EXIT_NO_CANDIDATE = 3
"""`hwnas generate` exit code: no candidate measured within the budget."""


# ---------------------------------------------------------------------------- small helpers

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_duration(text: str) -> float:
    """'2700', '2700s', '45m', '1.5h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 2700, 2700s, 45m, 1.5h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, obj: Any) -> None:
    """Atomic: a killed run never leaves a half-written result that would be taken as done."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def last_json_line(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise ValueError("the command printed nothing on stdout")
    return json.loads(lines[-1])


def run_cli(cmd: list[str], env: dict[str, str] | None = None, one_thread: bool = True) -> tuple[int, str, float]:
    """Run a command with one intra-op thread (`one_thread=False`: as many as the CLI itself takes, the
    idle cores); stderr streams to ours. Returns (exit code, stdout, wall s)."""
    env = dict(os.environ if env is None else env)
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    else:
        env.pop("OMP_NUM_THREADS", None)
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    return p.returncode, p.stdout, time.perf_counter() - t0


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


def macs_of(space: Space, sub: Subnet) -> int:
    return int(plan_cost(build_plan(space, sub))[0])


def budget_tag(b: float) -> str:
    return f"{b:.3f}".rstrip("0").rstrip(".")


def header() -> str:
    load = os.getloadavg()
    return (f"# bench_supernet_quality  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  "
            f"{os.cpu_count()} cores  load avg {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}  torch {torch.__version__}")


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


# ---------------------------------------------------------------------------- worker pool

def _worker_init() -> None:
    torch.set_num_threads(1)


@dataclass
class Job:
    """One independent training; its worker writes `out` (the job is skipped when `out` exists)."""

    out: Path
    fn: Callable[..., dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)


def run_pool(jobs: list[Job], max_procs: int, outside_busy: Callable[[], int] = lambda: 0) -> dict[Path, Any]:
    """Run the unfinished jobs in 'spawn' worker processes, keeping (running jobs + `outside_busy()`)
    <= `max_procs`. Returns out path -> result (a dict with 'error' for a job that failed; its
    JSON is not written, so a re-run tries it again)."""
    results: dict[Path, Any] = {j.out: read_json(j.out) for j in jobs if j.out.exists()}
    pending = [j for j in jobs if not j.out.exists()]
    if not pending:
        return results
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max_procs, mp_context=ctx, initializer=_worker_init) as ex:
        running: dict[Future, Job] = {}
        while pending or running:
            while pending and len(running) + outside_busy() < max_procs:
                j = pending.pop(0)
                try:
                    running[ex.submit(j.fn, out=str(j.out), **j.kwargs)] = j
                except BrokenProcessPool as e:  # a worker died (killed, out of memory): report the rest as failed
                    for rest in [j, *pending]:
                        results[rest.out] = {"error": f"BrokenProcessPool: {e}"}
                    pending = []
            if not running:
                time.sleep(2.0)
                continue
            done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            for fut in done:
                j = running.pop(fut)
                try:
                    results[j.out] = fut.result()
                except Exception as e:  # noqa: BLE001 - reported in the table, retried on re-run
                    log(f"job {j.out.name} failed: {type(e).__name__}: {e}")
                    results[j.out] = {"error": f"{type(e).__name__}: {e}"}
    return results


def _zero_init(asked: bool | None) -> bool:
    """Whether a network trained alone starts with zero-initialised residual blocks (None: as the recipe does)."""
    from hwnas.train.standalone import StandaloneRecipe

    return StandaloneRecipe().zero_init_residual if asked is None else asked


def fresh_network(space: dict[str, Any], subnet: dict[str, Any], seed: int,
                  zero_init: bool | None = None) -> tuple[Any, Subnet]:
    """A from-scratch network of `subnet` (seeded init; `zero_init`: residual blocks start as the identity;
    None: as the single-network recipe does)."""
    from hwnas.supernet import StaticNet, init_weights, zero_init_residual

    sp = Space.model_validate(space)
    sub = sp.validate_subnet(subnet)
    torch.manual_seed(seed)
    net = StaticNet(build_plan(sp, sub))
    init_weights(net)
    if _zero_init(zero_init):
        zero_init_residual(net)
    return net, sub


def _fresh_net(space: dict[str, Any], subnet: dict[str, Any], data: str, seed: int,
               zero_init: bool | None = None) -> tuple[Any, Subnet, Any]:
    """(worker) `fresh_network` and the dataset."""
    from hwnas.data import load_dataset

    return (*fresh_network(space, subnet, seed, zero_init), load_dataset(data))


def alone_path(work: Path, i: int, k: int) -> Path:
    """Where subnet i's k-th alone draw is kept (draw 0 keeps the old name, so earlier runs are reused)."""
    return work / (f"alone-{i}.json" if k == 0 else f"alone-{i}-s{k}.json")


def train_alone_job(*, out: str, space: dict[str, Any], subnet: dict[str, Any], data: str, epochs: float,
                    seed: int, index: int, device: str = "cpu", zero_init: bool | None = None,
                    recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """(worker) Train one subnet from scratch for `epochs` (`recipe`: single-network recipe fields to change);
    write and return its result."""
    from hwnas.train.standalone import StandaloneRecipe, train_network

    net, sub, ds = _fresh_net(space, subnet, data, seed, zero_init)
    log(f"alone {index}: {macs_of(Space.model_validate(space), sub) / 1e6:.1f}M MACs, {epochs:g} epochs")
    r = train_network(net, ds, resolution=sub.resolution, epochs=epochs, seed=seed, label=f"alone {index}", device=device,
                      recipe=StandaloneRecipe(**(recipe or {})))
    res = dict(r, index=index, seed=seed, subnet=sub.model_dump(mode="json"), zero_init=_zero_init(zero_init),
               recipe=recipe or {})
    write_json(Path(out), res)
    log(f"alone {index}: val acc {r['val_acc']:.4f} after {r['seconds']:.0f} s")
    return res


def train_baseline_job(*, out: str, space: dict[str, Any], subnet: dict[str, Any], data: str, time_budget_s: float,
                       seed: int, weights: str, label: str, device: str = "cpu") -> dict[str, Any]:
    """(worker) Train one fixed network for `time_budget_s` seconds; save its weights; write and return the result."""
    from hwnas.train.standalone import train_network

    net, sub, ds = _fresh_net(space, subnet, data, seed)
    log(f"{label}: training for {time_budget_s:.0f} s")
    r = train_network(net, ds, resolution=sub.resolution, time_budget_s=time_budget_s, seed=seed, label=label,
                      device=device)
    torch.save(net.cpu().state_dict(), weights)
    res = dict(r, seed=seed, subnet=sub.model_dump(mode="json"), weights=weights, time_budget_s=time_budget_s)
    write_json(Path(out), res)
    log(f"{label}: val acc {r['val_acc']:.4f}, {r['epochs']:.1f} epochs in {r['seconds']:.0f} s")
    return res


# ---------------------------------------------------------------------------- part 1: quality

def r32_space() -> Space:
    base = load_space("mbv3-cifar")
    return base.model_copy(update={"name": "mbv3-cifar-r32", "resolutions": [RESOLUTION], "default_resolution": RESOLUTION})


def pick_subnets(space: Space, k: int, seed: int, pool: int = SUBNET_POOL) -> list[Subnet]:
    """The smallest, the largest and, for k-2 MAC targets evenly spaced strictly between them,
    the subnet of a seeded random pool closest in MACs to each (no duplicates); by MACs.

    Half the pool is `Space.sample` draws, half leans to small or large choices: uniform draws
    alone cluster in the middle and leave the top of the MAC range empty."""
    lo, hi = space.smallest(), space.largest()
    rng = np.random.default_rng([seed, 4242])
    cand = {s.key(): (s, macs_of(space, s)) for s in mixed_pool(space, rng, pool)}
    taken = {lo.key(), hi.key()}
    picked = [lo, hi]
    for target in np.linspace(macs_of(space, lo), macs_of(space, hi), k)[1:-1]:
        key, (s, _) = min(((kk, v) for kk, v in cand.items() if kk not in taken), key=lambda kv: abs(kv[1][1] - target))
        taken.add(key)
        picked.append(s)
    return sorted(picked, key=lambda s: macs_of(space, s))


def train_supernet(args: argparse.Namespace, work: Path, data: str, space: Space) -> dict[str, Any]:
    """`hwnas train --time-budget` in a subprocess; WORK/supernet.json holds its result and wall time."""
    ckpt, res_path = work / "supernet.pt", work / "supernet.json"
    if ckpt.exists() and res_path.exists():
        log(f"supernet: reusing {ckpt}")
        return read_json(res_path)
    if ckpt.exists():  # a killed time-budgeted run: resuming would distort the time accounting
        stale = ckpt.with_suffix(".stale.pt")
        log(f"supernet: {ckpt} has no result (killed run?); moved to {stale.name}, training again")
        ckpt.replace(stale)
    cmd = [sys.executable, "-m", "hwnas", "train", "--space", str(work / "space.yaml"), "--data", data,
           "--out", str(ckpt), "--time-budget", f"{args.supernet_budget:g}", "--json", "--no-progress",
           "--device", args.device]
    if args.schedule:
        from hwnas.train.config import default_config

        cfg = default_config(space, data, schedule=args.schedule).model_dump(mode="json")
        (work / "train.yaml").write_text(yaml.safe_dump(cfg))
        cmd += ["--config", str(work / "train.yaml")]
    code, out, wall = run_cli(cmd, one_thread=args.supernet_threads == "1")
    if code != 0:
        raise SystemExit(f"hwnas train failed (exit {code})")
    res = last_json_line(out)
    res.update(wall_s=wall, command=cmd, schedule=args.schedule or res.get("schedule"))
    write_json(res_path, res)
    return res


def part_quality(args: argparse.Namespace, work: Path, data: str) -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    from hwnas.data import load_dataset
    from hwnas.train.checkpoint import load_supernet
    from hwnas.train.evaluate import evaluate_subnet

    space0 = r32_space()
    (work / "space.yaml").write_text(yaml.safe_dump(space0.model_dump(mode="json", exclude_none=True)))
    ds = load_dataset(data)
    space = with_classes(space0, ds.num_classes)
    sn = train_supernet(args, work, data, space)
    epochs = float(sn["epochs"])  # the alone runs get as many epochs as the whole supernet run
    if epochs <= 0:
        raise SystemExit(f"the supernet trained {epochs:g} epochs in its budget; nothing to compare (raise --supernet-budget)")

    subs = pick_subnets(space, args.subnets, args.seed)
    write_json(work / "subnets.json", [s.model_dump(mode="json") for s in subs])

    inh_path = work / "inherited.json"
    inherited: dict[str, float] = read_json(inh_path) if inh_path.exists() else {}
    if any(s.key() not in inherited for s in subs):
        sup, _ = load_supernet(work / "supernet.pt", map_location=args.device)
        for i, s in enumerate(subs):
            if s.key() not in inherited:
                inherited[s.key()] = evaluate_subnet(sup, s, ds, calib_images=CALIB_IMAGES, device=args.device)
                log(f"inherited {i}: {macs_of(space, s) / 1e6:.1f}M MACs, val acc {inherited[s.key()]:.4f}")
        write_json(inh_path, inherited)
        del sup

    jobs = [Job(alone_path(work, i, k), train_alone_job,
                dict(space=space.model_dump(mode="json"), subnet=s.model_dump(mode="json"), data=data,
                     epochs=epochs, seed=args.seed + i + 1000 * k, index=i, device=args.device))
            for k in range(args.alone_seeds) for i, s in enumerate(subs)]
    # a stale alone-i.json (another subnet choice or epoch count) would silently pair wrong results
    for j in jobs:
        if j.out.exists():
            old = read_json(j.out)
            if old.get("subnet") != j.kwargs["subnet"] or abs(float(old.get("epochs", 0)) - epochs) > 0.05 * epochs + 1e-9:
                log(f"{j.out.name}: from another subnet or epoch count; training again")
                j.out.unlink()
    log(f"training {len(subs)} subnets alone for {epochs:g} epochs each, {args.alone_seeds} seed(s) ({args.jobs} at a time)")
    alone = run_pool(jobs, args.jobs)

    rows = []
    for i, s in enumerate(subs):
        runs = [alone.get(alone_path(work, i, k), {}) for k in range(args.alone_seeds)]
        accs = [a["val_acc"] for a in runs if a.get("val_acc") is not None]
        errors = [a["error"] for a in runs if a.get("error")]
        rows.append(dict(index=i, subnet=s.model_dump(mode="json"), macs=macs_of(space, s), inherited=inherited[s.key()],
                         alone=float(np.mean(accs)) if accs and not errors else None, alone_seeds=accs,
                         alone_seconds=sum(a.get("seconds") or 0.0 for a in runs) or None, alone_epochs=runs[0].get("epochs"),
                         alone_images_per_s=runs[0].get("images_per_s"), error=errors[0] if errors else None))
    ok = [r for r in rows if r["alone"] is not None]
    inh = np.array([r["inherited"] for r in ok])
    aln = np.array([r["alone"] for r in ok])
    # how well the alone networks rank themselves: tau between two seeds of the same 8 networks (the ceiling that
    # measurement noise puts on tau against the alone column)
    two = [r for r in ok if len(r["alone_seeds"]) >= 2]
    tau_seeds = float(kendalltau([r["alone_seeds"][0] for r in two], [r["alone_seeds"][1] for r in two]).statistic) \
        if len(two) > 1 else float("nan")
    seed_sd = float(np.mean([np.std(r["alone_seeds"], ddof=1) for r in two])) if two else float("nan")
    mean_diff = float((inh - aln).mean()) if ok else float("nan")
    tau = float(kendalltau(inh, aln).statistic) if len(ok) > 1 else float("nan")
    all_inh = np.array([r["inherited"] for r in rows])
    rho = float(spearmanr(all_inh, [r["macs"] for r in rows]).statistic) if len(rows) > 1 else float("nan")
    budget = float(sn.get("time_budget_s") or args.supernet_budget)
    wall = float(sn["wall_s"])
    return dict(
        space=space.name, data=data, train_images=int(ds.train_x.shape[0]), val_images=int(ds.val_x.shape[0]),
        supernet=sn, supernet_epochs=epochs, rows=rows,
        mean_diff=mean_diff, kendall_tau=tau, spearman_macs=rho, alone_seeds=args.alone_seeds,
        kendall_tau_alone_seeds=tau_seeds, alone_seed_sd=seed_sd,
        met=dict(mean_diff=bool(mean_diff >= TARGET_MEAN_DIFF), kendall_tau=bool(tau >= TARGET_TAU),
                 spearman_macs=bool(rho >= TARGET_SPEARMAN)),
        time_budget_s=budget, train_wall_s=wall,
        within_time_budget=bool(abs(wall - budget) <= BUDGET_TIME_TOLERANCE * budget),
    )


def print_quality(q: dict[str, Any]) -> None:
    sn = q["supernet"]
    yes = lambda b: "yes" if b else "NO"  # noqa: E731
    print(f"\n## part 1: inherited vs alone ({q['space']}, {q['train_images']} train / {q['val_images']} val images)\n")
    print("| subnet | MACs (M) | inherited acc | alone acc | diff |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in q["rows"]:
        diff = None if r["alone"] is None else r["inherited"] - r["alone"]
        alone = fmt(r["alone"], ".4f") if r["error"] is None else "failed"
        if len(r.get("alone_seeds") or []) > 1:
            alone += " (" + ", ".join(f"{a:.4f}" for a in r["alone_seeds"]) + ")"
        print(f"| {r['index']} | {r['macs'] / 1e6:.1f} | {r['inherited']:.4f} | {alone} | {fmt(diff, '+.4f')} |")
    print()
    print("| measure | value | target | met |")
    print("| --- | ---: | --- | --- |")
    print(f"| mean inherited - alone | {fmt(q['mean_diff'], '+.4f')} | >= {TARGET_MEAN_DIFF:+.2f} | {yes(q['met']['mean_diff'])} |")
    print(f"| Kendall tau, inherited vs alone | {fmt(q['kendall_tau'], '.2f')} | >= {TARGET_TAU} | {yes(q['met']['kendall_tau'])} |")
    print(f"| Spearman, inherited vs MACs | {fmt(q['spearman_macs'], '.2f')} | >= {TARGET_SPEARMAN} | {yes(q['met']['spearman_macs'])} |")
    if q.get("alone_seeds", 1) > 1:
        print(f"| Kendall tau, alone seed 0 vs seed 1 (the noise ceiling) | {fmt(q['kendall_tau_alone_seeds'], '.2f')} | - | - |")
        print(f"| alone accuracy, seed-to-seed sd (mean over subnets) | {fmt(q['alone_seed_sd'], '.4f')} | - | - |")
    print()
    b, w = q["time_budget_s"], q["train_wall_s"]
    print(f"supernet: time budget {b:.0f} s; `hwnas train` wall {w:.0f} s ({(w - b) / b:+.1%}, "
          f"{'within' if q['within_time_budget'] else 'OUTSIDE'} +-{BUDGET_TIME_TOLERANCE:.0%}); "
          f"training steps {fmt(sn.get('train_seconds_total'), '.0f')} s; {q['supernet_epochs']:g} epochs "
          f"(planned {json.dumps(sn.get('planned_epochs'))}); {sn.get('cpu_threads') or 1} CPU thread(s); schedule {sn.get('schedule') or 'default'}; "
          f"end-of-training val acc largest {fmt(sn.get('val_acc_max'))}, smallest {fmt(sn.get('val_acc_min'))}")
    secs = [r["alone_seconds"] for r in q["rows"] if r["alone_seconds"] is not None]
    print(f"alone: {q['supernet_epochs']:g} epochs each (StandaloneRecipe, 1 thread); "
          f"{sum(secs):.0f} s of training steps in all")


# ---------------------------------------------------------------------------- part 2: generate vs baseline

def uniform_nets(space: Space, resolution: int = RESOLUTION) -> dict[tuple[int, int, int], Subnet]:
    """Every (depth, kernel, expand) choice shared by all stages -> the uniform subnet."""
    from hwnas.search.direct import uniform_subnets

    return {(s.depths[0], s.kernels[0][0], s.expands[0][0]): s for s in uniform_subnets(space, resolution)}


def default_budgets(uniform: dict[tuple[int, int, int], Subnet], predict: Callable[[Subnet], float]) -> list[float]:
    return [round(BUDGET_MARGIN * predict(uniform[a]), 3) for a in BUDGET_ANCHORS]


def pick_baseline(space: Space, uniform: dict[tuple[int, int, int], Subnet], predicted: dict[tuple[int, int, int], float],
                  budget_ms: float) -> tuple[int, int, int] | None:
    """The uniform net with the most MACs whose predicted latency fits the budget (None if none does)."""
    fits = [a for a in uniform if predicted[a] <= budget_ms]
    return max(fits, key=lambda a: (macs_of(space, uniform[a]), -predicted[a])) if fits else None


def run_generate(args: argparse.Namespace, work: Path, data: str, budget: float) -> dict[str, Any]:
    """`hwnas generate --time-budget` for one budget; WORK/gen-B.json holds the result (exit 3 recorded too)."""
    tag = budget_tag(budget)
    res_path = work / f"gen-{tag}.json"
    if res_path.exists():
        return read_json(res_path)
    cmd = [sys.executable, "-m", "hwnas", "generate", "--budget-ms", tag, "--out", str(work / f"gen-{tag}"),
           "--data", data, "--space", "mbv3-cifar", "--table", str(work / "table.json"),
           "--time-budget", f"{args.generate_budget:g}", "--json", "--force"]
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "xdg-cache"))
    code, out, wall = run_cli(cmd, env)
    base = dict(budget_ms=budget, exit_code=code, wall_s=wall, command=cmd)
    if code == EXIT_NO_CANDIDATE:  # over the budget when generate measured it: keep what it printed (the model is
        try:                         # model.over-budget.onnx, re-measured quietly at the end like the others)
            res = dict(last_json_line(out), **base, no_candidate=True)
        except ValueError:
            res = dict(base, no_candidate=True)
    elif code != 0:
        log(f"generate --budget-ms {tag} failed (exit {code}); not saved, a re-run tries again")
        return dict(base, error=f"exit {code}")
    else:
        res = dict(last_json_line(out), **base)
    write_json(res_path, res)
    return res


def measure_baseline(space: Space, sub: Subnet, weights: Path, table: Any, onnx_path: Path) -> float:
    """Export the trained baseline as `hwnas export` does (BN folded, same exporter) and measure it
    with the table's threads, provider and protocol."""
    from hwnas.export.core import measure_model
    from hwnas.export.fold import fold_batchnorm
    from hwnas.export.onnx_io import export_graph
    from hwnas.supernet import StaticNet

    net = StaticNet(build_plan(space, sub))
    net.load_state_dict(torch.load(weights, weights_only=True))
    export_graph(fold_batchnorm(net.eval()), sub.resolution, onnx_path, channels=space.in_channels)
    return measure_model(onnx_path, sub.resolution, space.in_channels, int(table.fingerprint.threads),
                         str(table.fingerprint.provider), table.protocol)


def within(measured: float | None, budget: float) -> bool:
    return measured is not None and measured <= budget * (1 + LATENCY_TOLERANCE)


def gen_ms(gen: dict[str, Any]) -> float | None:
    """The generated model's latency measured like the baseline's (quietly, at the end) when there is one."""
    return gen.get("quiet_measured_latency_ms", gen.get("measured_latency_ms"))


def winner(gen: dict[str, Any], base: dict[str, Any] | None, budget: float) -> str:
    g_ok = "val_acc" in gen and within(gen_ms(gen), budget) and not gen.get("no_candidate")  # exit 3 delivered nothing
    b_ok = base is not None and "val_acc" in base and within(base.get("measured_latency_ms"), budget)
    if g_ok and b_ok:
        d = gen["val_acc"] - base["val_acc"]  # type: ignore[index]
        return "tie" if d == 0 else ("generate" if d > 0 else "baseline")
    return "generate" if g_ok else "baseline" if b_ok else "neither within budget"


def part_generate(args: argparse.Namespace, work: Path, data: str) -> dict[str, Any]:
    from hwnas.data import load_dataset
    from hwnas.latency import LatencyPredictor, load_table

    table_path = work / "table.json"
    if not table_path.exists():
        code, _, wall = run_cli([sys.executable, "-m", "hwnas", "profile", "--space", "mbv3-cifar", "--out", str(table_path), "--json"])
        if code != 0:
            raise SystemExit(f"hwnas profile failed (exit {code})")
        log(f"profiled this machine in {wall:.0f} s")
    ds = load_dataset(data)
    space = with_classes(load_space("mbv3-cifar"), ds.num_classes)
    table = load_table(table_path, space)
    pred = LatencyPredictor(table, space)
    uniform = uniform_nets(space)
    predicted = {a: float(pred.predict(s)) for a, s in uniform.items()}
    budgets = [round(b, 3) for b in args.budgets_ms] if args.budgets_ms else default_budgets(uniform, pred.predict)
    log("budgets (ms): " + ", ".join(budget_tag(b) for b in budgets))

    picks = {b: pick_baseline(space, uniform, predicted, b) for b in budgets}
    jobs: dict[float, Job] = {}
    for i, (b, arch) in enumerate(picks.items()):
        if arch is None:
            log(f"budget {budget_tag(b)} ms: no uniform net is predicted to fit; no baseline")
            continue
        tag = budget_tag(b)
        jobs[b] = Job(work / f"baseline-{tag}.train.json", train_baseline_job,
                      dict(space=space.model_dump(mode="json"), subnet=uniform[arch].model_dump(mode="json"), data=data,
                           time_budget_s=float(args.generate_budget), seed=args.seed + 100 + i,
                           weights=str(work / f"baseline-{tag}.pt"), label=f"baseline {tag} ms {arch}"))
    pending = {b: j for b, j in jobs.items() if not (work / f"baseline-{budget_tag(b)}.json").exists()}

    gens: dict[float, dict[str, Any]] = {}
    gen_running = threading.Event()

    def generates() -> None:
        try:
            for b in budgets:
                try:
                    gens[b] = run_generate(args, work, data, b)
                except Exception as e:  # noqa: BLE001 - reported in the table
                    log(f"generate {budget_tag(b)} ms: {type(e).__name__}: {e}")
                    gens[b] = dict(budget_ms=b, error=f"{type(e).__name__}: {e}")
        finally:
            gen_running.clear()

    thread = threading.Thread(target=generates, name="generates")
    gen_running.set()  # before the pool starts, so it never fills every slot
    thread.start()
    trained = run_pool(list(pending.values()), args.jobs, outside_busy=lambda: 1 if gen_running.is_set() else 0)
    thread.join()

    # latencies last, with nothing else running
    baselines: dict[float, dict[str, Any]] = {}
    for b, arch in picks.items():
        if arch is None:
            continue
        tag = budget_tag(b)
        path = work / f"baseline-{tag}.json"
        if path.exists():
            baselines[b] = read_json(path)
            continue
        t = trained.get(jobs[b].out, {})
        if "error" in t or not t:
            baselines[b] = dict(arch=list(arch), error=t.get("error", "not trained"))
            continue
        log(f"baseline {tag} ms: measuring latency")
        ms = measure_baseline(space, uniform[arch], Path(t["weights"]), table, work / f"baseline-{tag}.onnx")
        baselines[b] = dict(t, arch=list(arch), macs=macs_of(space, uniform[arch]), predicted_latency_ms=predicted[arch],
                            measured_latency_ms=ms, budget_ms=b)
        write_json(path, baselines[b])

    # the generated models once more, as quietly as the baselines (generate measured them while
    # baselines or the other part of the benchmark were training)
    from hwnas.export.core import measure_model

    for b, g in gens.items():
        onnx = g.get("onnx")
        if onnx and Path(onnx).exists() and "quiet_measured_latency_ms" not in g:
            res = int(g["subnet"]["resolution"])
            g["quiet_measured_latency_ms"] = measure_model(onnx, res, space.in_channels, int(table.fingerprint.threads),
                                                           str(table.fingerprint.provider), table.protocol)
            log(f"generate {budget_tag(b)} ms: re-measured {g['quiet_measured_latency_ms']:.3f} ms "
                f"(generate measured {g['measured_latency_ms']:.3f} ms)")
    rows = []
    for b in budgets:
        g, base = gens.get(b, {}), baselines.get(b)
        rows.append(dict(budget_ms=b, generate=g, baseline=base, winner=winner(g, base, b)))
    return dict(table=str(table_path), time_budget_s=float(args.generate_budget), budgets_ms=budgets,
                uniform_predicted_ms={",".join(map(str, a)): v for a, v in predicted.items()}, rows=rows,
                train_images=int(ds.train_x.shape[0]), val_images=int(ds.val_x.shape[0]))


def print_generate(g: dict[str, Any]) -> None:
    print(f"\n## part 2: `hwnas generate --time-budget {g['time_budget_s']:.0f}` vs a uniform net trained alone "
          f"for {g['time_budget_s']:.0f} s ({g['train_images']} train / {g['val_images']} val images)\n")
    hdr = ["budget ms", "generate val acc", "generate ms (own / quiet)", "within budget", "generate wall s",
           "baseline arch (d,k,e)", "baseline val acc", "baseline measured ms", "baseline epochs", "winner"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---:" for _ in hdr) + "|")
    for r in g["rows"]:
        gen, base, b = r["generate"], r["baseline"] or {}, r["budget_ms"]
        if gen.get("no_candidate") and "val_acc" not in gen:
            g_acc, g_ms, g_in = "exit 3", "-", "no candidate"
        elif "error" in gen or not gen:
            g_acc, g_ms, g_in = "failed", "-", "-"
        else:
            g_acc, g_ms = f"{gen['val_acc']:.4f}", f"{gen['measured_latency_ms']:.3f} / {fmt(gen.get('quiet_measured_latency_ms'))}"
            g_in = ("yes" if within(gen_ms(gen), b) else "NO") + (" (exit 3)" if gen.get("no_candidate") else "")
        arch = "(" + ",".join(map(str, base["arch"])) + ")" if base.get("arch") else "none fits"
        b_acc = "failed" if "error" in base else fmt(base.get("val_acc"), ".4f")
        b_ms = fmt(base.get("measured_latency_ms"))
        if base.get("measured_latency_ms") is not None and not within(base["measured_latency_ms"], b):
            b_ms += " (over)"
        print(f"| {budget_tag(b)} | {g_acc} | {g_ms} | {g_in} | {fmt(gen.get('wall_s'), '.0f')} | {arch} | {b_acc} | "
              f"{b_ms} | {fmt(base.get('epochs'), '.1f')} | {r['winner']} |")
    print()
    print(f"within budget: measured <= budget x {1 + LATENCY_TOLERANCE:g}; latencies: median, batch 1, the table's threads "
          f"and protocol; the winner is the more accurate of the sides within budget")
    for r in g["rows"]:
        if r["generate"].get("cache"):
            print(f"generate {budget_tag(r['budget_ms'])} ms caches: {r['generate']['cache']}")


# ---------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--part", choices=["quality", "generate", "all"], default="all")
    ap.add_argument("--work", required=True, help="keep everything here; finished pieces are reused on re-run")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="ImageFolder root (train/ and val/)")
    ap.add_argument("--jobs", type=int, default=2, help="at most this many busy processes (training workers + generate)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: the supernet, the alone and baseline trainings run there")
    ap.add_argument("--train-limit", type=int, default=None, metavar="N",
                    help="smoke tests only: a random N training images (symlinks under WORK), all val images")
    ap.add_argument("--supernet-budget", type=parse_duration, default=parse_duration("45m"), metavar="DURATION",
                    help="part 1: hwnas train --time-budget (e.g. 2700, 45m)")
    ap.add_argument("--supernet-threads", choices=["1", "auto"], default="1",
                    help="part 1: '1' pins hwnas train to one intra-op thread (as every 45-minute run before 2026-12-05); "
                         "'auto' leaves it to the CLI, which takes the idle cores, as a user's run does")
    ap.add_argument("--supernet-only", action="store_true", help="part 1: train the supernet and stop (a later run reuses it)")
    ap.add_argument("--subnets", type=int, default=8, help="part 1: subnets compared")
    ap.add_argument("--alone-seeds", type=int, default=1, metavar="N",
                    help="part 1: train each subnet alone N times (seeds); the alone accuracy is their mean, and with N >= 2 "
                         "the table gives tau between two seeds, the ceiling that noise puts on tau against the alone column")
    ap.add_argument("--schedule", default=None, metavar="NAME", help="part 1: training schedule preset, e.g. sandwich, progressive, delayed; None: the default")
    ap.add_argument("--generate-budget", type=parse_duration, default=parse_duration("45m"), metavar="DURATION",
                    help="part 2: hwnas generate --time-budget, and the baseline's training time")
    ap.add_argument("--budgets-ms", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                    help="part 2: latency budgets (None: 1.05 x the predicted latency of uniform (2,3,3), (3,5,4), (4,7,6))")
    args = ap.parse_args()
    if args.jobs < 1 or args.subnets < 2:
        ap.error("--jobs must be >= 1 and --subnets >= 2")
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.data).resolve())
    if args.train_limit is not None:
        sub = work / f"data-{args.train_limit}"
        if not sub.exists():
            make_subset(Path(data), sub, args.train_limit, args.seed)
        data = str(sub)

    if args.supernet_only:  # split a run across calls or machines: the next run reuses WORK/supernet.pt
        from hwnas.data import load_dataset

        space0 = r32_space()
        (work / "space.yaml").write_text(yaml.safe_dump(space0.model_dump(mode="json", exclude_none=True)))
        sn = train_supernet(args, work, data, with_classes(space0, load_dataset(data).num_classes))
        print(header())
        print(json.dumps({k: sn.get(k) for k in ("epochs", "wall_s", "time_budget_s", "train_seconds_total", "val_acc_max",
                                                 "val_acc_min", "planned_epochs", "schedule")}))
        return 0
    res_path = work / "results.json"
    results: dict[str, Any] = read_json(res_path) if res_path.exists() else {}
    if args.part in ("quality", "all"):
        results["quality"] = part_quality(args, work, data)
        write_json(res_path, results)
    if args.part in ("generate", "all"):
        results["generate"] = part_generate(args, work, data)
    results["meta"] = dict(header=header(), argv=sys.argv[1:], data=data, torch=torch.__version__, host=platform.node(),
                           cores=os.cpu_count(), loadavg=list(os.getloadavg()), seconds=time.perf_counter() - t0)
    write_json(res_path, results)
    print(header())  # at the end: the load average then says more about the run than at the start
    if args.part in ("quality", "all"):
        print_quality(results["quality"])
    if args.part in ("generate", "all"):
        print_generate(results["generate"])
    print(f"\nwhole benchmark {time.perf_counter() - t0:.0f} s; results in {res_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
