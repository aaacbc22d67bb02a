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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hwnas.cache import cache_dir, digest
from hwnas.errors import UserError
from hwnas.fileio import write_json, write_text

DEFAULT_DATA = "digits"
DEFAULT_SPACE = "mbv3-tiny"
BUDGET_TOLERANCE = 0.05
"""The exported model's measured latency may exceed the budget by at most this fraction."""
MAX_EXPORT_ATTEMPTS = 4
OUTPUT_NAMES = ("model.onnx", "best.json", "pareto.json", "pareto.png", "report.md")


class Attempt(BaseModel):
    """One exported candidate and how it measured against the budget."""

    model_config = ConfigDict(extra="forbid")
    subnet: dict[str, Any]
    predicted_acc: float | None
    predicted_latency_ms: float
    measured_latency_ms: float
    within_budget: bool


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
    int8_onnx: str | None = None
    warnings: list[str] = Field(default_factory=list)


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


def supernet_cache_key(space, data_fingerprint: str, config) -> dict[str, Any]:
    """Everything that decides the trained weights: space, data bytes, training config, code version."""
    from hwnas import __version__

    return {"space": space.to_file_dict(), "data": data_fingerprint, "config": config.model_dump(mode="json"), "hwnas": __version__}


def cached_table(space, *, threads: int = 1, provider: str = "CPUExecutionProvider", int8: bool = False,
                 resolutions: list[int] | None = None, progress: bool = True) -> tuple[Path, bool]:
    """(path, hit): the cached table for this machine, profiling it first on a miss."""
    from hwnas.latency import load_table

    key = digest(table_cache_key(space, threads=threads, provider=provider, int8=int8, resolutions=resolutions))
    path = cache_dir("tables") / f"{space.name}-{key}.json"
    if path.is_file():
        try:
            load_table(path, space)
            return path, True
        except UserError as e:  # damaged cache entry: measure again rather than fail
            _log(progress, f"note: ignoring a damaged cached table ({e})")
    from hwnas.latency import profile_space

    _log(progress, f"profile: measuring every distinct block of '{space.name}' on this machine (cached in {path.parent})")
    # TABLE files are written atomically (temporary name, then rename): no half cache entry is possible
    profile_space(space, path, threads=threads, provider=provider, resolutions=resolutions, int8=int8, progress=progress)
    return path, False


