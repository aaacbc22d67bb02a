#!/usr/bin/env python3
"""Benchmark the latency tables and predictor on this machine (issue 3 targets).

For each space and thread count: profile a whole table (timed), then `latency validate` on
held-out random subnets (a seed the calibration never uses), each measured twice for the noise
floor. Prints one table; writes the numbers as JSON.

    flock /work/heavy.lock python scripts/bench_latency.py --out-dir latency_tables

Targets: >= 99% of subnets within +-10%, >= 90% within +-5%, Kendall tau >= 0.95, median
absolute error <= 1.5x the noise floor, a whole table in <= 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from hwnas.latency import LatencyPredictor, profile_space, validate_table
from hwnas.runtime import ortbench
from hwnas.space import load_space

DEFAULT_RES = {"mbv3-imagenet": [128, 160, 192, 224], "mbv3-cifar": None, "mbv3-tiny": None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", default=["mbv3-cifar", "mbv3-imagenet"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="latency_tables", help="where the tables go (named <space>-cpu-<threads>t.json)")
    ap.add_argument("--results", default=None, help="JSON file for the numbers (default /tmp/bench_latency.json)")
    ap.add_argument("--reuse", action="store_true", help="validate existing tables instead of profiling again")
    a = ap.parse_args()
    out_dir = Path(a.out_dir)
    rows = []
    fp = ortbench.fingerprint()
    print(f"machine: {fp['cpu_model']}, {fp['cores']} cores, {fp['os']}, onnxruntime {fp['onnxruntime']}, {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for name in a.spaces:
        space = load_space(name)
        for th in a.threads:
            path = out_dir / f"{name}-cpu-{th}t.json"
            t0 = time.time()
            if a.reuse and path.exists():
                from hwnas.latency import load_table

                table = load_table(path, space)
                prof_s = table.seconds
            else:
                table = profile_space(space, path, threads=th, resolutions=DEFAULT_RES.get(name), progress=True)
                prof_s = time.time() - t0
            pred = LatencyPredictor(table, space)
            r = validate_table(table, a.samples, seed=a.seed, progress=True, space=space)
            row = {
                "space": name, "threads": th, "resolutions": table.resolutions, "entries": len(table.entries),
                "profile_s": round(prof_s, 1), "samples": r["samples"], "within_5pct": r["within_5pct"], "within_10pct": r["within_10pct"],
                "kendall_tau": r["kendall_tau"], "mape_pct": r["mape"], "median_abs_err_pct": r["median_abs_err_pct"],
                "bias_pct": r["bias_pct"], "noise_floor_pct": r["noise_floor_pct"], "rmse_ms": r["rmse_ms"],
                "err_over_noise": r["median_abs_err_pct"] / max(r["noise_floor_pct"], 1e-9),
                "measured_ms_min": r["measured_ms_min"], "measured_ms_max": r["measured_ms_max"],
                "front_samples": r["front_samples"], "front_within_5pct": r["front_within_5pct"],
                "front_within_10pct": r["front_within_10pct"], "front_kendall_tau": r["front_kendall_tau"],
                "front_median_abs_err_pct": r["front_median_abs_err_pct"], "front_bias_pct": r["front_bias_pct"],
                "front_ms_min": r["front_measured_ms_min"], "front_ms_max": r["front_measured_ms_max"],
                "raw_sum_bias_pct": table.calibration.raw_sum_bias_pct, "calibration_fit_mape_pct": table.calibration.fit_mape * 100,
                "calibration_form": table.calibration.form, "calibration_loo_mape_pct": table.calibration.loo_mape * 100,
                "calibration_subnets": len(table.calibration.points),
                "min_latency_ms": pred.min_latency_ms(), "validate_s": r["seconds"],
                "machine_drift_pct": r.get("machine_drift_pct"),
                "pairs": list(zip(r["_predicted"], r["_measured"], r["_measured_again"])),
                "front_pairs": list(zip(r["_front_predicted"], r["_front_measured"], r["_front_measured_again"])),
                "subnets": r["_subnets"],
            }
            rows.append(row)
            _dump(a, out_dir, fp, rows)  # after every configuration: a cut-short run keeps what it measured
            print(f"[{name} {th}t] within5 {row['within_5pct']:.3f} within10 {row['within_10pct']:.3f} tau {row['kendall_tau']:.3f} "
                  f"medAE {row['median_abs_err_pct']:.2f}% | front within5 {row['front_within_5pct']:.3f} "
                  f"within10 {row['front_within_10pct']:.3f} tau {row['front_kendall_tau']:.3f} | noise {row['noise_floor_pct']:.2f}% drift {_pct(row['machine_drift_pct'])} table {row['profile_s']:.0f}s "
                  f"calibration {row['calibration_form']} on {row['calibration_subnets']} subnets, held-out {row['calibration_loo_mape_pct']:.2f}%", flush=True)
    hdr = ("space", "thr", "entries", "table s", "n", "ms range", "<=5%", "<=10%", "tau", "MAPE%", "medAE%", "noise%", "medAE/noise", "sum bias%",
           "front ms", "front <=5%", "front <=10%", "front tau", "front bias%")
    print("\n| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print(f"| {r['space']} | {r['threads']} | {r['entries']} | {r['profile_s']:.0f} | {r['samples']} | "
              f"{r['measured_ms_min']:.2f}-{r['measured_ms_max']:.2f} | {r['within_5pct'] * 100:.1f}% | {r['within_10pct'] * 100:.1f}% | "
              f"{r['kendall_tau']:.3f} | {r['mape_pct']:.2f} | {r['median_abs_err_pct']:.2f} | {r['noise_floor_pct']:.2f} | "
              f"{r['err_over_noise']:.2f} | {r['raw_sum_bias_pct']:+.1f} | {r['front_ms_min']:.3f}-{r['front_ms_max']:.3f} | "
              f"{r['front_within_5pct'] * 100:.1f}% | {r['front_within_10pct'] * 100:.1f}% | {r['front_kendall_tau']:.3f} | "
              f"{r['front_bias_pct']:+.1f} |")
    print(f"\nnumbers: {_dump(a, out_dir, fp, rows)}")
    return 0


def _pct(v: float | None) -> str:
    """A signed percentage, or n/a (validate has no reference networks for a table of an older profiler)."""
    return "n/a" if v is None else f"{v:+.2f}%"


def _dump(a: argparse.Namespace, out_dir: Path, fp: dict, rows: list[dict]) -> Path:
    res_path = Path(a.results) if a.results else Path("/tmp") / "bench_latency.json"  # latency_tables/ holds tables only
    res_path.write_text(json.dumps({"machine": fp, "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "rows": rows}, indent=1))
    return res_path


if __name__ == "__main__":
    raise SystemExit(main())
