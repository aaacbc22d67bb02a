"""`hwnas generate`: from data and a latency budget to a checked ONNX model in one call.

profile this machine (or use the given table) -> train the supernet (or reuse a cached
one) -> search under the budget -> export, check and measure -> report.md.

Caches live under `$XDG_CACHE_HOME/hwnas/{tables,supernets}`, keyed by a digest of
everything that decides their content, and are moved into place only when complete,
so an interrupted run never leaves a cache entry that a later run would trust.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hwnas.cache import cache_dir, digest
from hwnas.errors import UserError
from hwnas.fileio import write_json, write_text

DEFAULT_DATA = "digits"
DEFAULT_SPACE = "mbv3-tiny"
BUDGET_TOLERANCE = 0.0
"""The delivered model's measured latency may exceed the budget by at most this fraction (none: SPEC's exit 3)."""
MAX_EXPORT_ATTEMPTS = 4
"""Bound on candidates measured by the quick check, and separately on candidates exported."""
INT8_MAX_DROP = 0.01
"""An INT8 model losing more than this (1 point) of the fp32 model's accuracy sends generate to the next candidate."""
INT8_FINALISTS = 3
"""With --int8, this many front members within the budget (those the search rates most accurate, fp32 with the
supernet's weights) are quantised and scored through ONNX Runtime before the export, and generate starts from the
best INT8 one: quantisation costs some subnets more accuracy than others, so the fp32 ranking alone can ship one
that quantises badly. Few, because each costs a BN recalibration, a quantisation and two validation passes."""
LOOKAHEAD = 1.5
"""generate also searches up to this multiple of the budget, so pareto.png shows what a larger budget would buy."""
OVER_BUDGET_STEM = "model.over-budget"
DELIVERABLES = {".onnx": "onnx", ".fp32.onnx": "fp32", ".ort": "ort", ".required_operators.config": "ort_config",
                ".fp32.ort": "fp32_ort", ".fp32.required_operators.config": "fp32_ort_config"}
"""The files generate delivers, by what follows the stem `model` (or `model.over-budget`), and their roles."""
TRAIN_SHARE = 0.4
"""Share of generate's --time-budget that plans the supernet's training."""
SEARCH_SHARE = 0.1
"""Share of it the search may use (its size is set from the measured cost of one evaluation)."""
MIN_FINETUNE_S = 5.0
MIN_SUPERNET_EPOCHS = 8
"""Epochs the supernet must get in its share of --time-budget for generate to train one (below: the direct
route), and below which a trained one is reported as weakly ranked. The quality benchmark's supernet got
7.08 epochs in a whole 45-minute CPU budget and was within 1.1 points of its subnets trained alone for as
many epochs; one given 40% of that budget (2.9 epochs, on the edge of the old threshold of 3) would trail
by more, and its fine-tuned choice would then have fewer epochs than one net trained for the whole time.
A GPU (15 epochs in 213 s on an H200) passes easily. More epochs do not close the gap on a CPU by themselves: the
subnets of a 45-minute supernet with two threads (18.7 epochs, 2026-12-05) trailed the same networks trained alone
for as many epochs by 4.74 points (8 of 8), against 1.24 for the one-thread run (11.0 epochs); with a view of
the batch per subnet and label smoothing (the default since) by 2.87 at 18.7 epochs."""
SEARCH_VAL_IMAGES = 1000
"""Validation images that score a subnet during a time-budgeted search (all of them at export)."""
OUTPUT_NAMES = ("model.onnx", "best.json", "pareto.json", "pareto.png", "report.md")


class Attempt(BaseModel):
    """One candidate and how it measured against the budget: `check` times its graph with untrained weights
    (cheap, before fine-tuning), `export` the delivered file itself (with the tables' protocol and as an
    application calls it; the slower counts)."""

    model_config = ConfigDict(extra="forbid")
    subnet: dict[str, Any]
    predicted_acc: float | None
    predicted_latency_ms: float
    measured_latency_ms: float
    within_budget: bool
    kind: Literal["check", "export"] = "check"
    int8_acc_change: float | None = None
    accepted: bool = False


class Int8Finalist(BaseModel):
    """One front member scored quantised before the export (generate --int8): the search's fp32 estimate
    beside the fp32 and INT8 accuracy of the models the export would build from the supernet's weights."""

    model_config = ConfigDict(extra="forbid")
    subnet: dict[str, Any]
    predicted_latency_ms: float
    predicted_acc: float = Field(description="the search's (fp32, inherited weights) accuracy that made it a finalist")
    fp32_acc: float = Field(description="fp32 model through ONNX Runtime, supernet weights, BN recalibrated (0..1)")
    int8_acc: float = Field(description="its QDQ INT8 model, calibrated as the export calibrates it (0..1)")
    val_images: int
    start: bool = Field(default=False, description="the finalist generate started from (best INT8 accuracy)")


class GenerateResult(BaseModel):
    """What `hwnas generate --json` prints (SPEC keys first)."""

    model_config = ConfigDict(extra="forbid")
    onnx: str
    report: str
    measured_latency_ms: float
    predicted_latency_ms: float
    val_acc: float
    budget_ms: float
    seconds: float
    within_budget: bool
    val_acc_torch: float
    predicted_acc: float | None
    max_abs_diff: float
    best: str
    pareto: str
    plot: str
    space: str
    data: str
    subnet: dict[str, Any]
    macs: int
    params: int
    table: str
    supernet: str
    cache: dict[str, str] = Field(description="table / supernet: hit, miss or given")
    stage_seconds: dict[str, float]
    attempts: list[Attempt]
    precision: Literal["fp32", "int8"] = "fp32"
    fp32_onnx: str | None = Field(default=None, description="with --int8: the fp32 model of the same subnet (model.fp32.onnx)")
    fp32_val_acc: float | None = None
    int8_acc_change: float | None = Field(default=None, description="INT8 minus fp32 validation accuracy (0..1)")
    export_latency_ms: float | None = Field(default=None, description="the export's own measurement (the table's protocol); measured_latency_ms is the slower of it and the delivered file called as an application calls it")
    ort: str | None = Field(default=None, description="with --ort-format: model.ort (ONNX Runtime Mobile)")
    ort_config: str | None = Field(default=None, description="with --ort-format: the reduced-build operator config")
    warnings: list[str] = Field(default_factory=list)
    time_budget_s: float | None = None
    finetune: dict[str, Any] | None = Field(default=None, description="the chosen subnet's fine-tuning: seconds, epochs, iterations, images/s, recipe")
    schedule: str = ""
    int8_finalists: list[Int8Finalist] = Field(default_factory=list, description="with --int8 (supernet route): the front's "
                                               "finalists scored quantised; generate started from the best INT8 one")
    machine_drift_pct: float | None = Field(default=None, description="after a measured miss on this machine: how much "
                                            "slower (+, %) it runs the table's own reference subnets now than when profiled")
    route: str = Field(default="supernet", description="supernet (train or reuse, search, fine-tune) or direct (no supernet: "
                       "the time budget could not train one; a subnet chosen by rule and trained from scratch)")


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- output folder

def check_out_dir(out: str | os.PathLike[str], force: bool) -> Path:
    """Refuse a non-empty existing folder without --force and an unwritable location (before any work)."""
    from hwnas.export.outputs import check_writable_dir

    d = Path(out).expanduser()
    if d.exists() and not d.is_dir():
        raise UserError(f"--out {d} is a file; give a folder for model.onnx, report.md and the search results")
    if d.is_dir() and any(d.iterdir()) and not force:
        raise UserError(f"--out {d} already exists and is not empty; pass --force to overwrite its files, or choose a new folder")
    check_writable_dir(d)
    return d


# ---------------------------------------------------------------- caches

