"""`hwnas generate`: data and a latency budget in, a checked ONNX model and a report out."""

from __future__ import annotations

import argparse

from hwnas.cli.common import add_force_flag, add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="the whole pipeline: profile (or --table), train (or reuse), search, export; writes model.onnx and report.md",
        description="Give a latency budget; get the most accurate subnet the search finds under it, as a checked ONNX "
        "model with a report. Without --table this machine is profiled (1 thread, CPUExecutionProvider) and the table "
        "is cached; the supernet is trained once per space, data and config and cached under $XDG_CACHE_HOME/hwnas.",
    )
    p.add_argument("--budget-ms", required=True, type=float, metavar="X", help="latency budget in milliseconds (median, batch 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: model.onnx, report.md, best.json, pareto.json, pareto.png")
    p.add_argument("--data", default="digits", metavar="DATA", help="digits (default), an ImageFolder root or a CIFAR-10 python folder")
    p.add_argument("--space", default=None, metavar="SPACE",
                   help="preset name or space file (default mbv3-tiny; with --supernet, the checkpoint's space)")
    p.add_argument("--table", metavar="TABLE", help="latency table of the target (default: profile this machine, cached)")
    p.add_argument("--supernet", default=None, metavar="CKPT",
                   help="use this trained or imported supernet (hwnas train / hwnas import-ofa) instead of training one")
    p.add_argument("--epochs-scale", type=float, default=1.0, metavar="F", help="multiply the supernet's training epochs (default 1)")
    p.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="bound the whole run (900s, 45m, 2h): part plans the supernet's training, part the search, the rest "
                        "fine-tunes the chosen subnet; the plan and expected end are printed first")
    p.add_argument("--val-images", type=int, default=None, metavar="N",
                   help="score the search's subnets on N validation images (default: all, or 1000 with --time-budget)")
    p.add_argument("--int8", action="store_true",
                   help="profile (or give via --table) INT8 latencies, search with them and deliver the static QDQ INT8 model as "
                        "model.onnx (the fp32 model beside it as model.fp32.onnx); a candidate losing more than 1 point of "
                        "accuracy to INT8 is replaced by the next")
    p.add_argument("--ort-format", action="store_true",
                   help="also write model.ort (ONNX Runtime Mobile, checked against model.onnx) and "
                        "model.required_operators.config for a reduced ONNX Runtime build")
    p.add_argument("--device", help="torch device for training (default: cuda if available, else cpu)")
    p.add_argument("--force-table", action="store_true",
                   help="use a latency table even though its profiler found the machine busy or noisy")
    add_force_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 with the model within the budget; exit 3 (after printing the result) when none measured within it."""
    from hwnas.errors import BudgetNotMet, UserError
    from hwnas.generate import DEFAULT_SPACE, generate

    if args.supernet is not None and args.space is not None:
        from hwnas.space import load_space
        from hwnas.train.checkpoint import check_space, load_checkpoint, read_meta

        check_space(args.supernet, read_meta(args.supernet, load_checkpoint(args.supernet)).get_space(), load_space(args.space))
    if args.supernet is not None and args.epochs_scale != 1.0:
        raise UserError("--epochs-scale: sets the training length, but --supernet skips training; give one of them")
    try:
        r = generate(args.budget_ms, args.out, data=args.data, space=args.space or DEFAULT_SPACE, table=args.table,
                     force=args.force, epochs_scale=args.epochs_scale, device=args.device, progress=True,
                     time_budget=args.time_budget, val_images=args.val_images, force_table=args.force_table,
                     supernet=args.supernet, int8=args.int8, ort_format=args.ort_format)
    except BudgetNotMet as e:
        if e.result:
            emit(args, e.result, human(e.result))
        raise
    emit(args, r, human(r))
    return 0


def human(r: dict) -> str:
    lines = [
        f"wrote {r['onnx']} and {r['report']}",
        f"  budget        {r['budget_ms']:g} ms: measured {r['measured_latency_ms']:.3f} ms, predicted {r['predicted_latency_ms']:.3f} ms"
        + ("" if r["within_budget"] else "  (OVER BUDGET, see report)"),
        f"  accuracy      {r['val_acc']:.4f} on the validation images (ONNX Runtime, {r.get('precision', 'fp32')})"
        + (f"; fp32 {r['fp32_val_acc']:.4f} ({r['fp32_onnx']})" if r.get("fp32_onnx") else ""),
        f"  subnet        {r['space']} @ {r['subnet']['resolution']}, {r['macs'] / 1e6:.2f}M MACs, {r['params'] / 1e6:.3f}M params",
        f"  caches        table {r['cache']['table']}, supernet {r['cache']['supernet']}",
        "  seconds       " + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_seconds"].items()) + f"; total {r['seconds']:.1f}",
    ]
    if r.get("finetune"):
        ft = r["finetune"]
        lines.insert(4, f"  fine-tuned    {ft['seconds']:.0f} s ({ft['epochs']:.1f} epochs) from the supernet's weights")
    if r.get("ort"):
        lines.append(f"  ort           {r['ort']} (reduced-build operators: {r['ort_config']})")
    lines += [f"  warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)
