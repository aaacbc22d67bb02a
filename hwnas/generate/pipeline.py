"""`hwnas generate`: from data and a latency budget to a checked ONNX model in one call.

profile this machine (or use the given table) -> train the supernet (or reuse a cached one) -> search under the
budget -> export, check and measure -> report.md; or, when the time budget cannot train a supernet, the direct
route (`direct.py`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hwnas.errors import UserError
from hwnas.fileio import write_json
from hwnas.generate import time_budget as tb
from hwnas.generate.caches import cached_supernet, cached_table
from hwnas.generate.delivery import check_candidate, choose_within_budget, table_is_local
from hwnas.generate.direct import finish_direct, run_direct
from hwnas.generate.finish import deliver, finish
from hwnas.generate.int8 import int8_finalists, score_finalists
from hwnas.generate.results import LOOKAHEAD
from hwnas.progress import log as _log

DEFAULT_DATA = "digits"
DEFAULT_SPACE = "mbv3-tiny"


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
    profile_options: dict[str, Any] | None = None,
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

    `time_budget` ('45m', seconds) bounds the whole call: TRAIN_SHARE (time_budget.py) of it plans the supernet's
    training, SEARCH_SHARE sizes the search, and what is left after choosing the subnet (about 40%) fine-tunes
    it before the export. `val_images` scores the
    search's subnets on that many validation images (the export always reports all of them).
    `supernet`: a trained or imported CKPT to use instead of training one (its space is the space).
    `int8` profiles (or requires) an INT8 table, searches with INT8 latencies, starts from the INT8_FINALISTS
    finalist that keeps the most accuracy quantised, and delivers the QDQ INT8 model as model.onnx (fp32 beside it as model.fp32.onnx); `ort_format` adds model.ort and its
    reduced-build operator config. Raises BudgetNotMet (CLI exit 3) when no candidate measures within the
    budget: the model is then left only as model.over-budget.onnx.
    `epochs_scale`, `train_config`, `profile_resolutions`, `profile_options` (ProfileOptions fields) and
    `search_options` exist so that tests and benchmarks can shrink the work; they are part of the cache keys
    where they change results.
    """
    from hwnas.train.distributed import cpu_threads

    # training, scoring and fine-tuning alike use the CPUs that are idle when generate starts (train
    # re-checks between epochs); OMP_NUM_THREADS, when set, decides
    with cpu_threads("cpu"):
        return _generate(budget_ms, out, data=data, space=space, table=table, force=force, progress=progress,
                         epochs_scale=epochs_scale, train_config=train_config, profile_resolutions=profile_resolutions,
                         profile_options=profile_options, search_options=search_options, device=device,
                         time_budget=time_budget, val_images=val_images, force_table=force_table, supernet=supernet,
                         int8=int8, ort_format=ort_format)