def table_cache_key(space, *, threads: int, provider: str, int8: bool, resolutions: list[int] | None) -> dict[str, Any]:
    """Everything that decides a latency table: the space, this machine, how it is measured, the code version."""
    from hwnas import __version__
    from hwnas.runtime import ortbench

    return {"space": space.to_file_dict(), "machine": ortbench.fingerprint(provider, threads, 1), "threads": threads, "provider": provider,
            "int8": int8, "resolutions": resolutions, "hwnas": __version__}


def supernet_cache_key(space, data_fingerprint: str, config, time_budget_s: float | None = None) -> dict[str, Any]:
    """Everything that decides the trained weights: space, data bytes, training config, the time budget
    its epochs are planned for (the plan itself is stored in the checkpoint), code version."""
    from hwnas import __version__

    key = {"space": space.to_file_dict(), "data": data_fingerprint, "config": config.model_dump(mode="json"), "hwnas": __version__}
    if time_budget_s is not None:
        key["time_budget_s"] = round(float(time_budget_s), 3)
    return key


def cached_table(space, *, threads: int = 1, provider: str = "CPUExecutionProvider", int8: bool = False,
                 resolutions: list[int] | None = None, progress: bool = True) -> tuple[Path, bool]:
    """(path, hit): the cached table for this machine, profiling it first on a miss."""
    from hwnas.latency import load_table

    key = digest(table_cache_key(space, threads=threads, provider=provider, int8=int8, resolutions=resolutions))
    path = cache_dir("tables") / f"{space.name}-{key}.json"
    if path.is_file():
        try:
            cached = load_table(path, space)
            if cached.noise is None or cached.noise.trusted:
                return path, True
            _log(progress, f"note: the cached table was measured on a busy machine ({cached.noise.reason}); measuring again")
        except UserError as e:  # damaged cache entry: measure again rather than fail
            _log(progress, f"note: ignoring a damaged cached table ({e})")
    from hwnas.latency import profile_space

    _log(progress, f"profile: measuring every distinct block of '{space.name}' on this machine (cached in {path.parent})")
    # TABLE files are written atomically (temporary name, then rename): no half cache entry is possible
    profile_space(space, path, threads=threads, provider=provider, resolutions=resolutions, int8=int8, progress=progress)
    return path, False


def cached_supernet(space, data: str, data_fingerprint: str, config, *, device: str | None = None,
                    progress: bool = True, time_budget_s: float | None = None) -> tuple[Path, bool]:
    """(path, hit): the cached trained supernet for these inputs, training it first on a miss.

    Training goes to a `.partial` checkpoint that an interrupted run resumes; only a finished
    checkpoint is renamed to the cache name."""
    from hwnas.train import train_supernet

    key = digest(supernet_cache_key(space, data_fingerprint, config, time_budget_s))
    path = cache_dir("supernets") / f"{space.name}-{key}.pt"
    if path.is_file():
        return path, True
    partial = path.with_name(f".{path.stem}.partial.pt")
    what = f"planned for {time_budget_s:.0f} s" if time_budget_s is not None else f"{config.total_epochs:g} epochs"
    _log(progress, f"train: the '{space.name}' supernet on {data}, {config.schedule} schedule, {what} (cached in {path.parent})")
    if partial.is_file():
        try:
            _log(progress, f"train: resuming the interrupted run in {partial}")
            train_supernet(space, data, partial, device=device, resume=True, progress=progress)
        except UserError as e:  # damaged or foreign partial checkpoint: start over
            _log(progress, f"note: cannot resume {partial} ({e}); training from the start")
            partial.unlink(missing_ok=True)
    if not partial.is_file():
        train_supernet(space, data, partial, config=config, device=device, resume=False, progress=progress,
                       time_budget=time_budget_s)
    os.replace(partial, path)
    from hwnas.train.api import metrics_path

    if metrics_path(partial).is_file():
        os.replace(metrics_path(partial), metrics_path(path))
    return path, False


# ---------------------------------------------------------------- the pipeline

def generate(
    budget_ms: float,
    out: str | os.PathLike[str],
    *,
    data: str = DEFAULT_DATA,
    space: str = DEFAULT_SPACE,
    table: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    epochs_scale: float = 1.0,
    train_config: Any = None,
    profile_resolutions: list[int] | None = None,
    search_options: dict[str, Any] | None = None,
    device: str | None = None,
    time_budget: float | str | None = None,
    val_images: int | None = None,
    force_table: bool = False,
    supernet: str | os.PathLike[str] | None = None,
    int8: bool = False,
    ort_format: bool = False,
) -> dict[str, Any]:
    """The whole pipeline; returns the SPEC `generate --json` keys (and more).

    `time_budget` ('45m', seconds) bounds the whole call: TRAIN_SHARE of it plans the supernet's
    training, SEARCH_SHARE sizes the search, and what is left after choosing the subnet (about 40%) fine-tunes
    it before the export. `val_images` scores the
    search's subnets on that many validation images (the export always reports all of them).
    `supernet`: a trained or imported CKPT to use instead of training one (its space is the space).
    `int8` profiles (or requires) an INT8 table, searches with INT8 latencies, starts from the INT8_FINALISTS
    finalist that keeps the most accuracy quantised, and delivers the QDQ INT8 model as model.onnx (fp32 beside it as model.fp32.onnx); `ort_format` adds model.ort and its
    reduced-build operator config. Raises BudgetNotMet (CLI exit 3) when no candidate measures within the
    budget: the model is then left only as model.over-budget.onnx.
    `epochs_scale`, `train_config`, `profile_resolutions` and `search_options` exist so that tests
    and benchmarks can shrink the work; they are part of the cache keys where they change results.
    """
    from hwnas.train.distributed import cpu_threads

    # training, scoring and fine-tuning alike use the CPUs that are idle when generate starts (train
    # re-checks between epochs); OMP_NUM_THREADS, when set, decides
    with cpu_threads("cpu"):
        return _generate(budget_ms, out, data=data, space=space, table=table, force=force, progress=progress,
                         epochs_scale=epochs_scale, train_config=train_config, profile_resolutions=profile_resolutions,
                         search_options=search_options, device=device, time_budget=time_budget, val_images=val_images,
                         force_table=force_table, supernet=supernet, int8=int8, ort_format=ort_format)


