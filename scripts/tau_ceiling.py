"""How high can Kendall tau against an alone column be, given how noisy that column is?

Issue 9's target (tau >= 0.7 between inherited and alone accuracies) compares a supernet's ranking with
networks trained alone once or twice each. Each alone accuracy carries seed noise (about 1.2 points between
two draws of the same network on cifar10-small at 7 epochs), and the 8 networks lie within a few points of
each other, so even a ranking that is exactly right does not always reach 0.7. This script puts a number on it:

- truth: the mean of the alone draws given (the best estimate there is);
- noise: the seed-to-seed standard deviation of one draw, estimated from the draws (or given);
- simulated: a column of n draws = truth + noise / sqrt(n), many times; tau of a ranking against it.

Two rankings are scored: the true order itself (the best any supernet can do) and the order by MACs
(what a supernet whose inherited accuracy rises with size, Spearman 1.00, gets). Prints a table.

    python scripts/tau_ceiling.py --draw 0.6160 0.6255 ... --draw 0.5990 0.6130 ...
    python scripts/tau_ceiling.py --work /work/bench/q45d      # alone-i.json and alone-i-sK.json there
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_supernet_quality import alone_path  # noqa: E402

TARGET = 0.7


def draws_from_work(work: Path) -> list[list[float]]:
    """The alone draws a bench_supernet_quality.py work folder holds."""
    draws: list[list[float]] = []
    k = 0
    while True:
        col = []
        i = 0
        while (p := alone_path(work, i, k)).exists():
            col.append(float(json.loads(p.read_text())["val_acc"]))
            i += 1
        if not col:
            return draws
        draws.append(col)
        k += 1


def simulate(truth: np.ndarray, ranking: np.ndarray, sd: float, n_draws: int, trials: int, seed: int) -> np.ndarray:
    """Kendall tau of `ranking` against `trials` simulated columns of `n_draws` draws each."""
    rng = np.random.default_rng(seed)
    cols = truth + rng.normal(0.0, sd / np.sqrt(n_draws), (trials, truth.size))
    return np.array([kendalltau(ranking, c).statistic for c in cols])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="a bench_supernet_quality.py work folder with alone draws")
    ap.add_argument("--draw", type=float, nargs="+", action="append", default=[], metavar="ACC",
                    help="one draw of the alone column, subnets in MACs order (repeat for more draws)")
    ap.add_argument("--sd", type=float, help="seed-to-seed sd of one draw (default: estimated from >= 2 draws)")
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    draws = draws_from_work(args.work) if args.work else args.draw
    if not draws or len({len(d) for d in draws}) != 1 or len(draws[0]) < 3:
        ap.error("give at least one alone column of >= 3 subnets (all draws of the same length)")
    a = np.array(draws)
    if args.sd is None and a.shape[0] < 2:
        ap.error("one draw cannot tell its own noise: give --sd or a second draw")
    sd = float(args.sd if args.sd is not None else np.sqrt(np.mean(np.var(a, axis=0, ddof=1))))  # pooled
    truth = a.mean(axis=0)
    by_macs = np.arange(truth.size)
    print(f"{a.shape[0]} draw(s) of {truth.size} subnets; truth = their mean; one draw's sd = {sd * 100:.2f} points; "
          f"tau(MACs order, truth) = {kendalltau(by_macs, truth).statistic:+.2f}")
    print()
    print("| ranking | alone draws | mean tau | P(tau >= 0.7) | 10th pct | 90th pct |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, ranking in (("the true order", truth), ("by MACs", by_macs)):
        for n in (1, 2, 4):
            t = simulate(truth, ranking, sd, n, args.trials, args.seed)
            print(f"| {name} | {n} | {t.mean():+.2f} | {(t >= TARGET).mean():.2f} | {np.percentile(t, 10):+.2f} | "
                  f"{np.percentile(t, 90):+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
