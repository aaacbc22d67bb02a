#!/usr/bin/env python3
"""Benchmark: how long an INT8 profile takes to prepare its graphs, in one process and in parallel.

An INT8 table needs every piece graph and every calibration subnet quantised (ONNX Runtime's static QDQ
quantiser, mostly Python) before anything is timed; that preparation held about three quarters of an INT8
profile. This times `make_plan(..., int8=True)` with 1 quantising process and with the default (one per
core), checks that both give byte-identical graphs, and prints one table.

    flock /tmp/hwnas-heavy.lock python scripts/bench_int8_plan.py --spaces mbv3-tiny
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from hwnas.latency.profile import DEFAULT_CALIBRATION_SUBNETS, check_resolutions, make_plan
from hwnas.runtime.quantize import quantize_workers
from hwnas.space import load_space


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", default=["mbv3-tiny"])
    ap.add_argument("--resolutions", nargs="+", type=int, default=None, help="default: all of the space's")
    ap.add_argument("--calibration-subnets", type=int, default=DEFAULT_CALIBRATION_SUBNETS)
    a = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} "
          f"at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| space | resolutions | graphs | 1 process s | parallel s (processes) | speed-up | identical |")
    print("|---|---|---|---|---|---|---|")
    for name in a.spaces:
        space = load_space(name)
        res = check_resolutions(space, a.resolutions)
        times, plans = {}, {}
        for workers in (1, None):
            t = time.perf_counter()
            plans[workers] = make_plan(space, res, int8=True, calibration_subnets=a.calibration_subnets, progress=False,
                                       quantize_workers=workers)
            times[workers] = time.perf_counter() - t
        n = len(plans[1].graphs)
        same = plans[1].graphs == plans[None].graphs
        print(f"| {name} | {res} | {n} | {times[1]:.1f} | {times[None]:.1f} ({quantize_workers(n)}) | "
              f"{times[1] / times[None]:.2f}x | {'yes' if same else 'NO'} |", flush=True)
    print(f"# load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
