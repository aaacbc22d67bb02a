#!/usr/bin/env python
"""Benchmark: does `hwnas generate --int8` deliver a more accurate model than `hwnas generate` (fp32)
under the same latency budget and the same time budget? (issue 12's second target)

For each latency budget, the two generates run side by side on the 2-core machine, one intra-op thread
each, so both see the same machine for the same time:

    hwnas generate --data cifar10-small --space mbv3-cifar --budget-ms B --time-budget T --table fp32.json
    hwnas generate ... --int8 --table int8.json

Both latency tables are profiled first, one after the other on the quiet machine (`hwnas profile`,
`hwnas profile --int8`), and given with --table, so neither run spends its time budget profiling.
At the end, each delivered model.onnx is measured once more with nothing else running (the table's
threads, provider and protocol). The INT8 run also reports its fp32 twin (model.fp32.onnx, the same
subnet and weights), so quantisation's own cost is separated from the choice of subnet.

Budgets: by default the middle one of `bench_supernet_quality.py --part generate` (1.05 x the
predicted fp32 latency of the uniform net (3,5,4) at 32x32); `--anchor 0` the fast end ((2,3,3)),
`--anchor 2` the slow end ((4,7,6)); `--budgets-ms` gives others.
Everything is kept in --work; a finished run (its JSON exists) is not redone.

    flock /tmp/hwnas-heavy.lock python scripts/bench_int8_generate.py --work /work/bench-int8 --time-budget 45m

Smoke test (a few minutes): --time-budget 120s --train-limit 500 --budgets-ms 1.0
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_supernet_quality", ROOT / "scripts" / "bench_supernet_quality.py")
bq = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bench_supernet_quality"] = bq  # its dataclasses look their module up
_spec.loader.exec_module(bq)  # type: ignore[union-attr]

PRECISIONS = ("fp32", "int8")


def profile(work: Path, int8: bool) -> Path:
    path = work / ("table-int8.json" if int8 else "table.json")
    if not path.exists():
        cmd = [sys.executable, "-m", "hwnas", "profile", "--space", "mbv3-cifar", "--out", str(path), "--json"]
        code, out, wall = bq.run_cli(cmd + (["--int8"] if int8 else []))
        if code != 0:
            raise SystemExit(f"hwnas profile{' --int8' if int8 else ''} failed (exit {code})")
        bq.log(f"profiled {'INT8' if int8 else 'fp32'} in {wall:.0f} s")
    return path


def run_one(work: Path, data: str, budget: float, precision: str, time_budget_s: float) -> dict[str, Any]:
    tag = bq.budget_tag(budget)
    res_path = work / f"gen-{tag}-{precision}.json"
    if res_path.exists():
        return bq.read_json(res_path)
    table = work / ("table-int8.json" if precision == "int8" else "table.json")
    cmd = [sys.executable, "-m", "hwnas", "generate", "--budget-ms", tag, "--out", str(work / f"gen-{tag}-{precision}"),
           "--data", data, "--space", "mbv3-cifar", "--table", str(table), "--time-budget", f"{time_budget_s:g}",
           "--json", "--force"] + (["--int8"] if precision == "int8" else [])
    forced = not table_trusted(table)
    if forced:  # recorded in the result; the comparison is about the models, not the table's verdict
        bq.log(f"{table.name} is marked not trusted (noisy machine); passing --force-table")
        cmd.append("--force-table")
    env = dict(bq.os.environ, XDG_CACHE_HOME=str(work / f"xdg-cache-{precision}"))
    code, out, wall = bq.run_cli(cmd, env)
    base = dict(budget_ms=budget, precision=precision, exit_code=code, wall_s=wall, command=cmd, forced_table=forced)
    if code not in (0, bq.EXIT_NO_CANDIDATE):
        bq.log(f"generate {precision} --budget-ms {tag} failed (exit {code}); not saved, a re-run tries again")
        return dict(base, error=f"exit {code}")
    try:
        res = dict(bq.last_json_line(out), **base, no_candidate=code == bq.EXIT_NO_CANDIDATE)
    except ValueError:
        res = dict(base, no_candidate=True)
    bq.write_json(res_path, res)
    return res


def table_trusted(path: Path) -> bool:
    from hwnas.latency import load_table

    noise = load_table(path).noise
    return noise is None or bool(noise.trusted)


def quiet_measure(res: dict[str, Any], table_path: Path, rounds: int = 5) -> None:
    """Measure the delivered model.onnx once more (nothing else running), as the table measures: the median of
    `rounds` measurements a second apart (one short measurement right after a run ends has read 25% high)."""
    import statistics
    import time

    from hwnas.export.core import measure_model
    from hwnas.latency import load_table

    onnx = res.get("onnx")
    if not onnx or not Path(onnx).exists() or "quiet_measured_latency_ms" in res:
        return
    tab = load_table(table_path)
    got = []
    for _ in range(rounds):
        time.sleep(1.0)
        got.append(measure_model(onnx, int(res["subnet"]["resolution"]), 3, int(tab.fingerprint.threads),
                                 str(tab.fingerprint.provider), tab.protocol))
    res["quiet_measured_rounds_ms"] = got
    res["quiet_measured_latency_ms"] = statistics.median(got)


def delivered(r: dict[str, Any], budget: float) -> bool:
    return "val_acc" in r and not r.get("no_candidate") and bq.within(bq.gen_ms(r), budget)


def print_rows(rows: list[dict[str, Any]], time_budget_s: float) -> None:
    print(f"\n## `hwnas generate --int8` vs `hwnas generate` (fp32), --time-budget {time_budget_s:.0f} s, side by side\n")
    hdr = ["budget ms", "precision", "route", "subnet MACs", "epochs", "val acc (ORT)", "measured ms (own / quiet)",
           "within", "fp32 twin acc", "INT8 - fp32 twin", "wall s"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---:" for _ in hdr) + "|")
    for row in rows:
        b = row["budget_ms"]
        for p in PRECISIONS:
            r = row[p]
            if "error" in r or "val_acc" not in r:
                print(f"| {bq.budget_tag(b)} | {p} | failed: {r.get('error', 'exit 3, nothing printed')} |" + " |" * (len(hdr) - 3))
                continue
            ft = r.get("finetune") or {}
            twin = r.get("fp32_val_acc") if p == "int8" else None
            chg = r.get("int8_acc_change")
            print(f"| {bq.budget_tag(b)} | {p} | {r.get('route', '-')} | {r['macs'] / 1e6:.1f}M | {bq.fmt(ft.get('epochs'), '.1f')} | "
                  f"{r['val_acc']:.4f} | {r['measured_latency_ms']:.3f} / {bq.fmt(r.get('quiet_measured_latency_ms'))} | "
                  f"{'yes' if delivered(r, b) else 'NO'}{' (exit 3)' if r.get('no_candidate') else ''} | "
                  f"{bq.fmt(twin, '.4f')} | {'-' if chg is None else f'{100 * chg:+.2f} pt'} | {bq.fmt(r.get('wall_s'), '.0f')} |")
        print(f"| {bq.budget_tag(b)} | **INT8 - fp32** | | | | **{row['diff_pt']}** | | | | | |")
    print()
    print(f"within: measured <= budget x {1 + bq.LATENCY_TOLERANCE:g} (the slower of generate's own and the quiet measurement); "
          "val acc: the delivered model through ONNX Runtime on all validation images")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default=str(bq.DEFAULT_DATA))
    ap.add_argument("--time-budget", type=bq.parse_duration, default=bq.parse_duration("45m"), metavar="DURATION")
    ap.add_argument("--budgets-ms", type=float, nargs="+", default=None)
    ap.add_argument("--anchor", type=int, choices=[0, 1, 2], default=1,
                    help="without --budgets-ms: which of bench_supernet_quality's budgets (fast, middle, slow end), from this "
                         "machine's fp32 table")
    ap.add_argument("--train-limit", type=int, default=None, metavar="N", help="a random N training images (smoke tests only)")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if args.train_limit and (work / "data").exists():
        data = str(work / "data")
    elif args.train_limit:
        data = str(bq.make_subset(Path(args.data), work / "data", args.train_limit, seed=0))
    started = datetime.now(timezone.utc)

    from hwnas.data import load_dataset
    from hwnas.latency import LatencyPredictor, load_table

    tables = {p: profile(work, p == "int8") for p in PRECISIONS}
    if args.budgets_ms:
        budgets = [round(b, 3) for b in args.budgets_ms]
    else:
        ds = load_dataset(data)
        space = bq.with_classes(bq.load_space("mbv3-cifar"), ds.num_classes)
        pred = LatencyPredictor(load_table(tables["fp32"], space), space)
        budgets = [bq.default_budgets(bq.uniform_nets(space), pred.predict)[args.anchor]]
    bq.log("budgets (ms): " + ", ".join(map(bq.budget_tag, budgets)))

    rows = []
    for b in budgets:
        res: dict[str, dict[str, Any]] = {}

        def go(p: str, b: float = b) -> None:
            try:
                res[p] = run_one(work, data, b, p, args.time_budget)
            except Exception as e:  # noqa: BLE001 - reported in the table
                res[p] = dict(error=f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=go, args=(p,)) for p in PRECISIONS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in PRECISIONS:  # quietly, one after the other, once both have finished
            quiet_measure(res[p], tables[p])
        ok = {p: delivered(res[p], b) for p in PRECISIONS}
        diff = (f"{100 * (res['int8']['val_acc'] - res['fp32']['val_acc']):+.2f} pt" if all(ok.values())
                else "int8 only delivered" if ok["int8"] else "fp32 only delivered" if ok["fp32"] else "neither delivered")
        rows.append(dict(budget_ms=b, diff_pt=diff, **res))

    out = dict(started=started.isoformat(timespec="seconds"), finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               machine=platform.processor() or platform.machine(), load_avg=bq.os.getloadavg(), time_budget_s=args.time_budget,
               tables={p: str(t) for p, t in tables.items()}, rows=rows)
    bq.write_json(work / "results.json", out)
    print_rows(rows, args.time_budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