def cached_supernet(space, data: str, data_fingerprint: str, config, *, device: str | None = None,
                    progress: bool = True) -> tuple[Path, bool]:
    """(path, hit): the cached trained supernet for these inputs, training it first on a miss.

    Training goes to a `.partial` checkpoint that an interrupted run resumes; only a finished
    checkpoint is renamed to the cache name."""
    from hwnas.train import train_supernet

    key = digest(supernet_cache_key(space, data_fingerprint, config))
    path = cache_dir("supernets") / f"{space.name}-{key}.pt"
    if path.is_file():
        return path, True
    partial = path.with_name(f".{path.stem}.partial.pt")
    _log(progress, f"train: the '{space.name}' supernet on {data}, {config.total_epochs} epochs (cached in {path.parent})")
    if partial.is_file():
        try:
            _log(progress, f"train: resuming the interrupted run in {partial}")
            train_supernet(space, data, partial, config=config, device=device, resume=True, progress=progress)
        except UserError as e:  # damaged or foreign partial checkpoint: start over
            _log(progress, f"note: cannot resume {partial} ({e}); training from the start")
            partial.unlink(missing_ok=True)
    if not partial.is_file():
        train_supernet(space, data, partial, config=config, device=device, resume=False, progress=progress)
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
) -> dict[str, Any]:
    """The whole pipeline; returns the SPEC `generate --json` keys (and more).

    `epochs_scale`, `train_config`, `profile_resolutions` and `search_options` exist so that tests
    and benchmarks can shrink the work; they are part of the cache keys where they change results.
    """
    import math

    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    warnings: list[str] = []
    if not (isinstance(budget_ms, (int, float)) and math.isfinite(budget_ms) and budget_ms > 0):
        raise UserError(f"--budget-ms: must be a positive number of milliseconds, got {budget_ms}")
    out_dir = check_out_dir(out, force)

    # data and space (cheap; validates the user's choices before anything slow)
    t = time.perf_counter()
    from hwnas.data import load_dataset
    from hwnas.space import load_space, with_classes

    ds = load_dataset(data)
    sp = with_classes(load_space(space), ds.num_classes)
    from hwnas.train.config import resolve_config

    cfg = resolve_config(sp, data, train_config).scaled(epochs_scale)
    stages["data"] = time.perf_counter() - t

    # 1. latency table
    t = time.perf_counter()
    from hwnas.latency import LatencyPredictor, load_table

    if table is not None:
        table_path, table_cache = Path(table), "given"
        tab = load_table(table_path, sp)
    else:
        table_path, hit = cached_table(sp, resolutions=profile_resolutions, progress=progress)
        table_cache = "hit" if hit else "miss"
        tab = load_table(table_path, sp)
    predictor = LatencyPredictor(tab, sp)
    min_ms = predictor.min_latency_ms()
    stages["profile"] = time.perf_counter() - t
    _log(progress, f"table: {table_path} ({table_cache}); fastest subnet predicted {min_ms:.3f} ms")
    if budget_ms < min_ms:
        raise UserError(f"--budget-ms {budget_ms:g}: no subnet of '{sp.name}' is that fast on this target; the fastest is "
                        f"predicted at {min_ms:.3f} ms, so use --budget-ms {math.ceil(min_ms * 1000) / 1000:g} or more")

    # 2. supernet
    t = time.perf_counter()
    ckpt, hit = cached_supernet(sp, data, ds.fingerprint, cfg, device=device, progress=progress)
    sup_cache = "hit" if hit else "miss"
    stages["train"] = time.perf_counter() - t
    _log(progress, f"supernet: {ckpt} ({sup_cache})")

    # 3. search
    t = time.perf_counter()
    from hwnas.search import SearchConfig, search_supernet

    scfg = SearchConfig.model_validate(search_options) if search_options else None
    result = search_supernet(ckpt, table_path, [float(budget_ms)], data, out_dir, force=True, config=scfg,
                             log=(lambda m: _log(progress, f"search: {m}")))
    if isinstance(result, tuple):  # (result, paths) in some versions of the search API
        result = result[0]
    stages["search"] = time.perf_counter() - t

    # 4. export, falling back to the next front member while the measurement misses the budget
    t = time.perf_counter()
    from hwnas.export import export_subnet
    from hwnas.train import load_supernet

    net, _ = load_supernet(ckpt, map_location="cpu", space=sp)
    int8 = bool(tab.int8)
    model_path = out_dir / "model.onnx"
    fp32_path = out_dir / "model.fp32.onnx" if int8 else model_path
    front = [e for e in result.front if e.predicted_latency_ms <= budget_ms]
    local = table_is_local(tab)
    if not local:
        warnings.append("the latency table was measured on another target, so the latency measured here does not decide "
                        "the budget check; the predicted latency is the target's")
        _log(progress, f"note: {warnings[-1]}")
    cand: Any = result.best[0]
    attempts: list[Attempt] = []
    exp = None
    while True:
        _log(progress, f"export: candidate predicted {cand.predicted_latency_ms:.3f} ms, accuracy {cand.predicted_acc:.4f}")
        exp = export_subnet(net, cand.subnet, ds, fp32_path, table=tab, int8=int8, force=True,
                            predicted_acc=cand.predicted_acc, int8_out=model_path if int8 else None, progress=progress)
        measured = exp.deployed_latency_ms
        ok = measured <= budget_ms * (1 + BUDGET_TOLERANCE) or not local
        attempts.append(Attempt(subnet=cand.subnet.model_dump(mode="json"), predicted_acc=cand.predicted_acc,
                                predicted_latency_ms=cand.predicted_latency_ms, measured_latency_ms=measured, within_budget=ok))
        nxt = None if ok or len(attempts) >= MAX_EXPORT_ATTEMPTS else next_candidate(front, cand, measured, budget_ms)
        if nxt is None:
            break
        _log(progress, f"export: measured {measured:.3f} ms is more than {BUDGET_TOLERANCE:.0%} over the {budget_ms:g} ms budget; "
                       "trying a faster front member")
        cand = nxt
    assert exp is not None, "the search returned no subnet under the budget"
    stages["export"] = time.perf_counter() - t
    within = attempts[-1].within_budget
    warnings.extend(exp.warnings)
    if not within:
        warnings.append(f"no front member measured within {BUDGET_TOLERANCE:.0%} of the {budget_ms:g} ms budget after "
                        f"{len(attempts)} attempt(s); the fastest tried is kept ({attempts[-1].measured_latency_ms:.3f} ms)")
        _log(progress, f"warning: {warnings[-1]}")
    chosen = net.space.validate_subnet(exp.subnet)
    best_path = out_dir / "best.json"
    if len(attempts) > 1:  # best.json names the subnet actually exported
        write_json(best_path, chosen.model_dump(mode="json"))

    # 5. report
    t = time.perf_counter()
    report_path = out_dir / "report.md"
    stages["report"] = 0.0  # filled in below, once the report has been rendered
    seconds = time.perf_counter() - t0
    res = GenerateResult(
        onnx=str(model_path), report=str(report_path), measured_latency_ms=exp.deployed_latency_ms,
        predicted_latency_ms=float(exp.predicted_latency_ms if exp.predicted_latency_ms is not None else attempts[-1].predicted_latency_ms),
        val_acc=exp.int8_val_acc if int8 and exp.int8_val_acc is not None else exp.val_acc,
        budget_ms=float(budget_ms), seconds=seconds, within_budget=within, val_acc_torch=exp.val_acc_torch,
        predicted_acc=attempts[-1].predicted_acc, max_abs_diff=exp.max_abs_diff, best=str(best_path),
        pareto=str(out_dir / "pareto.json"), plot=str(out_dir / "pareto.png"), space=sp.name, data=data,
        subnet=exp.subnet, macs=exp.macs, params=exp.params, table=str(table_path), supernet=str(ckpt),
        cache={"table": table_cache, "supernet": sup_cache}, stage_seconds=stages, attempts=attempts,
        int8_onnx=exp.int8_onnx, warnings=warnings,
    )
    write_text(report_path, render_report(res, exp, tab, sp, result, cfg, list(ds.mean), list(ds.std)))
    res.stage_seconds["report"] = time.perf_counter() - t
    res.seconds = time.perf_counter() - t0
    write_text(report_path, render_report(res, exp, tab, sp, result, cfg, list(ds.mean), list(ds.std)))  # with the final timings
    _log(progress, f"done in {res.seconds:.1f} s: {model_path} measured {res.measured_latency_ms:.3f} ms "
                   f"(budget {budget_ms:g} ms), validation accuracy {res.val_acc:.4f}; report {report_path}")
    return res.model_dump(mode="json")


