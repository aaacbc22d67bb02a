"""From the search's front to the delivered files: candidates measured as deployed, exported and measured
again until one keeps the budget (and, INT8, its accuracy); a miss explained; measurements fed back into
the cached table."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.generate.results import Attempt, GenerateResult
from hwnas.progress import log as _log

BUDGET_TOLERANCE = 0.0
"""The delivered model's measured latency may exceed the budget by at most this fraction (none: SPEC's exit 3)."""
MAX_EXPORT_ATTEMPTS = 4
"""Bound on candidates measured by the quick check, and separately on candidates exported."""
INT8_MAX_DROP = 0.01
"""An INT8 model losing more than this (1 point) of the fp32 model's accuracy sends generate to the next candidate."""
OVER_BUDGET_STEM = "model.over-budget"
DELIVERABLES = {".onnx": "onnx", ".fp32.onnx": "fp32", ".ort": "ort", ".required_operators.config": "ort_config",
                ".fp32.ort": "fp32_ort", ".fp32.required_operators.config": "fp32_ort_config"}
"""The files generate delivers, by what follows the stem `model` (or `model.over-budget`), and their roles."""


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


def delivery_fields(delivery: Delivery, int8: bool) -> dict[str, Any]:
    """GenerateResult fields that describe what export_within_budget delivered (precision, fp32 twin, .ort)."""
    exp, files = delivery.export, delivery.files
    return dict(machine_drift_pct=delivery.machine_drift_pct, precision="int8" if int8 else "fp32", fp32_onnx=str(files["fp32"]) if "fp32" in files else None,
                fp32_val_acc=exp.val_acc, int8_acc_change=exp.int8_acc_change if int8 else None,
                export_latency_ms=delivery.export_ms, ort=str(files["ort"]) if "ort" in files else None,
                ort_config=str(files["ort_config"]) if "ort_config" in files else None)


def raise_if_over(res: GenerateResult, delivery: Delivery, budget_ms: float, report_path: Path) -> None:
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
