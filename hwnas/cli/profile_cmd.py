"""`hwnas profile`, `hwnas profile-bundle`, `hwnas profile-import`: build latency TABLEs."""

from __future__ import annotations

import argparse
import time

from hwnas.cli.common import add_force_flag, add_json_flag, emit, log


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure every distinct block of a space with ONNX Runtime here; write a latency TABLE")
    p.add_argument("--space", required=True, help="preset name (mbv3-imagenet, mbv3-imagenet-w1.2, mbv3-cifar, mbv3-tiny) or a JSON/YAML file")
    p.add_argument("--out", required=True, help="TABLE file to write (JSON)")
    _target_flags(p)
    p.add_argument("--calibration-subnets", type=int, default=None, help="whole subnets measured to fit the predictor (default 80)")
    add_json_flag(p)
    p.set_defaults(handler=run_profile)

    b = sub.add_parser("profile-bundle", help="write a folder to profile a device we cannot reach (runner needs only onnxruntime + numpy)")
    b.add_argument("--space", required=True, help="preset name or a JSON/YAML space file")
    b.add_argument("--out", required=True, help="bundle folder to write (must not exist or be empty, unless --force)")
    _target_flags(b)
    b.add_argument("--calibration-subnets", type=int, default=None, help="whole subnets included to fit the predictor (default 80)")
    add_force_flag(b)
    add_json_flag(b)
    b.set_defaults(handler=run_bundle)

    i = sub.add_parser("profile-import", help="turn the results.json the bundle's runner wrote on the device into a TABLE")
    i.add_argument("--bundle", required=True, help="bundle folder holding manifest.json and the runner's results.json")
    i.add_argument("--results", default=None, help="results file if not BUNDLE/results.json")
    i.add_argument("--out", required=True, help="TABLE file to write (JSON)")
    add_json_flag(i)
    i.set_defaults(handler=run_import)


def _target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--provider", default="CPUExecutionProvider", help="ONNX Runtime execution provider (default CPUExecutionProvider)")
    p.add_argument("--resolutions", type=int, nargs="+", default=None, metavar="R", help="only these resolutions (default: all of the space)")
    p.add_argument("--int8", action="store_true", help="profile blocks quantised to INT8 (ORT static quantisation, QDQ)")


def _n_cal(args: argparse.Namespace) -> int:
    from hwnas.errors import UserError
    from hwnas.latency import DEFAULT_CALIBRATION_SUBNETS
    from hwnas.latency.predictor import MIN_CALIBRATION_POINTS

    n = args.calibration_subnets if args.calibration_subnets is not None else DEFAULT_CALIBRATION_SUBNETS
    if n < MIN_CALIBRATION_POINTS:
        raise UserError(f"--calibration-subnets: need at least {MIN_CALIBRATION_POINTS}, got {n}")
    return n


def _summary(table, path: str, seconds: float) -> tuple[dict, str]:
    c = table.calibration
    d = {
        "table": str(path),
        "entries": len(table.entries),
        "seconds": round(seconds, 2),
        "space": table.space,
        "resolutions": table.resolutions,
        "threads": table.fingerprint.threads,
        "provider": table.fingerprint.provider,
        "int8": table.int8,
        "calibration": {"form": c.form, "res_scale": c.res_scale, "res_offset_ms": c.res_offset_ms, "loo_mape": c.loo_mape, "scale": c.scale, "scale_hot": c.scale_hot, "per_mparam_ms": c.per_mparam_ms, "offset_ms": c.offset_ms, "per_piece_ms": c.per_piece_ms,
                        "fit_mape": c.fit_mape, "raw_sum_bias_pct": c.raw_sum_bias_pct, "subnets": len(c.points)},
    }
    human = (
        f"wrote {path}: {len(table.entries)} entries, space {table.space}, resolutions {table.resolutions[0]}..{table.resolutions[-1]}"
        f" ({len(table.resolutions)}), {table.fingerprint.threads} thread(s), {table.fingerprint.provider}{', int8' if table.int8 else ''}\n"
        f"calibration on {len(c.points)} whole subnets: sum of blocks was {c.raw_sum_bias_pct:+.1f}% off; "
        f"after calibration {c.fit_mape * 100:.1f}% mean error ({c.loo_mape * 100:.1f}% on held-out subnets, form {c.form}); {seconds:.0f} s"
    )
    if table.noise is not None:
        nz = table.noise
        d["noise"] = nz.model_dump()
        shift = "" if nz.drift_pct is None else f" ({nz.scatter_pct:.2f}% beyond a common shift of {nz.drift_pct:+.2f}%)"
        human += (f"\nmachine while measuring: other processes {nz.others_cores:.2f} cores, repeat noise {nz.repeat_noise_pct:.2f}% "
                  f"(median){shift}, {nz.rounds} round(s): " + ("trusted" if nz.trusted else f"NOT TRUSTED ({nz.reason})"))
    return d, human


def run_profile(args: argparse.Namespace) -> int:
    from hwnas.latency import profile_space
    from hwnas.space import load_space

    space = load_space(args.space)
    n = _n_cal(args)
    t0 = time.time()
    table = profile_space(
        space, args.out, threads=args.threads, provider=args.provider, resolutions=args.resolutions, int8=args.int8,
        progress=True, calibration_subnets=n,
    )
    d, human = _summary(table, args.out, time.time() - t0)
    emit(args, d, human)
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    from hwnas.latency import write_bundle
    from hwnas.space import load_space

    space = load_space(args.space)
    n = _n_cal(args)
    t0 = time.time()
    out = write_bundle(
        space, args.out, resolutions=args.resolutions, int8=args.int8, threads=args.threads, provider=args.provider,
        force=args.force, progress=True, calibration_subnets=n,
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    log(f"copy {out} to the device, run `python3 runner.py` inside it, copy results.json back, then `hwnas profile-import --bundle {out} --out TABLE`")
    emit(args, {"bundle": str(out), "files": len(files), "bytes": size, "seconds": round(time.time() - t0, 2)},
         f"wrote {out}: {len(files)} files, {size / 1e6:.1f} MB")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from hwnas.latency import import_bundle

    t0 = time.time()
    table = import_bundle(args.bundle, args.out, results=args.results)
    d, human = _summary(table, args.out, table.seconds)
    d["import_seconds"] = round(time.time() - t0, 2)
    emit(args, d, human)
    return 0