def _generate(budget_ms: float, out: str | os.PathLike[str], *, data: str, space: str, table: Any, force: bool,
              progress: bool, epochs_scale: float, train_config: Any, profile_resolutions: list[int] | None,
              search_options: dict[str, Any] | None, device: str | None, time_budget: float | str | None,
              val_images: int | None, force_table: bool, int8: bool, ort_format: bool,
              supernet: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    import math

    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    warnings: list[str] = []
    if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
        raise UserError(f"--budget-ms: must be a positive number of milliseconds, got {budget_ms}")
    from hwnas.train.plan import parse_duration

    budget_s = parse_duration(time_budget) if time_budget is not None else None
    if budget_s is not None and epochs_scale != 1.0:
        raise UserError("--time-budget and --epochs-scale both set the training length; give one of them")
    if val_images is not None and val_images < 1:
        raise UserError(f"--val-images must be >= 1, got {val_images}")
    out_dir = check_out_dir(out, force)
    if budget_s is not None:
        from datetime import datetime, timedelta, timezone

        from hwnas.train.plan import format_duration

        end = datetime.now(timezone.utc) + timedelta(seconds=budget_s)
        _log(progress, f"generate: time budget {format_duration(budget_s)}: supernet {format_duration(TRAIN_SHARE * budget_s)} "
                       f"(if that trains it {MIN_SUPERNET_EPOCHS} epochs; else no supernet, and one subnet trains for the whole "
                       f"time), search {format_duration(SEARCH_SHARE * budget_s)}, then fine-tuning the chosen subnet; "
                       f"ends about {end:%Y-%m-%d %H:%M} UTC")

    # data and space (cheap; validates the user's choices before anything slow)
    t = time.perf_counter()
    from hwnas.data import load_dataset
    from hwnas.space import load_space, with_classes

    ds = load_dataset(data)
    sp = with_classes(load_space(space), ds.num_classes) if supernet is None else given_supernet_space(supernet, ds, data)
    from hwnas.train.config import resolve_config

    cfg = resolve_config(sp, data, train_config).scaled(epochs_scale)
    stages["data"] = time.perf_counter() - t

    # 1. latency table
    t = time.perf_counter()
    from hwnas.latency import latency_model, load_table
    if table is not None:
        table_path, table_cache = Path(table), "given"
        tab = load_table(table_path, sp)
        if int8 and not tab.int8:
            raise UserError(f"--table {table_path}: an fp32 latency table, but --int8 searches with INT8 latencies; give a "
                            "table written by `hwnas profile --int8` (or leave out --table to profile this machine)")
    else:
        table_path, hit = cached_table(sp, int8=int8, resolutions=profile_resolutions, progress=progress)
        table_cache = "hit" if hit else "miss"
        tab = load_table(table_path, sp)
    busy = trust_table(tab, table_path, given=table is not None, force=force_table)
    if busy:
        warnings.append(busy)
        _log(progress, f"warning: {busy}")
    if tab.int8 and not int8:
        _log(progress, "note: the latency table is for INT8 models, so the INT8 model is delivered (as with --int8)")
    int8 = bool(tab.int8)
    predictor = latency_model(tab, sp)
    min_ms = predictor.min_latency_ms()
    stages["profile"] = time.perf_counter() - t
    _log(progress, f"table: {table_path} ({table_cache}); fastest subnet predicted {min_ms:.3f} ms")
    if budget_ms < min_ms:
        raise UserError(f"--budget-ms {budget_ms:g}: no subnet of '{sp.name}' is that fast on this target; the fastest is "
                        f"predicted at {min_ms:.3f} ms, so use --budget-ms {math.ceil(min_ms * 1000) / 1000:g} or more")

    local = table_is_local(tab)
    direct = None
    if budget_s is not None and train_config is None and supernet is None:
        # a supernet is worth training only if its share of the time buys it enough epochs (probed, not guessed)
        t = time.perf_counter()
        from hwnas.train.api import supernet_epochs_for

        sn_epochs = supernet_epochs_for(sp, ds, cfg, TRAIN_SHARE * budget_s, device)
        stages["plan"] = time.perf_counter() - t
        if sn_epochs < MIN_SUPERNET_EPOCHS:
            t = time.perf_counter()
            from hwnas.generate_direct import run_direct
            from hwnas.supernet import Supernet

            fresh = Supernet(sp)  # untrained: the network structure for timing and export only

            direct = run_direct(sp, tab, predictor, ds, float(budget_ms), deadline=t0 + budget_s,
                                supernet_epochs=sn_epochs, device=device, progress=progress, flip=cfg.flip,
                                log=lambda m: _log(progress, m),
                                check=lambda cand: check_candidate(sp, tab, cand, float(budget_ms), local, progress),
                                reserve_s=lambda sub: export_reserve_s(fresh, ds, sub), local=local)
            stages["direct"] = time.perf_counter() - t
            warnings.append(direct.reason)
    if direct is not None:
        return _finish_direct(direct, sp, tab, predictor, ds, float(budget_ms), out_dir, data=data, table_path=table_path,
                              table_cache=table_cache, local=local, stages=stages, warnings=warnings, t0=t0,
                              budget_s=budget_s, cfg=cfg, progress=progress, int8=int8, ort_format=ort_format)

    # 2. supernet
    t = time.perf_counter()
    train_budget = TRAIN_SHARE * budget_s if budget_s is not None else None
    if supernet is not None:  # no training: the given CKPT (its time share goes to fine-tuning)
        ckpt, sup_cache = Path(supernet), "given"
    else:
        ckpt, hit = cached_supernet(sp, data, ds.fingerprint, cfg, device=device, progress=progress, time_budget_s=train_budget)
        sup_cache = "hit" if hit else "miss"
    stages["train"] = time.perf_counter() - t
    _log(progress, f"supernet: {ckpt} ({sup_cache})")
    from hwnas.train import load_supernet

    net, sn_meta = load_supernet(ckpt, map_location="cpu", space=sp)
    if budget_s is not None and 0 < sn_meta.epoch < MIN_SUPERNET_EPOCHS:
        enough = budget_s * MIN_SUPERNET_EPOCHS / sn_meta.epoch
        warnings.append(f"the supernet trained {sn_meta.epoch:.2f} epochs in its share of the time budget: too few for its "
                        f"accuracies to rank subnets well, so the choice rests mostly on latency and fine-tuning; about "
                        f"--time-budget {math.ceil(enough / 60)}m (or a GPU) gives it {MIN_SUPERNET_EPOCHS} epochs")
        _log(progress, f"note: {warnings[-1]}")

    # 3. search (sized to its share of the time budget, if there is one)
    t = time.perf_counter()
    from hwnas.search import SearchConfig, search_supernet

    scfg = SearchConfig.model_validate(search_options) if search_options else None
    if budget_s is not None and search_options is None:
        val_images = val_images or min(SEARCH_VAL_IMAGES, int(ds.val_x.shape[0]))
        search_s = SEARCH_SHARE * budget_s
        scfg = sized_search(net, ds, search_s, val_images)
        _log(progress, f"search: {search_s:.0f} s of the time budget: {scfg.init_samples} + {scfg.iterations} x "
                       f"{scfg.candidates_per_iteration} subnets scored on {val_images} validation images")
    # a second, larger budget lets the front reach past the user's, so the plot shows what more time would buy
    result = search_supernet(ckpt, table_path, [float(budget_ms), round(LOOKAHEAD * float(budget_ms), 6)], data, out_dir,
                             force=True, config=scfg,
                             val_images=val_images, log=(lambda m: _log(progress, f"search: {m}")))
    assert result is not None  # None only on a torchrun worker; generate runs in one process
    from hwnas.search.report import plot_front

    plot_front(result, out_dir / "pareto.png", f"{sp.name} on {data}: front found, budget {budget_ms:g} ms "
               f"(greyed: above it)", budget_ms=float(budget_ms))
    stages["search"] = time.perf_counter() - t

    # 4. with --int8, the search's best few ranked by the accuracy they keep once quantised
    front = [e for e in result.front if e.predicted_latency_ms <= budget_ms]
    first, finalists = result.best[0], []
    if int8:
        t = time.perf_counter()
        chosen = int8_finalists(front)
        finalists = score_finalists(net, ds, chosen, val_images=val_images, seed=result.seed, progress=progress)
        first = next((c for c, f in zip(chosen, finalists) if f.start), first)
        stages["int8_finalists"] = time.perf_counter() - t

    # 5. the front member to ship: a quick measured check (latency does not depend on the weights)
    t = time.perf_counter()
    if not local:
        warnings.append("the latency table was measured on another target, so the latency measured here does not decide "
                        "the budget check; the predicted latency is the target's")
        _log(progress, f"note: {warnings[-1]}")
    cand, attempts = choose_within_budget(sp, tab, front, first, budget_ms, local, progress)
    stages["measure"] = time.perf_counter() - t

    # 6. fine-tune the chosen subnet with what is left of the time budget
    t = time.perf_counter()
    tuned, finetune = None, None
    if budget_s is not None:
        left = budget_s - (time.perf_counter() - t0) - export_reserve_s(net, ds, cand.subnet)
        if left >= MIN_FINETUNE_S:
            from hwnas.errors import TrainingDiverged

            try:
                tuned, finetune = finetune_subnet(net, cand.subnet, ds, left, device=device, progress=progress,
                                                  flip=cfg.flip)
            except TrainingDiverged as e:
                warnings.append(f"fine-tuning stopped ({e}); the model ships with the supernet's weights")
                _log(progress, f"warning: {warnings[-1]}")
        else:
            warnings.append(f"no time was left to fine-tune the chosen subnet ({left:.0f} s); it ships with the supernet's weights")
            _log(progress, f"note: {warnings[-1]}")
    stages["finetune"] = time.perf_counter() - t

    # 7. export candidates, each measured as delivered, until one keeps the budget (and, INT8, its accuracy)
    t = time.perf_counter()
    delivery = export_within_budget(net, ds, tab, front, cand, attempts, budget_ms, out_dir, local=local, int8=int8,
                                    ort_format=ort_format, tuned=tuned, progress=progress)
    explain_miss(delivery, tab, local=local, progress=progress)
    exp, attempts = delivery.export, delivery.attempts
    stages["export"] = time.perf_counter() - t
    feed_back_measured(tab, sp, attempts, table_path, cached=table_cache != "given", local=local, progress=progress)
    warnings.extend(exp.warnings)
    warnings.extend(delivery.warnings)
    chosen = net.space.validate_subnet(exp.subnet)
    best_path = out_dir / "best.json"
    if chosen.model_dump(mode="json") != result.best[0].subnet.model_dump(mode="json"):  # best.json names the subnet delivered
        write_json(best_path, chosen.model_dump(mode="json"))

    # 8. report
    t = time.perf_counter()
    report_path = out_dir / "report.md"
    stages["report"] = 0.0  # filled in below, once the report has been rendered
    seconds = time.perf_counter() - t0
    files = delivery.files
    res = GenerateResult(
        onnx=str(files["onnx"]), report=str(report_path), measured_latency_ms=delivery.measured_ms,
        predicted_latency_ms=float(exp.predicted_latency_ms if exp.predicted_latency_ms is not None else attempts[-1].predicted_latency_ms),
        val_acc=exp.int8_val_acc if int8 and exp.int8_val_acc is not None else exp.val_acc,
        budget_ms=float(budget_ms), seconds=seconds, within_budget=delivery.within_budget, val_acc_torch=exp.val_acc_torch,
        predicted_acc=delivery.predicted_acc, max_abs_diff=exp.max_abs_diff, best=str(best_path),
        pareto=str(out_dir / "pareto.json"), plot=str(out_dir / "pareto.png"), space=sp.name, data=data,
        subnet=exp.subnet, macs=exp.macs, params=exp.params, table=str(table_path), supernet=str(ckpt),
        cache={"table": table_cache, "supernet": sup_cache}, stage_seconds=stages, attempts=attempts,
        **_delivery_fields(delivery, int8), warnings=warnings, time_budget_s=budget_s, finetune=finetune, schedule=cfg.schedule,
        int8_finalists=finalists,
    )
    write_text(report_path, render_report(res, exp, tab, sp, result, cfg, list(ds.mean), list(ds.std)))
    res.stage_seconds["report"] = time.perf_counter() - t
    res.seconds = time.perf_counter() - t0
    write_text(report_path, render_report(res, exp, tab, sp, result, cfg, list(ds.mean), list(ds.std)))  # with the final timings
    _raise_if_over(res, delivery, budget_ms, report_path)
    _log(progress, f"done in {res.seconds:.1f} s: {files['onnx']} measured {res.measured_latency_ms:.3f} ms "
                   f"(budget {budget_ms:g} ms), validation accuracy {res.val_acc:.4f}; report {report_path}")
    return res.model_dump(mode="json")


def trust_table(tab: Any, path: Path, *, given: bool, force: bool) -> str | None:
    """A given table its profiler found busy is refused (exit 2) unless forced. When generate profiled this
    machine itself and the machine stayed busy through both rounds, it goes on with a warning (returned):
    the delivered model is still measured against the budget (exit 3 if over), and the next run profiles
    again."""
    from hwnas.latency.table import check_trusted

    if given or force:
        check_trusted(tab, path, force=force)
        return None
    if tab.noise is not None and not tab.noise.trusted:
        return (f"this machine was busy while it was profiled ({tab.noise.reason}); latency predictions may be off, "
                "but the delivered model is measured against the budget")
    return None


def given_supernet_space(ckpt: str | os.PathLike[str], ds: Any, data: str) -> Any:
    """The space of `generate --supernet CKPT` (the checkpoint's own), checked against the data's classes."""
    from hwnas.train.checkpoint import load_checkpoint, read_meta

    sp = read_meta(ckpt, load_checkpoint(ckpt)).get_space()
    if sp.num_classes != ds.num_classes:
        raise UserError(f"--supernet {ckpt}: its classifier has {sp.num_classes} classes but --data {data} has "
                        f"{ds.num_classes}; pass the data it was trained on, or transfer it first with "
                        f"`hwnas train --init {ckpt} --data {data} ...`")
    return sp


def _finish_direct(direct: Any, sp: Any, tab: Any, predictor: Any, ds: Any, budget_ms: float, out_dir: Path, *, data: str,
                   table_path: Path, table_cache: str, local: bool, stages: dict[str, float], warnings: list[str], t0: float,
                   budget_s: float, cfg: Any, progress: bool, int8: bool = False, ort_format: bool = False) -> dict[str, Any]:
    """Deliver the directly trained subnet like any other (export_within_budget: measured, exit 3 when over),
    write the search-style outputs and the report."""
    from types import SimpleNamespace

    from hwnas.generate_direct import write_direct_outputs
    from hwnas.supernet import Supernet

    t = time.perf_counter()
    cand = SimpleNamespace(subnet=direct.subnet, predicted_latency_ms=direct.predicted_latency_ms, predicted_acc=None)
    delivery = export_within_budget(Supernet(sp), ds, tab, [], cand, direct.attempts, budget_ms, out_dir, local=local,
                                    int8=int8, ort_format=ort_format, tuned=direct.weights, progress=progress)
    explain_miss(delivery, tab, local=local, progress=progress)
    exp, attempts, files = delivery.export, delivery.attempts, delivery.files
    stages["export"] = time.perf_counter() - t
    feed_back_measured(tab, sp, attempts, table_path, cached=table_cache != "given", local=local, progress=progress)
    warnings.extend(exp.warnings)
    warnings.extend(delivery.warnings)
    val_acc = exp.int8_val_acc if int8 and exp.int8_val_acc is not None else exp.val_acc
    write_direct_outputs(direct, sp, predictor, val_acc, budget_ms, out_dir,
                         f"{sp.name} on {data}: no supernet (time budget too short); candidates within {budget_ms:g} ms")
    report_path = out_dir / "report.md"
    res = GenerateResult(
        onnx=str(files["onnx"]), report=str(report_path), measured_latency_ms=delivery.measured_ms,
        predicted_latency_ms=direct.predicted_latency_ms, val_acc=val_acc, budget_ms=budget_ms,
        seconds=time.perf_counter() - t0, within_budget=delivery.within_budget, val_acc_torch=exp.val_acc_torch,
        predicted_acc=None, max_abs_diff=exp.max_abs_diff, best=str(out_dir / "best.json"),
        pareto=str(out_dir / "pareto.json"), plot=str(out_dir / "pareto.png"), space=sp.name, data=data,
        subnet=exp.subnet, macs=exp.macs, params=exp.params, table=str(table_path), supernet="",
        cache={"table": table_cache, "supernet": "skipped"}, stage_seconds=stages, attempts=attempts,
        **_delivery_fields(delivery, int8), warnings=warnings, time_budget_s=budget_s, finetune=direct.train,
        schedule="", route="direct",
    )
    write_text(report_path, render_report(res, exp, tab, sp, None, cfg, list(ds.mean), list(ds.std)))
    _raise_if_over(res, delivery, budget_ms, report_path)
    _log(progress, f"done in {res.seconds:.1f} s: {files['onnx']} measured {res.measured_latency_ms:.3f} ms (budget {budget_ms:g} ms), "
                   f"validation accuracy {val_acc:.4f}; report {report_path}")
    return res.model_dump(mode="json")


def _delivery_fields(delivery: Delivery, int8: bool) -> dict[str, Any]:
    """GenerateResult fields that describe what export_within_budget delivered (precision, fp32 twin, .ort)."""
    exp, files = delivery.export, delivery.files
    return dict(machine_drift_pct=delivery.machine_drift_pct, precision="int8" if int8 else "fp32", fp32_onnx=str(files["fp32"]) if "fp32" in files else None,
                fp32_val_acc=exp.val_acc, int8_acc_change=exp.int8_acc_change if int8 else None,
                export_latency_ms=delivery.export_ms, ort=str(files["ort"]) if "ort" in files else None,
                ort_config=str(files["ort_config"]) if "ort_config" in files else None)


def _raise_if_over(res: GenerateResult, delivery: Delivery, budget_ms: float, report_path: Path) -> None:
    """BudgetNotMet (CLI exit 3, the result attached for --json) when the delivered model is over the budget."""
    if res.within_budget:
        return
    from hwnas.errors import BudgetNotMet

    raise BudgetNotMet(
        f"no candidate measured within the {budget_ms:g} ms budget after {len(res.attempts)} attempt(s): the fastest measured "
        f"{delivery.fastest_ms:.4f} ms; the model is left only as {delivery.files['onnx']} (see {report_path})"
        + "".join(f". {d}" for d in [drift_sentence(delivery)] if d),
        res.model_dump(mode="json"))


SLOWER_PCT = 5.0
"""After a miss, reference subnets running this much slower than the table recorded: the machine, not the
choice, missed the budget (the profiler refuses a table whose own two runs drift this far apart)."""


def explain_miss(delivery: Delivery, tab: Any, *, local: bool, progress: bool) -> None:
    """After a measured miss on this machine, time the table's reference subnets once more (a few seconds): a
    machine running slower than when it was profiled explains the miss, and the report and the error say so."""
    if delivery.within_budget or not local:
        return
    from hwnas.latency.validate import drift_now

    try:
        delivery.machine_drift_pct = drift_now(tab, progress=progress)
    except Exception as e:  # noqa: BLE001 - a diagnosis must not turn a miss into a crash
        _log(progress, f"note: could not re-time the reference subnets ({type(e).__name__}: {e})")
        return
    sentence = drift_sentence(delivery)
    if sentence:
        delivery.warnings.append(sentence)
        _log(progress, f"note: {sentence}")


def drift_sentence(delivery: Delivery) -> str:
    d = delivery.machine_drift_pct
    if d is None or d <= SLOWER_PCT:
        return ""
    return (f"this machine now runs the latency table's own reference subnets {d:+.1f}% slower than when the table was "
            f"profiled; at that speed the model would take about {delivery.measured_ms / (1 + d / 100):.3f} ms. The machine's "
            f"speed, not the choice, missed the budget: run again once it is back to its usual speed, or profile it again "
            f"(`hwnas profile`) if this is its speed now")


def sized_search(net: Any, ds: Any, seconds: float, val_images: int) -> Any:
    """A search config whose real evaluations fit `seconds`, from the measured cost of one evaluation."""
    from hwnas.search import SearchConfig
    from hwnas.search.pipeline import DEFAULT_CALIB_IMAGES
    from hwnas.data import calibration_subset
    from hwnas.train import evaluate_subnet

    small = ds.with_val_subset(val_images)
    calib = calibration_subset(ds, DEFAULT_CALIB_IMAGES)
    evaluate_subnet(net, net.space.smallest(), small, calib=calib)  # warm-up
    t = time.perf_counter()
    evaluate_subnet(net, net.space.largest(), small, calib=calib)  # the dearest evaluation: an upper bound
    per_eval = max(time.perf_counter() - t, 1e-3)
    # the predictor fits and NSGA-II runs take the rest: about 20% of the search, at least 3 s per round
    n = max(8, int(0.8 * seconds / per_eval))
    init = max(6, int(0.55 * n))
    iterations = 3 if n >= 40 else 2
    per_iter = max(2, (n - init) // iterations)
    return SearchConfig(init_samples=init, iterations=iterations, candidates_per_iteration=per_iter,
                        cv_folds=min(5, max(2, init // 4)), predictors=["ridge", "gbt"],
                        time_limit_s=max(3.0, 0.05 * seconds), generations=40)


def export_reserve_s(net: Any, ds: Any, subnet: Any) -> float:
    """Seconds the final export is expected to take (BN recalibration, PyTorch and ONNX Runtime passes
    over the validation images, the latency measurement), from one timed forward pass."""
    from hwnas.export.core import CALIBRATION_IMAGES
    from hwnas.train.evaluate import forward_seconds_per_image

    n = min(256, int(ds.val_x.shape[0]))
    per_image = forward_seconds_per_image(net.extract(subnet), ds.val_x[:n], subnet.resolution, ds.mean, ds.std)
    images = CALIBRATION_IMAGES + 2 * int(ds.val_x.shape[0])
    return 5.0 + 1.5 * per_image * images


def finetune_subnet(net: Any, subnet: Any, ds: Any, seconds: float, *, device: str | None, progress: bool,
                    flip: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train the chosen subnet further for `seconds`, starting from its inherited weights and
    with the FINETUNE_RECIPE (mirroring images only when `flip`: the training config's choice, off for
    digits); returns (network, summary). Threads are generate()'s (one on CPU)."""
    from hwnas.train.standalone import StandaloneRecipe, train_network
    from hwnas.train.distributed import resolve_device

    from hwnas.data import calibration_subset
    from hwnas.train import recalibrate_bn

    dev = resolve_device(device)
    student = net.extract(subnet)
    # start from this subnet's own BN statistics (the supernet's are shared); training then keeps them
    # current, and the export keeps them (recalibrating a trained network's statistics cost 3 points)
    recalibrate_bn(student, calibration_subset(ds), subnet.resolution, ds.mean, ds.std)
    recipe = StandaloneRecipe(**FINETUNE_RECIPE, flip=flip)
    teacher = net.extract(net.space.largest(subnet.resolution)) if recipe.kd_weight > 0 else None
    _log(progress, f"finetune: the chosen subnet for {seconds:.0f} s (lr {recipe.lr}"
                   + (", distilled from the largest subnet)" if teacher is not None else ")"))
    out = train_network(student, ds, resolution=subnet.resolution, time_budget_s=seconds, recipe=recipe,
                        teacher=teacher, device=dev, evaluate=False, progress=progress, label="finetune")
    student = student.cpu().eval()
    summary = {"seconds": round(out["seconds"], 1), "epochs": round(out["epochs"], 2), "iters": out["iters"],
               "images_per_s": round(out["images_per_s"], 1), "recipe": recipe.model_dump()}
    return student, summary


FINETUNE_RECIPE: dict[str, Any] = dict(lr=0.05, kd_weight=0.0, warmup_fraction=0.02)
"""Fine-tuning from inherited weights: half the from-scratch learning rate, labels only. Distilling from
the supernet's largest subnet was measured to hurt at CPU scale, where that teacher is itself far from
trained (BENCHMARKS.md: 22.3% with it against 36.0% without, same subnet, same 200 s)."""


def int8_finalists(front: list[Any], n: int = INT8_FINALISTS) -> list[Any]:
    """The `n` members of `front` (already within the budget) that the search rates most accurate, in its
    order (ties: the faster first, as the search picks its best)."""
    return sorted(front, key=lambda e: (-e.predicted_acc, e.predicted_latency_ms))[:n]


def score_finalists(net: Any, ds: Any, finalists: list[Any], *, val_images: int | None, seed: int,
                    progress: bool) -> list[Int8Finalist]:
    """Score each finalist quantised (`score_int8`, on the search's validation images) and mark as `start` the
    one with the best INT8 accuracy (ties: the earlier, i.e. the search's order)."""
    from hwnas.export import int8_score

    scored: list[Int8Finalist] = []
    for i, e in enumerate(finalists):
        s = int8_score.score_int8(net, e.subnet, ds, val_images=val_images, seed=seed)
        scored.append(Int8Finalist(subnet=e.subnet.model_dump(mode="json"), predicted_latency_ms=e.predicted_latency_ms,
                                   predicted_acc=e.predicted_acc, fp32_acc=s.fp32_acc, int8_acc=s.int8_acc,
                                   val_images=s.val_images))
        _log(progress, f"int8: finalist {i + 1} predicted {e.predicted_latency_ms:.3f} ms, search acc {e.predicted_acc:.4f}: "
                       f"fp32 acc {s.fp32_acc:.4f}, int8 acc {s.int8_acc:.4f} ({s.val_images} validation images)")
    if not scored:
        return scored
    best = max(range(len(scored)), key=lambda i: (scored[i].int8_acc, -i))
    scored[best] = scored[best].model_copy(update={"start": True})
    return scored


def choose_within_budget(space: Any, tab: Any, front: list[Any], best: Any, budget_ms: float, local: bool,
                         progress: bool) -> tuple[Any, list[Attempt]]:
    """Quick check before fine-tuning and export: time the search's choice as deployed (fp32, or QDQ INT8
    for an INT8 table) with untrained weights; while it is over the budget, walk to faster front members
    (bounded). Returns the front member to export first and every check."""
    cand = best
    attempts: list[Attempt] = []
    while True:
        attempts.append(check_candidate(space, tab, cand, budget_ms, local, progress))
        measured, ok = attempts[-1].measured_latency_ms, attempts[-1].within_budget
        nxt = None if ok or len(attempts) >= MAX_EXPORT_ATTEMPTS else next_candidate(front, cand, measured, budget_ms)
        if nxt is None:
            return cand, attempts
        cand = nxt


def check_candidate(space: Any, tab: Any, cand: Any, budget_ms: float, local: bool, progress: bool) -> Attempt:
    """Time one candidate (`.subnet`, `.predicted_latency_ms`, `.predicted_acc`) as deployed, with untrained
    weights (latency does not depend on them), against the budget: the quick check before training or export."""
    from hwnas.export.core import measure_subnet_ms

    measured = measure_subnet_ms(space, cand.subnet, tab)
    ok = measured <= budget_ms * (1 + BUDGET_TOLERANCE) or not local
    _log(progress, f"measure: candidate predicted {cand.predicted_latency_ms:.3f} ms measured {measured:.3f} ms"
                   + ("" if ok else f", over the {budget_ms:g} ms budget"))
    return Attempt(subnet=cand.subnet.model_dump(mode="json"), predicted_acc=cand.predicted_acc,
                   predicted_latency_ms=cand.predicted_latency_ms, measured_latency_ms=measured, within_budget=ok)


@dataclass
class Delivery:
    """What export_within_budget delivered: the export of the chosen candidate and the files in the output folder."""

    export: Any
    attempts: list[Attempt]
    files: dict[str, Path]
    within_budget: bool
    measured_ms: float
    export_ms: float
    fastest_ms: float
    predicted_acc: float | None
    warnings: list[str] = field(default_factory=list)
    machine_drift_pct: float | None = None


def export_within_budget(net: Any, ds: Any, tab: Any, front: list[Any], first: Any, attempts: list[Attempt], budget_ms: float,
                         out_dir: Path, *, local: bool, int8: bool, ort_format: bool, tuned: Any, progress: bool) -> Delivery:
    """Export candidates into a staging folder, walking down the front, until one keeps the budget when
    its delivered file is measured (twice: the export's measurement with the table's protocol, and once more as an
    application calls it; the slower counts) and,
    INT8, loses at most INT8_MAX_DROP accuracy against its fp32 model (bounded by MAX_EXPORT_ATTEMPTS).

    `tuned` (fine-tuned weights) applies to `first` only. The chosen files are moved into `out_dir` as
    model.* when within the budget, else the fastest one measured as model.over-budget.* (never model.onnx)."""
    import shutil
    import tempfile

    from hwnas.export import export_subnet
    from hwnas.export.onnx_stages import measure_as_called

    out_dir.mkdir(parents=True, exist_ok=True)  # the direct route reaches here before anything else wrote to it
    staging = Path(tempfile.mkdtemp(prefix=".hwnas-staging-", dir=out_dir))
    try:
        tried: list[tuple[Any, Any, Path, Attempt]] = []
        cand, weights = first, tuned
        while cand is not None and len(tried) < MAX_EXPORT_ATTEMPTS:
            folder = staging / f"attempt{len(tried) + 1}"
            folder.mkdir()
            acc_txt = f", accuracy {cand.predicted_acc:.4f}" if cand.predicted_acc is not None else ""
            _log(progress, f"export: candidate {len(tried) + 1} predicted {cand.predicted_latency_ms:.3f} ms{acc_txt}")
            exp = export_subnet(net, cand.subnet, ds, folder / ("model.fp32.onnx" if int8 else "model.onnx"), table=tab, int8=int8,
                                int8_out=folder / "model.onnx" if int8 else None, ort_format=ort_format, force=True,
                                predicted_acc=cand.predicted_acc, progress=progress, weights=weights)
            # once more, the delivered file called as an application calls it (session.run, numpy in and out); the
            # lower of two such medians, since a burst of load on a shared machine only ever adds time
            again = min(measure_as_called(folder / "model.onnx", cand.subnet.resolution, net.space.in_channels, exp.threads,
                                          exp.provider, tab.protocol) for _ in range(2))
            measured = max(exp.deployed_latency_ms, again)
            fits = measured <= budget_ms * (1 + BUDGET_TOLERANCE) or not local
            change = exp.int8_acc_change if int8 else None
            acc_ok = int8_keeps_accuracy(change)
            att = Attempt(subnet=cand.subnet.model_dump(mode="json"), predicted_acc=cand.predicted_acc,
                          predicted_latency_ms=cand.predicted_latency_ms, measured_latency_ms=measured, within_budget=fits,
                          kind="export", int8_acc_change=change)
            _log(progress, f"measure: delivered file {exp.deployed_latency_ms:.4f} ms, called as an application {again:.4f} ms: "
                           + ("within" if fits else "over") + f" the {budget_ms:g} ms budget"
                           + ("" if acc_ok else f"; INT8 loses {-100 * change:.2f} points of accuracy (more than {100 * INT8_MAX_DROP:g})"))
            tried.append((cand, exp, folder, att))
            attempts.append(att)
            if fits and acc_ok:
                break
            cand, weights = next_candidate(front, cand, measured, budget_ms, exclude=[c.subnet for c, *_ in tried]), None
        return _deliver(tried, attempts, budget_ms, out_dir, int8)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def feed_back_measured(tab: Any, sp: Any, attempts: list[Attempt], table_path: Path, *, cached: bool, local: bool,
                       progress: bool) -> None:
    """Teach generate's own cached table the latencies measured on the way (whole networks near the budget:
    the best calibration points there are). A table the user gave is never rewritten."""
    if not (cached and local and attempts):
        return
    from hwnas.latency.feedback import feed_back

    subs = [(sp.validate_subnet(a.subnet), a.measured_latency_ms) for a in attempts]
    fb = feed_back(tab, sp, subs)
    if fb.table is None:
        _log(progress, f"note: measured latencies not fed back into the cached table: {fb.reason}")
        return
    fb.table.save(table_path)  # atomic (temporary file, then rename)
    _log(progress, f"latency: {fb.added} measured latencies fed back into the cached table (their prediction error "
                   f"{100 * fb.error_before:.1f}% -> {100 * fb.error_after:.1f}%)")


def int8_keeps_accuracy(change: float | None) -> bool:
    """INT8 minus fp32 accuracy is acceptable (no INT8 model, or a loss of at most INT8_MAX_DROP; exact ties count)."""
    return change is None or change >= -INT8_MAX_DROP - 1e-9


def _deliver(tried: list[tuple[Any, Any, Path, Attempt]], attempts: list[Attempt], budget_ms: float, out_dir: Path,
             int8: bool) -> Delivery:
    """Pick among the exported candidates (within budget and accuracy, else within budget with the best INT8
    accuracy, else the fastest: over budget) and move its files into `out_dir` under the right name."""
    notes: list[str] = []
    good = [t for t in tried if t[3].within_budget and int8_keeps_accuracy(t[3].int8_acc_change)]
    fitting = [t for t in tried if t[3].within_budget]
    fastest = min(t[3].measured_latency_ms for t in tried)
    if good:
        pick = good[0]
    elif fitting:
        pick = max(fitting, key=lambda t: t[3].int8_acc_change or 0.0)
        notes.append(f"every candidate tried loses more than {100 * INT8_MAX_DROP:g} point(s) of accuracy when quantised to INT8; the one that "
                     f"loses least ({pick[3].int8_acc_change:+.2%}) is delivered")
    else:
        pick = min(tried, key=lambda t: t[3].measured_latency_ms)
    cand, exp, folder, att = pick
    att.accepted = True
    within = att.within_budget
    stem = "model" if within else OVER_BUDGET_STEM
    for stale in (out_dir / (st + rest) for st in ("model", OVER_BUDGET_STEM) for rest in DELIVERABLES):
        stale.unlink(missing_ok=True)  # a --force run must not leave an earlier run's model under either name
    files: dict[str, Path] = {}
    for src in sorted(folder.iterdir(), key=lambda p: p.name == "model.onnx"):  # the model itself last
        dst = out_dir / (stem + src.name[len("model"):])
        os.replace(src, dst)
        role = DELIVERABLES.get(src.name[len("model"):])
        if role:
            files[role] = dst
    if not within:
        notes.append(f"no candidate measured within the {budget_ms:g} ms budget after {len(attempts)} attempt(s); the fastest "
                     f"measured {fastest:.4f} ms and is left only as {files['onnx'].name}")
    return Delivery(export=exp, attempts=attempts, files=files, within_budget=within, measured_ms=att.measured_latency_ms,
                    export_ms=exp.deployed_latency_ms, fastest_ms=fastest, predicted_acc=cand.predicted_acc, warnings=notes)


def table_is_local(tab: Any) -> bool:
    """Was the table measured on this machine (so a local measurement can check the budget)?"""
    from hwnas.runtime import ortbench

    here = ortbench.fingerprint(tab.fingerprint.provider, tab.fingerprint.threads, 1)
    fp = tab.fingerprint
    return tab.source == "local" and fp.cpu_model == here["cpu_model"] and fp.cores == here["cores"]


def next_candidate(front: list[Any], tried: Any, measured_ms: float, budget_ms: float, exclude: list[Any] | None = None) -> Any | None:
    """After `tried` measured `measured_ms`: the most accurate untried front member whose prediction, corrected
    by how far off this measurement was, fits the budget; else (when `tried` was over the budget) the fastest
    faster one; None if there is none."""
    seen = {json_key(s) for s in (exclude or [])} | {json_key(tried.subnet)}
    pool = [e for e in front if json_key(e.subnet) not in seen]
    ratio = measured_ms / max(tried.predicted_latency_ms, 1e-12)
    fits = [e for e in pool if e.predicted_latency_ms * ratio <= budget_ms * (1 + BUDGET_TOLERANCE)]
    if fits:
        return max(fits, key=lambda e: (e.predicted_acc, -e.predicted_latency_ms))
    faster = [e for e in pool if e.predicted_latency_ms < tried.predicted_latency_ms]
    if faster and measured_ms > budget_ms * (1 + BUDGET_TOLERANCE):
        return min(faster, key=lambda e: e.predicted_latency_ms)
    return None


def json_key(subnet: Any) -> str:
    """A subnet's identity for "already tried" checks."""
    import json

    return json.dumps(subnet.model_dump(mode="json"), sort_keys=True)


# ---------------------------------------------------------------- report.md

def architecture_rows(space, subnet) -> list[list[str]]:
    """One row per layer group of the chosen network: what a reader needs to rebuild it."""
    from hwnas.space import build_plan

    plan = build_plan(space, subnet)
    rows = [["stem", "conv", str(plan.stem.kernel), "-", f"{plan.stem.in_channels} → {plan.stem.out_channels}",
             str(plan.stem.stride), "-", plan.stem.act, f"{plan.stem.in_size}×{plan.stem.in_size}"]]
    b_iter = iter(plan.blocks)
    if space.first_block is not None:
        b = next(b_iter)
        rows.append(["first", "dw-sep", str(b.kernel), "1", f"{b.in_channels} → {b.out_channels}", str(b.stride),
                     "yes" if b.se else "no", b.act, f"{b.in_size}×{b.in_size}"])
    for i, d in enumerate(subnet.depths):
        for j in range(d):
            b = next(b_iter)
            rows.append([f"stage {i + 1}", f"MBConv {j + 1}", str(b.kernel), str(b.expand),
                         f"{b.in_channels} → {b.mid_channels} → {b.out_channels}", str(b.stride), "yes" if b.se else "no",
                         b.act, f"{b.in_size}×{b.in_size}"])
    h = plan.head
    rows.append(["head", "1×1, pool" + (", 1×1" if h.feature_mix else "") + ", linear", "1", "-",
                 f"{h.in_channels} → {h.final_expand}" + (f" → {h.feature_mix}" if h.feature_mix else "") + f" → {h.num_classes}",
                 "-", "-", h.act, f"{h.in_size}×{h.in_size}"])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(res: GenerateResult, exp: Any, tab: Any, space: Any, search: Any, cfg: Any,
                  mean: list[float], std: list[float]) -> str:
    """report.md: what was built, how it measured, how long each stage took; honest about misses."""
    from hwnas import __version__

    sub = space.validate_subnet(res.subnet)
    fp = tab.fingerprint
    precision = "INT8 (QDQ)" if tab.int8 else "fp32"
    over = (res.measured_latency_ms - res.budget_ms) / res.budget_ms
    verdict = ("meets the budget" if res.measured_latency_ms <= res.budget_ms
               else f"is {over:.1%} over the budget" + ("" if res.within_budget else
                                                        ": no candidate measured within it, so it is delivered only under this name"))
    pred_err = (res.measured_latency_ms - res.predicted_latency_ms) / res.predicted_latency_ms if res.predicted_latency_ms else 0.0
    lines = [
        f"# hwnas model report: {res.budget_ms:g} ms budget",
        "",
        (f"`{Path(res.onnx).name}` ({precision}) is the most accurate subnet of `{res.space}` that the search found under "
         if res.route == "supernet" else
         f"`{Path(res.onnx).name}` ({precision}) is a subnet of `{res.space}` chosen without a supernet (the time budget "
         f"was too short to train one; see below) and trained from scratch, under ")
        + f"**{res.budget_ms:g} ms**, trained and validated on `{res.data}`. Measured, it takes "
        f"**{res.measured_latency_ms:.3f} ms** per image and {verdict}; validation accuracy through ONNX Runtime is "
        f"**{res.val_acc:.2%}**.",
        "",
        "## Result",
        "",
        _md_table(["", "value"], [
            ["latency budget", f"{res.budget_ms:g} ms"],
            ["measured latency (ONNX Runtime, median, batch 1)", f"{res.measured_latency_ms:.3f} ms"],
            ["predicted latency (table)", f"{res.predicted_latency_ms:.3f} ms ({pred_err:+.1%} measured vs predicted)"],
            ["validation accuracy, ONNX Runtime", f"{res.val_acc:.2%} on {exp.val_images} images"],
            ["validation accuracy, PyTorch (fp32)", f"{res.val_acc_torch:.2%}"],
            ["predicted accuracy (search)", f"{res.predicted_acc:.2%}" if res.predicted_acc is not None else "-"],
            ["max abs difference ONNX Runtime vs PyTorch", f"{res.max_abs_diff:.2e}"],
            ["resolution", f"{sub.resolution}×{sub.resolution}"],
            ["MACs", f"{res.macs / 1e6:.2f} M"],
            ["parameters", f"{res.params / 1e6:.3f} M"],
        ]),
        "",
    ]
    if exp.int8_onnx:
        drop = exp.int8_acc_change
        lines += [f"INT8: accuracy {exp.int8_val_acc:.2%} ({drop:+.2%} vs the fp32 model of the same subnet, "
                  f"{exp.val_acc:.2%}), latency {exp.int8_measured_latency_ms:.3f} ms vs {exp.measured_latency_ms:.3f} ms fp32"
                  + (f" (`{Path(res.fp32_onnx).name}` is the fp32 model)." if res.fp32_onnx else ".")
                  + ("" if int8_keeps_accuracy(drop) else f" **The INT8 model loses more than {100 * INT8_MAX_DROP:g} point(s) of accuracy.**"), ""]
    if res.int8_finalists:
        lines += [(f"INT8 finalists: the {len(res.int8_finalists)} front member(s) within the budget that the search rated most "
                   f"accurate were quantised (supernet weights, before fine-tuning) and scored through ONNX Runtime on "
                   f"{res.int8_finalists[0].val_images} validation images; generate started from the best INT8 one:"), "",
                  _md_table(["finalist", "predicted ms", "search acc", "fp32 acc", "INT8 acc", "started here"],
                            [[str(i + 1), f"{f.predicted_latency_ms:.3f}", f"{f.predicted_acc:.2%}", f"{f.fp32_acc:.2%}",
                              f"{f.int8_acc:.2%}", "yes" if f.start else ""] for i, f in enumerate(res.int8_finalists)]), ""]
    if res.ort:
        lines += [f"ONNX Runtime Mobile: `{Path(res.ort).name}` (outputs checked equal to the ONNX model's) and "
                  f"`{Path(res.ort_config).name}` (operators for a reduced build: `--include_ops_by_config`).", ""]
    n_exp = sum(a.kind == "export" for a in res.attempts)
    lines += ["## Budget check", "",
              f"Candidates were timed as deployed (`check`: the graph with untrained weights, before "
              f"{'training' if res.route == 'direct' else 'fine-tuning'}; `export`: the "
              f"delivered file, measured with the tables' protocol and again as an application calls it, the slower counts); {n_exp} export attempt(s), at most {MAX_EXPORT_ATTEMPTS}"
              + (f"; an INT8 model losing more than {100 * INT8_MAX_DROP:g} point(s) of accuracy sends generate to the next candidate" if res.precision == "int8" else "")
              + ":", "",
              _md_table(["attempt", "kind", "predicted ms", "measured ms", "predicted acc", "INT8 acc change", "within budget", "delivered"],
                        [[str(i + 1), a.kind, f"{a.predicted_latency_ms:.3f}", f"{a.measured_latency_ms:.3f}",
                          f"{a.predicted_acc:.2%}" if a.predicted_acc is not None else "-",
                          f"{a.int8_acc_change:+.2%}" if a.int8_acc_change is not None else "-",
                          "yes" if a.within_budget else "no", "yes" if a.accepted else ""]
                         for i, a in enumerate(res.attempts)]), ""]
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in res.warnings] + [""]
    lines += [
        "## Architecture",
        "",
        _md_table(["stage", "block", "kernel", "expand", "channels", "stride", "SE", "activation", "input"], architecture_rows(space, sub)),
        "",
        "Input: `input`, float32 [batch, 3, {r}, {r}]: RGB scaled to 0..1, resized (bilinear) to {r}×{r}, minus mean "
        "{m}, divided by std {s}. Output: `logits` [batch, {c}]. These are also in the model's metadata "
        "(`hwnas.preprocessing`).".format(r=sub.resolution, m=[round(v, 4) for v in mean],
                                            s=[round(v, 4) for v in std], c=space.num_classes),
        "",
        "## Accuracy–latency trade-off",
        "",
        "![Pareto front](pareto.png)",
        "",
        *([f"The search looked up to {LOOKAHEAD:g}× the budget so the plot shows what a larger budget would buy: front "
           f"members above the {res.budget_ms:g} ms budget are greyed (`best-{LOOKAHEAD * res.budget_ms:g}ms.json` is the best "
           "subnet there).", ""] if search is not None else []),
        (f"The search scored {search.evaluations_real} subnets on "
         + (f"{search.val_images} of the {search.val_images_total} validation images (a fixed, class-stratified subset)"
            if search.val_images is not None and search.val_images_total is not None and search.val_images < search.val_images_total
            else "the validation data")
         + f" (and {search.evaluations_predicted} "
         f"with its accuracy predictor); the front has {len(search.front)} members (`pareto.json`), hypervolume "
         f"{search.hypervolume:.4g}." if search is not None else
         f"No search: {res.finetune.get('candidates', 0) if res.finetune else 0} subnets at the data's resolution are predicted "
         f"within the budget (the plot shows them by latency and MACs); without a supernet nothing predicts their accuracy, so "
         f"the largest that trains at least {res.finetune.get('min_epochs', 0) if res.finetune else 0:g} epochs in the time "
         f"left was trained, and `pareto.json` holds it with its measured accuracy."),
        "",
        "## Time per stage",
        "",
        _md_table(["stage", "seconds", "cache"], [
            ["load data", f"{res.stage_seconds.get('data', 0):.1f}", "-"],
            ["latency table (profile)", f"{res.stage_seconds.get('profile', 0):.1f}", res.cache["table"]],
            ["supernet (train)", f"{res.stage_seconds.get('train', 0):.1f}", res.cache["supernet"]],
            ["plan (is a supernet worth training?)", f"{res.stage_seconds.get('plan', 0):.1f}", "-"],
            ["direct: choose, measure, train from scratch", f"{res.stage_seconds.get('direct', 0):.1f}", "-"],
            ["search", f"{res.stage_seconds.get('search', 0):.1f}", "-"],
            ["INT8 finalists (score quantised)", f"{res.stage_seconds.get('int8_finalists', 0):.1f}", "-"],
            ["measure candidates", f"{res.stage_seconds.get('measure', 0):.1f}", "-"],
            ["fine-tune the chosen subnet", f"{res.stage_seconds.get('finetune', 0):.1f}", "-"],
            ["export + checks + measurement", f"{res.stage_seconds.get('export', 0):.1f}", "-"],
            ["report", f"{res.stage_seconds.get('report', 0):.1f}", "-"],
            ["total", f"{res.seconds:.1f}", ""],
        ]),
        "",
        "## Provenance",
        "",
        f"- machine: {fp.cpu_model}, {fp.cores} cores, {fp.os}; ONNX Runtime {fp.onnxruntime}, {fp.provider}, "
        f"{fp.threads} thread(s), batch {fp.batch}",
        f"- latency table: `{res.table}` ({res.cache['table']})",
        (f"- supernet: `{res.supernet}` (given: not trained by this run)" if res.cache["supernet"] == "given" else
         f"- supernet: `{res.supernet}` ({res.cache['supernet']}), {cfg.schedule} schedule"
         + (f" planned for {TRAIN_SHARE:.0%} of the {res.time_budget_s:.0f} s time budget" if res.time_budget_s else
            f", {cfg.total_epochs:g} epochs") if res.route == "supernet" else
         f"- no supernet (direct route): one would have trained {res.finetune['supernet_epochs']:.2f} epochs in "
         f"{TRAIN_SHARE:.0%} of the {res.time_budget_s:.0f} s time budget, fewer than the {MIN_SUPERNET_EPOCHS} its "
         f"accuracies need"),
        (f"- training: {res.finetune['seconds']:.0f} s, {res.finetune['epochs']:.2f} epochs from scratch "
         f"(lr {res.finetune['recipe']['lr']})" if res.route == "direct" else
         f"- fine-tuning: {res.finetune['seconds']:.0f} s, {res.finetune['epochs']:.2f} epochs from the inherited weights"
         if res.finetune else "- no fine-tuning: the model has the supernet's weights"),
        f"- hwnas {__version__}",
        "",
    ]
    return "\n".join(lines)