def table_is_local(tab: Any) -> bool:
    """Was the table measured on this machine (so a local measurement can check the budget)?"""
    from hwnas.runtime import ortbench

    here = ortbench.fingerprint(tab.fingerprint.provider, tab.fingerprint.threads, 1)
    fp = tab.fingerprint
    return tab.source == "local" and fp.cpu_model == here["cpu_model"] and fp.cores == here["cores"]


def next_candidate(front: list[Any], tried: Any, measured_ms: float, budget_ms: float) -> Any | None:
    """After `tried` measured over the budget: the most accurate faster front member whose prediction,
    corrected by how far off this measurement was, fits the budget; else the fastest; None if none is faster."""
    faster = [e for e in front if e.predicted_latency_ms < tried.predicted_latency_ms]
    if not faster:
        return None
    ratio = measured_ms / max(tried.predicted_latency_ms, 1e-12)
    fits = [e for e in faster if e.predicted_latency_ms * ratio <= budget_ms * (1 + BUDGET_TOLERANCE)]
    if fits:
        return max(fits, key=lambda e: (e.predicted_acc, -e.predicted_latency_ms))
    return min(faster, key=lambda e: e.predicted_latency_ms)


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
               else f"is {over:.1%} over the budget ({'within' if res.within_budget else 'outside'} the {BUDGET_TOLERANCE:.0%} tolerance)")
    pred_err = (res.measured_latency_ms - res.predicted_latency_ms) / res.predicted_latency_ms if res.predicted_latency_ms else 0.0
    lines = [
        f"# hwnas model report: {res.budget_ms:g} ms budget",
        "",
        f"`{Path(res.onnx).name}` ({precision}) is the most accurate subnet of `{res.space}` that the search found under "
        f"**{res.budget_ms:g} ms**, trained and validated on `{res.data}`. Measured, it takes "
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
        lines += [f"INT8: accuracy {exp.int8_val_acc:.2%} ({exp.int8_acc_change:+.2%} vs fp32), latency "
                  f"{exp.int8_measured_latency_ms:.3f} ms vs {exp.measured_latency_ms:.3f} ms fp32 "
                  f"(`{Path(exp.onnx).name}` is the fp32 model).", ""]
    if len(res.attempts) > 1 or not res.within_budget:
        lines += ["## Budget check", "",
                  "The search's choice did not measure within the budget, so faster front members were exported in turn:", "",
                  _md_table(["attempt", "predicted ms", "measured ms", "predicted acc", "within budget"],
                            [[str(i + 1), f"{a.predicted_latency_ms:.3f}", f"{a.measured_latency_ms:.3f}",
                              f"{a.predicted_acc:.2%}" if a.predicted_acc is not None else "-", "yes" if a.within_budget else "no"]
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
        f"The search scored {search.evaluations_real} subnets on the validation data (and {search.evaluations_predicted} "
        f"with its accuracy predictor); the front has {len(search.front)} members (`pareto.json`), hypervolume "
        f"{search.hypervolume:.4g}.",
        "",
        "## Time per stage",
        "",
        _md_table(["stage", "seconds", "cache"], [
            ["load data", f"{res.stage_seconds.get('data', 0):.1f}", "-"],
            ["latency table (profile)", f"{res.stage_seconds.get('profile', 0):.1f}", res.cache["table"]],
            ["supernet (train)", f"{res.stage_seconds.get('train', 0):.1f}", res.cache["supernet"]],
            ["search", f"{res.stage_seconds.get('search', 0):.1f}", "-"],
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
        f"- supernet: `{res.supernet}` ({res.cache['supernet']}), {cfg.total_epochs} epochs of progressive shrinking",
        f"- hwnas {__version__}",
        "",
    ]
    return "\n".join(lines)

