"""`hwnas latency validate` and `hwnas latency predict`: use and check a latency TABLE."""

from __future__ import annotations

import argparse

from hwnas.cli.common import add_json_flag, emit, log


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="predict with a latency TABLE, or validate it against whole-subnet measurements")
    lsub = p.add_subparsers(dest="latency_command", metavar="SUBCOMMAND", parser_class=type(p))
    lsub.required = True

    v = lsub.add_parser("validate", help="measure N fresh random whole subnets and N front subnets here and compare them with the predictor")
    v.add_argument("--table", required=True, help="TABLE file written by `hwnas profile`")
    v.add_argument("--samples", type=int, required=True, help="number of random subnets to export and measure (and as many front subnets: the fast end and the latency/MACs front)")
    v.add_argument("--seed", type=int, default=0, help="seed of the random subnets (default 0)")
    v.add_argument("--space", default=None, help="the space (default: the one stored in the table)")
    add_json_flag(v)
    v.set_defaults(handler=run_validate)

    q = lsub.add_parser("predict", help="the predicted latency of one subnet on the table's target")
    q.add_argument("--table", required=True, help="TABLE file written by `hwnas profile`")
    q.add_argument("--subnet", required=True, help="SUBNET JSON file (e.g. best.json)")
    q.add_argument("--space", default=None, help="the space (default: the one stored in the table)")
    add_json_flag(q)
    q.set_defaults(handler=run_predict)


def _table_and_space(args: argparse.Namespace):
    from hwnas.latency import load_table
    from hwnas.space import load_space

    space = load_space(args.space) if args.space else None
    table = load_table(args.table, space)
    return table, space or table.get_space()


def run_predict(args: argparse.Namespace) -> int:
    from hwnas.errors import UserError
    from hwnas.fileio import read_structured
    from hwnas.latency import latency_model

    table, space = _table_and_space(args)
    raw = read_structured(args.subnet)
    if not isinstance(raw, dict):
        raise UserError(f"{args.subnet}: a SUBNET file must hold a JSON object, got {type(raw).__name__}")
    declared = raw.get("space")
    if declared is not None and declared != table.space:
        raise UserError(f"{args.subnet}: space: the subnet is for space '{declared}', but {args.table} was profiled for '{table.space}'")
    try:
        sub = space.validate_subnet(raw)
    except UserError as e:
        raise UserError(f"{args.subnet}: {e}") from None
    pred = latency_model(table, space)
    ms = pred.predict(sub)
    raw_sum, pieces = pred.raw_sum(sub)
    fp = table.fingerprint
    d = {
        "predicted_latency_ms": ms, "sum_of_blocks_ms": raw_sum, "pieces": pieces, "resolution": sub.resolution,
        "space": table.space, "threads": fp.threads, "provider": fp.provider, "int8": table.int8, "cpu_model": fp.cpu_model,
    }
    emit(args, d, f"{ms:.3f} ms predicted on {fp.cpu_model} ({fp.threads} thread(s), {fp.provider}{', int8' if table.int8 else ''})")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from hwnas.errors import UserError
    from hwnas.latency import validate_table
    from hwnas.runtime import ortbench

    table, space = _table_and_space(args)
    if args.samples < 2:
        raise UserError(f"--samples: need at least 2, got {args.samples}")
    here = ortbench.fingerprint(table.fingerprint.provider, table.fingerprint.threads)
    if here["cpu_model"] != table.fingerprint.cpu_model or here["onnxruntime"] != table.fingerprint.onnxruntime:
        log(f"note: the table was measured on {table.fingerprint.cpu_model} / onnxruntime {table.fingerprint.onnxruntime}; "
            f"this machine is {here['cpu_model']} / onnxruntime {here['onnxruntime']}: expect larger errors")
    r = validate_table(table, args.samples, seed=args.seed, progress=True, space=space)
    d = {k: v for k, v in r.items() if not k.startswith("_")}
    d["table"] = args.table
    human = (
        f"{d['samples']} random subnets ({d['measured_ms_min']:.2f}..{d['measured_ms_max']:.2f} ms measured, {d['threads']} thread(s)):\n"
        f"  within +-5%   {d['within_5pct'] * 100:5.1f}%\n"
        f"  within +-10%  {d['within_10pct'] * 100:5.1f}%\n"
        f"  Kendall tau   {d['kendall_tau']:.3f}\n"
        f"  RMSE          {d['rmse_ms']:.3f} ms\n"
        f"  MAPE          {d['mape']:.2f}%  (median abs error {d['median_abs_err_pct']:.2f}%, bias {d['bias_pct']:+.2f}%)\n"
        f"{d['front_samples']} front subnets (the fast end by MACs and the latency/MACs front; "
        f"{d['front_measured_ms_min']:.2f}..{d['front_measured_ms_max']:.2f} ms measured):\n"
        f"  within +-5%   {d['front_within_5pct'] * 100:5.1f}%\n"
        f"  within +-10%  {d['front_within_10pct'] * 100:5.1f}%\n"
        f"  Kendall tau   {d['front_kendall_tau']:.3f}\n"
        f"  MAPE          {d['front_mape']:.2f}%  (median abs error {d['front_median_abs_err_pct']:.2f}%, bias {d['front_bias_pct']:+.2f}%)\n"
        f"noise floor     {d['noise_floor_pct']:.2f}%  (same model measured twice, median over both sets)"
    )
    drift = d.get("machine_drift_pct")
    if drift is not None:
        human += (f"\nmachine drift   {drift:+.2f}%  (the table's own {d['reference_subnets']} calibration networks, now against "
                  "when the table was profiled)")
        from hwnas.latency.validate import DRIFT_WARN_PCT

        if abs(drift) > DRIFT_WARN_PCT:
            log(f"warning: this machine runs the table's own calibration networks {abs(drift):.1f}% "
                f"{'slower' if drift > 0 else 'faster'} than when the table was profiled; that much of the error above is the "
                "machine's state, not the predictor (validate when the machine is as it was, or profile again)")
    emit(args, d, human)
    return 0
