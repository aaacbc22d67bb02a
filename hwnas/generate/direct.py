"""generate's direct route: when the time budget cannot train a supernet worth searching.

On a 2-core CPU a supernet given its share of a 15-45 minute budget trains well under the
MIN_SUPERNET_EPOCHS its accuracies need to rank subnets. Searching with them chose by noise, and
the fine-tuned result lost to a fixed network trained for the whole time. So generate plans the
supernet first (the same cost probe `train --time-budget` uses). If it would get too few epochs,
generate skips it:
1. `hwnas.search.direct` chooses a subnet (the data's own resolution, within the latency budget,
   the largest that still trains enough epochs);
2. the choice is measured before anything is trained;
3. it is trained from scratch with the single-network recipe for the time left;
4. the usual export and budget check follow.
The report says which route was taken and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwnas.fileio import atomic_path, write_json
from hwnas.generate.finish import delivered_acc, deliver, finish

MAX_MEASURED = 5
"""Candidates measured before training at most (the choice, then re-chosen under the measured budget)."""
MARGIN = 0.03
"""Before training, a candidate must measure this far under the budget: the delivered file is measured
again after the whole training time, and a 1-2% wobble then would cost the user the run (exit 3)."""


@dataclass
class DirectRun:
    """What the direct route chose and trained (for the export, the report and --json)."""

    subnet: Any
    predicted_latency_ms: float
    attempts: list[Any]
    weights: Any
    feasible: list[Any]
    resolution: int
    expected_epochs: float
    train: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def run_direct(sp: Any, tab: Any, model: Any, ds: Any, budget_ms: float, *, deadline: float,
               supernet_epochs: float, device: str | None, progress: bool, log: Callable[[str], None],
               check: Callable[[Any], Any], reserve_s: Callable[[Any], float], local: bool = True,
               flip: bool = True) -> DirectRun:
    """Choose, check and train a subnet within `deadline` (a time.perf_counter() value). `check` is generate's
    quick measured check of one candidate (its Attempt); `local`: the table is this machine's, so measurements
    here are the target's (a table of another device is checked by prediction only); `flip`: the data may be
    mirrored (as the training config says: not digits)."""
    from types import SimpleNamespace

    from hwnas.search.direct import MIN_EPOCHS, choose_for_time, predict_latencies, resolution_for
    from hwnas.space import build_plan
    from hwnas.space.cost import macs
    from hwnas.supernet import StaticNet, init_weights, zero_init_residual
    from hwnas.train.distributed import resolve_device
    from hwnas.train.standalone import StandaloneRecipe, step_seconds, train_network

    dev = resolve_device(device)
    recipe = StandaloneRecipe(flip=flip)
    size = int(ds.train_x.shape[-1])
    resolution, feasible, predicted = resolution_for(sp, model, budget_ms, size)
    if not feasible:  # generate checked the budget against the fastest subnet; a pool can still miss it
        feasible = [sp.smallest().model_copy(update={"resolution": resolution})]
        predicted = predict_latencies(sp, model, feasible)
    n = int(ds.train_x.shape[0])
    iters = max(1, n // recipe.batch_size)

    timed: dict[str, float] = {}

    def epoch_s(sub: Any) -> float:  # timed once per subnet: a re-choice asks again
        if sub.key() not in timed:
            timed[sub.key()] = iters * step_seconds(StaticNet(build_plan(sp, sub)), ds, resolution=sub.resolution,
                                                    recipe=recipe, device=dev)
        return timed[sub.key()]

    smallest = min(feasible, key=lambda s: macs(sp, s))
    reserve = reserve_s(smallest)
    train_s = deadline - time.perf_counter() - reserve
    pick, expected = choose_for_time(sp, feasible, epoch_s, train_s)
    log(f"direct: no supernet (it would train {supernet_epochs:.2f} epochs in its share); "
        f"resolution {resolution} (the images are {size}x{size}), {len(feasible)} subnets within {budget_ms:g} ms predicted; "
        f"chose {macs(sp, pick) / 1e6:.1f}M MACs, about {expected:.1f} epochs in {train_s:.0f} s")

    # measure before training (latency does not depend on the weights); after a miss, choose again under
    # the budget the measurements say the predictor is off by
    attempts, tried = [], []
    sub = pick
    while sub is not None and len(attempts) < MAX_MEASURED:
        tried.append(sub)
        attempts.append(check(SimpleNamespace(subnet=sub, predicted_latency_ms=predicted[sub.key()], predicted_acc=None)))
        if attempts[-1].within_budget and (not local or attempts[-1].measured_latency_ms <= budget_ms * (1 - MARGIN)):
            break
        sub = rechoose(sp, predicted, feasible, tried, attempts, budget_ms * (1 - MARGIN), epoch_s, train_s)
    pick = fallback_pick(tried, attempts)

    import torch

    torch.manual_seed(0)
    net = StaticNet(build_plan(sp, pick))
    init_weights(net)
    if recipe.zero_init_residual:
        zero_init_residual(net)
    train_s = max(deadline - time.perf_counter() - reserve_s(pick), 1.0)
    log(f"direct: training the chosen subnet from scratch for {train_s:.0f} s (lr {recipe.lr})")
    out = train_network(net, ds, resolution=pick.resolution, time_budget_s=train_s, recipe=recipe, device=dev,
                        evaluate=False, progress=progress, label="train")
    info = {"route": "direct", "seconds": round(out["seconds"], 1), "epochs": round(out["epochs"], 2), "iters": out["iters"],
            "images_per_s": round(out["images_per_s"], 1), "recipe": recipe.model_dump(), "supernet_epochs": round(supernet_epochs, 3),
            "min_epochs": MIN_EPOCHS, "candidates": len(feasible), "resolution": resolution}
    reason = (f"a supernet would have trained only {supernet_epochs:.2f} epochs in its share of the time budget, too few "
              f"for its accuracies to rank subnets, so none was trained: the largest subnet within the budget at the data's "
              f"resolution ({resolution}) that trains at least {MIN_EPOCHS:g} epochs in the time left was trained from scratch "
              f"({info['epochs']:g} epochs)")
    if len(attempts) > 1:
        reason += (f"; the first {len(attempts) - 1} candidate(s) measured over the budget or within {MARGIN:.0%} of it, so "
                   f"the choice was made again among subnets whose prediction, scaled by the measured/predicted ratio, fits")
    return DirectRun(subnet=pick, predicted_latency_ms=predicted[pick.key()], attempts=attempts,
                     weights=net.cpu().eval(), feasible=feasible, resolution=resolution, expected_epochs=expected,
                     train=info, reason=reason)


def rechoose(sp: Any, predicted: dict[str, float], feasible: list[Any], tried: list[Any], attempts: list[Any],
             target_ms: float, epoch_s: Callable[[Any], float], train_s: float) -> Any | None:
    """The next candidate after a measured miss: the same rule (`choose_for_time`) over the untried feasible
    subnets whose prediction (`predicted`, by subnet key), scaled by the worst measured/predicted ratio so far,
    is within `target_ms`; the fastest predicted untried one when none is; None when every one was tried."""
    from hwnas.search.direct import choose_for_time

    ratio = max(a.measured_latency_ms / max(a.predicted_latency_ms, 1e-9) for a in attempts)
    keys = {s.key() for s in tried}
    rest = [s for s in feasible if s.key() not in keys]
    if not rest:
        return None
    fits = [s for s in rest if predicted[s.key()] * ratio <= target_ms]
    if not fits:
        return min(rest, key=lambda s: predicted[s.key()])
    return choose_for_time(sp, fits, epoch_s, train_s)[0]


def fallback_pick(tried: list[Any], attempts: list[Any]) -> Any:
    """What to train: the last candidate if it was accepted (within the budget and its margin), else the one
    measured fastest among those within the budget, else the fastest measured (generate then reports the miss)."""
    ok = [i for i, a in enumerate(attempts) if a.within_budget]
    if ok and ok[-1] == len(attempts) - 1:
        return tried[-1]
    pool = ok or range(len(attempts))
    return tried[min(pool, key=lambda i: attempts[i].measured_latency_ms)]


def write_direct_outputs(run: DirectRun, sp: Any, model: Any, val_acc: float, budget_ms: float, out_dir: Path,
                         title: str) -> None:
    """pareto.json (the one subnet evaluated: the trained choice, with its measured accuracy), best.json
    and pareto.png (the candidates by predicted latency and MACs, the choice marked)."""
    from hwnas.space.cost import macs

    entry = {"subnet": run.subnet.model_dump(mode="json"), "predicted_acc": float(val_acc),
             "predicted_latency_ms": run.predicted_latency_ms, "macs": int(macs(sp, run.subnet))}
    write_json(out_dir / "pareto.json", [entry])
    write_json(out_dir / "best.json", run.subnet.model_dump(mode="json"))
    plot_candidates(run, sp, model, budget_ms, out_dir / "pareto.png", title)


def plot_candidates(run: DirectRun, sp: Any, model: Any, budget_ms: float, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.space.cost import macs

    lat = [float(model.predict(s)) for s in run.feasible]
    mm = [macs(sp, s) / 1e6 for s in run.feasible]
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    try:
        ax.scatter(lat, mm, s=9, c="#8fa3bf", alpha=0.7, linewidths=0,
                   label=f"candidates within the budget at {run.resolution}x{run.resolution} ({len(lat)})")
        ax.scatter([run.predicted_latency_ms], [macs(sp, run.subnet) / 1e6], s=90, marker="*", c="#c0392b", zorder=3,
                   label=f"trained ({run.train.get('epochs', 0):g} epochs)")
        ax.axvline(budget_ms, color="#c0392b", lw=1.0, ls="--", label=f"budget {budget_ms:g} ms")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("MACs (M)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def finish_direct(direct: Any, sp: Any, tab: Any, predictor: Any, ds: Any, budget_ms: float, out_dir: Path, *, data: str,
                  table_path: Path, table_cache: str, local: bool, stages: dict[str, float], warnings: list[str], t0: float,
                  budget_s: float, cfg: Any, progress: bool, int8: bool = False, ort_format: bool = False) -> dict[str, Any]:
    """Deliver the directly trained subnet like any other (export_within_budget: measured, exit 3 when over),
    write the search-style outputs and the report."""
    from types import SimpleNamespace

    from hwnas.supernet import Supernet

    cand = SimpleNamespace(subnet=direct.subnet, predicted_latency_ms=direct.predicted_latency_ms, predicted_acc=None)
    delivery = deliver(Supernet(sp), ds, tab, sp, [], cand, direct.attempts, budget_ms, out_dir, tuned=direct.weights,
                       table_path=table_path, table_cache=table_cache, local=local, int8=int8, ort_format=ort_format,
                       stages=stages, warnings=warnings, progress=progress)
    write_direct_outputs(direct, sp, predictor, delivered_acc(delivery, int8), budget_ms, out_dir,
                         f"{sp.name} on {data}: no supernet (time budget too short); candidates within {budget_ms:g} ms")
    return finish(delivery, sp=sp, tab=tab, ds=ds, cfg=cfg, search=None, budget_ms=budget_ms, out_dir=out_dir, data=data,
                  table_path=table_path, stages=stages, warnings=warnings, t0=t0, budget_s=budget_s, int8=int8,
                  progress=progress, predicted_latency_ms=direct.predicted_latency_ms, predicted_acc=None, supernet="",
                  cache={"table": table_cache, "supernet": "skipped"}, finetune=direct.train, schedule="", route="direct")
