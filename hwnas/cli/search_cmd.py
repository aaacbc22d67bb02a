"""`hwnas search`: NSGA-II over a trained supernet's subnets under a latency budget."""

from __future__ import annotations

import argparse
import os

from hwnas.cli.common import add_force_flag, add_json_flag, emit, log


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="multi-objective evolutionary search (NSGA-II) under the latency budget; writes pareto.json, best.json, pareto.png",
        description="Find the accuracy-latency Pareto front of a trained supernet's subnets on a latency table's target, "
        "and the most accurate subnet within each budget. The budget is a constraint of the search; several budgets "
        "are served by one run.",
    )
    p.add_argument("--supernet", required=True, metavar="CKPT", help="supernet checkpoint written by `hwnas train`")
    p.add_argument("--table", required=True, metavar="TABLE", help="latency table written by `hwnas profile`")
    p.add_argument("--budget-ms", required=True, type=float, nargs="+", metavar="X",
                   help="latency budget(s) in ms; best.json is the best for the first, best-<X>ms.json for each when several")
    p.add_argument("--data", default=None, help="DATA to score subnets on (default: the data the supernet was trained on)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); equal seeds give equal results")
    p.add_argument("--objective", dest="objectives", action="append", choices=["macs", "params"], default=[],
                   help="an extra objective to minimise (repeatable)")
    p.add_argument("--table2", default=None, metavar="TABLE",
                   help="a second device's latency table: its latency becomes an extra objective")
    p.add_argument("--mode", choices=["surrogate", "direct"], default="surrogate",
                   help="surrogate (default): an accuracy predictor drives NSGA-II, front candidates are scored for real; "
                   "direct: NSGA-II on real scores only")
    p.add_argument("--init-samples", type=int, default=None, help="subnets scored for real before the first predictor (default 60)")
    p.add_argument("--iterations", type=int, default=None, help="surrogate rounds (default 4)")
    p.add_argument("--candidates", type=int, default=None, help="new front candidates scored for real per round (default 16)")
    p.add_argument("--pop-size", type=int, default=None, help="NSGA-II population (default 100)")
    p.add_argument("--generations", type=int, default=None, help="NSGA-II generations per run (default 60)")
    p.add_argument("--calib-images", type=int, default=500,
                   help="training images for BatchNorm recalibration of each scored subnet (default 500)")
    p.add_argument("--val-images", type=int, default=None, metavar="N",
                   help="score subnets on a fixed, class-stratified subset of N validation images (default: all; "
                        "fewer is faster); recorded in search.log and --json")
    p.add_argument("--device", default=None,
                   help="torch device for scoring subnets: cpu, cuda or cuda:N (default: cuda when present, else cpu); "
                        "torchrun --nproc-per-node K -m hwnas search ... spreads the scoring over K processes")
    add_force_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=run)


def _config(args: argparse.Namespace):  # noqa: ANN202 - SearchConfig
    from pydantic import ValidationError

    from hwnas.errors import UserError
    from hwnas.fileio import format_validation_error
    from hwnas.search import SearchConfig

    over = {
        "mode": args.mode, "init_samples": args.init_samples, "iterations": args.iterations,
        "candidates_per_iteration": args.candidates, "pop_size": args.pop_size, "generations": args.generations,
    }
    flags = {"init_samples": "--init-samples", "iterations": "--iterations", "candidates_per_iteration": "--candidates",
             "pop_size": "--pop-size", "generations": "--generations", "mode": "--mode"}
    try:
        return SearchConfig(**{k: v for k, v in over.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise UserError(format_validation_error(flags.get(field, "search config"), e).replace(f"{field}: ", "")) from None


def run(args: argparse.Namespace) -> int:
    from hwnas.search import search_supernet
    from hwnas.search.report import summary

    cfg = _config(args)
    main = int(os.environ.get("RANK", "0")) == 0
    result = search_supernet(
        args.supernet, args.table, args.budget_ms, args.data, args.out, force=args.force, seed=args.seed, config=cfg,
        calib_images=args.calib_images, device=args.device, extra_objectives=args.objectives, second_table=args.table2,
        log=log if main else None, val_images=args.val_images,
    )
    if result is None:  # a torchrun worker: rank 0 reports
        return 0
    d = summary(result)
    lines = [f"{'budget':>9s}  {'accuracy':>8s}  {'latency':>10s}  {'MMACs':>7s}"]
    for b in result.best:
        lines.append(f"{b.budget_ms:7.4g}ms  {100 * b.predicted_acc:7.2f}%  {b.predicted_latency_ms:8.4g}ms  {b.macs / 1e6:7.2f}")
    lines += [
        f"front        {len(result.front)} subnets, hypervolume {result.hypervolume:.5g}",
        f"evaluations  {result.evaluations_real} real, {result.evaluations_predicted} predicted",
        (f"scored on    {result.val_images} of {result.val_images_total} validation images"
         f"{' (class-stratified subset)' if (result.val_images or 0) < (result.val_images_total or 0) else ''}"
         f"{f', {result.processes} processes' if result.processes > 1 else ''}"),
    ]
    if result.predictor is not None:
        lines.append(f"predictor    {result.predictor.name}: held-out Kendall tau {result.predictor.kendall_tau:.3f}, "
                     f"RMSE {100 * result.predictor.rmse:.2f} %-points")
    lines.append(f"wrote        {d['best']}, {d['pareto']}, {d['plot']}, {d['log']}")
    emit(args, d, "\n".join(lines))
    return 0