def _generate(budget_ms: float, out: str | os.PathLike[str], *, data: str, space: str, table: Any, force: bool,
              progress: bool, epochs_scale: float, train_config: Any, profile_resolutions: list[int] | None,
              profile_options: dict[str, Any] | None,
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
        _log(progress, f"generate: time budget {format_duration(budget_s)}: supernet {format_duration(tb.TRAIN_SHARE * budget_s)} "
                       f"(if that trains it {tb.MIN_SUPERNET_EPOCHS} epochs; else no supernet, and one subnet trains for the whole "
                       f"time), search {format_duration(tb.SEARCH_SHARE * budget_s)}, then fine-tuning the chosen subnet; "
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
        table_path, hit = cached_table(sp, int8=int8, resolutions=profile_resolutions, progress=progress,
                                       options=profile_options)
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
        from hwnas.train.probe import supernet_epochs_for

        sn_epochs = supernet_epochs_for(sp, ds, cfg, tb.TRAIN_SHARE * budget_s, device)
        stages["plan"] = time.perf_counter() - t
        if sn_epochs < tb.MIN_SUPERNET_EPOCHS:
            t = time.perf_counter()
            from hwnas.supernet import Supernet

            fresh = Supernet(sp)  # untrained: the network structure for timing and export only

            direct = run_direct(sp, tab, predictor, ds, float(budget_ms), deadline=t0 + budget_s,
                                supernet_epochs=sn_epochs, device=device, progress=progress, flip=cfg.flip,
                                log=lambda m: _log(progress, m),
                                check=lambda cand: check_candidate(sp, tab, cand, float(budget_ms), local, progress),
                                reserve_s=lambda sub: tb.export_reserve_s(fresh, ds, sub), local=local)
            stages["direct"] = time.perf_counter() - t
            warnings.append(direct.reason)
    if direct is not None:
        return finish_direct(direct, sp, tab, predictor, ds, float(budget_ms), out_dir, data=data, table_path=table_path,
                             table_cache=table_cache, local=local, stages=stages, warnings=warnings, t0=t0,
                             budget_s=budget_s, cfg=cfg, progress=progress, int8=int8, ort_format=ort_format)

    # 2. supernet
    t = time.perf_counter()
    train_budget = tb.TRAIN_SHARE * budget_s if budget_s is not None else None
    if supernet is not None:  # no training: the given CKPT (its time share goes to fine-tuning)
        ckpt, sup_cache = Path(supernet), "given"
    else:
        ckpt, hit = cached_supernet(sp, data, ds.fingerprint, cfg, device=device, progress=progress, time_budget_s=train_budget)
        sup_cache = "hit" if hit else "miss"
    stages["train"] = time.perf_counter() - t
    _log(progress, f"supernet: {ckpt} ({sup_cache})")
    from hwnas.train import load_supernet

    net, sn_meta = load_supernet(ckpt, map_location="cpu", space=sp)
    if budget_s is not None and 0 < sn_meta.epoch < tb.MIN_SUPERNET_EPOCHS:
        enough = budget_s * tb.MIN_SUPERNET_EPOCHS / sn_meta.epoch
        warnings.append(f"the supernet trained {sn_meta.epoch:.2f} epochs in its share of the time budget: too few for its "
                        f"accuracies to rank subnets well, so the choice rests mostly on latency and fine-tuning; about "
                        f"--time-budget {math.ceil(enough / 60)}m (or a GPU) gives it {tb.MIN_SUPERNET_EPOCHS} epochs")
        _log(progress, f"note: {warnings[-1]}")

    # 3. search (sized to its share of the time budget, if there is one)
    t = time.perf_counter()
    from hwnas.search import SearchConfig, search_supernet

    scfg = SearchConfig.model_validate(search_options) if search_options else None
    if budget_s is not None and search_options is None:
        val_images = val_images or min(tb.SEARCH_VAL_IMAGES, int(ds.val_x.shape[0]))
        search_s = tb.SEARCH_SHARE * budget_s
        scfg = tb.sized_search(net, ds, search_s, val_images)
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
        left = budget_s - (time.perf_counter() - t0) - tb.export_reserve_s(net, ds, cand.subnet)
        if left >= tb.MIN_FINETUNE_S:
            from hwnas.errors import TrainingDiverged

            try:
                tuned, finetune = tb.finetune_subnet(net, cand.subnet, ds, left, device=device, progress=progress,
                                                  flip=cfg.flip)
            except TrainingDiverged as e:
                warnings.append(f"fine-tuning stopped ({e}); the model ships with the supernet's weights")
                _log(progress, f"warning: {warnings[-1]}")
        else:
            warnings.append(f"no time was left to fine-tune the chosen subnet ({left:.0f} s); it ships with the supernet's weights")
            _log(progress, f"note: {warnings[-1]}")
    stages["finetune"] = time.perf_counter() - t

    # 7. export candidates, each measured as delivered, until one keeps the budget (and, INT8, its accuracy)
    delivery = deliver(net, ds, tab, sp, front, cand, attempts, budget_ms, out_dir, tuned=tuned, table_path=table_path,
                       table_cache=table_cache, local=local, int8=int8, ort_format=ort_format, stages=stages,
                       warnings=warnings, progress=progress)
    exp = delivery.export
    chosen = net.space.validate_subnet(exp.subnet)
    if chosen.model_dump(mode="json") != result.best[0].subnet.model_dump(mode="json"):  # best.json names the subnet delivered
        write_json(out_dir / "best.json", chosen.model_dump(mode="json"))

    # 8. result and report
    predicted_ms = exp.predicted_latency_ms if exp.predicted_latency_ms is not None else delivery.attempts[-1].predicted_latency_ms
    return finish(delivery, sp=sp, tab=tab, ds=ds, cfg=cfg, search=result, budget_ms=budget_ms, out_dir=out_dir, data=data,
                  table_path=table_path, stages=stages, warnings=warnings, t0=t0, budget_s=budget_s, int8=int8,
                  progress=progress, predicted_latency_ms=float(predicted_ms), predicted_acc=delivery.predicted_acc,
                  supernet=str(ckpt), cache={"table": table_cache, "supernet": sup_cache}, finetune=finetune,
                  schedule=cfg.schedule, int8_finalists=finalists)


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
