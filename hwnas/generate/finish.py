"""The tail both of generate's routes share (the search's and the direct one): deliver a candidate within the
budget, then write the result and the report, and exit 3 when the delivered model is over the budget.
Kept in one place so the two routes cannot drift apart in what they measure, report or refuse."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hwnas.fileio import write_text
from hwnas.generate.delivery import (Delivery, delivery_fields, explain_miss, export_within_budget, feed_back_measured,
                                     raise_if_over)
from hwnas.generate.report import render_report
from hwnas.generate.results import Attempt, GenerateResult
from hwnas.progress import log as _log


def deliver(net: Any, ds: Any, tab: Any, sp: Any, front: list[Any], first: Any, attempts: list[Attempt], budget_ms: float,
            out_dir: Path, *, tuned: Any, table_path: Path, table_cache: str, local: bool, int8: bool, ort_format: bool,
            stages: dict[str, float], warnings: list[str], progress: bool) -> Delivery:
    """Export `first` (then faster `front` members) until one keeps the budget measured as delivered; explain a
    miss; feed the measurements back into generate's own cached table; collect the export's warnings."""
    t = time.perf_counter()
    delivery = export_within_budget(net, ds, tab, front, first, attempts, budget_ms, out_dir, local=local, int8=int8,
                                    ort_format=ort_format, tuned=tuned, progress=progress)
    explain_miss(delivery, tab, local=local, progress=progress)
    stages["export"] = time.perf_counter() - t
    feed_back_measured(tab, sp, delivery.attempts, table_path, cached=table_cache != "given", local=local, progress=progress)
    warnings.extend(delivery.export.warnings)
    warnings.extend(delivery.warnings)
    return delivery


def delivered_acc(delivery: Delivery, int8: bool) -> float:
    """The validation accuracy of the file delivered: its INT8 accuracy when quantised, else fp32."""
    exp = delivery.export
    return exp.int8_val_acc if int8 and exp.int8_val_acc is not None else exp.val_acc


def finish(delivery: Delivery, *, sp: Any, tab: Any, ds: Any, cfg: Any, search: Any, budget_ms: float, out_dir: Path,
           data: str, table_path: Path, stages: dict[str, float], warnings: list[str], t0: float, budget_s: float | None,
           int8: bool, progress: bool, **route: Any) -> dict[str, Any]:
    """The GenerateResult (`route`: the fields only the route knows: predicted latency and accuracy, supernet,
    cache, finetune, schedule, ...), report.md rendered with the final timings, BudgetNotMet when over the budget,
    and the --json dict."""
    t = time.perf_counter()
    exp, files = delivery.export, delivery.files
    report_path = out_dir / "report.md"
    stages["report"] = 0.0  # filled in below, once the report has been rendered
    res = GenerateResult(
        onnx=str(files["onnx"]), report=str(report_path), measured_latency_ms=delivery.measured_ms,
        val_acc=delivered_acc(delivery, int8), budget_ms=float(budget_ms), seconds=time.perf_counter() - t0,
        within_budget=delivery.within_budget, val_acc_torch=exp.val_acc_torch, max_abs_diff=exp.max_abs_diff,
        best=str(out_dir / "best.json"), pareto=str(out_dir / "pareto.json"), plot=str(out_dir / "pareto.png"),
        space=sp.name, data=data, subnet=exp.subnet, macs=exp.macs, params=exp.params, table=str(table_path),
        stage_seconds=stages, attempts=delivery.attempts, **delivery_fields(delivery, int8), warnings=warnings,
        time_budget_s=budget_s, **route,
    )
    mean, std = list(ds.mean), list(ds.std)
    write_text(report_path, render_report(res, exp, tab, sp, search, cfg, mean, std))
    res.stage_seconds["report"] = time.perf_counter() - t
    res.seconds = time.perf_counter() - t0
    write_text(report_path, render_report(res, exp, tab, sp, search, cfg, mean, std))  # with the final timings
    raise_if_over(res, delivery, budget_ms, report_path)
    _log(progress, f"done in {res.seconds:.1f} s: {files['onnx']} measured {res.measured_latency_ms:.3f} ms "
                   f"(budget {budget_ms:g} ms), validation accuracy {res.val_acc:.4f}; report {report_path}")
    return res.model_dump(mode="json")
