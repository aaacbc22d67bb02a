#!/usr/bin/env python
"""Benchmarks of `hwnas search` (issue 5). Prints tables; run under `flock /work/heavy.lock`.

Part `imagenet`: mbv3-imagenet, a REAL latency table (measured with `hwnas profile` on this
machine) and a SYNTHETIC accuracy surrogate (no ImageNet-trained supernet exists here: no data,
no GPU). The surrogate mimics OFA's accuracy range (about 70-80 % top-1): a smooth saturating
function of log-MACs, plus small depth and resolution terms, plus a fixed random per-gene term
(so accuracy is not a function of MACs alone and the latency/MACs mismatch matters):

    u   = (log MACs - log MACs_min) / (log MACs_max - log MACs_min)
    acc = 0.70 + 0.075 * (1 - exp(-3u)) / (1 - exp(-3)) + 0.010 * mean depth fraction
          + 0.006 * resolution fraction + 0.004 * tanh(onehot(x) . w),  w ~ N(0, 1) fixed (seed 1234)

Reference front: the non-dominated set of >= 100,000 uniform random subnets plus a long NSGA-II
run (pop 200 x 300 generations). The timed run is `run_search(mode="direct")` with a wall-clock
limit. Hypervolume of (-acc, latency), reference point (acc = lowest accuracy of the random
sample, latency = budget); the loose SPEC reference (acc 0, budget) is also shown.

Part `tiny`: mbv3-tiny supernet trained on digits (real), a real mbv3-tiny latency table;
surrogate-assisted loop (default SearchConfig) against plain NSGA-II on real evaluations:
real supernet evaluations needed to reach 99 % of the final hypervolume.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from hwnas.search import SearchConfig, run_search
from hwnas.search import pymoo_adapter as pm
from hwnas.search.operators import GeneSpace, random_genomes
from hwnas.space import load_space


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(title: str) -> None:
    print(f"\n## {title}\nmachine: {cpu_model()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


# ------------------------------------------------------------------ synthetic accuracy for mbv3-imagenet
class SyntheticImagenetAccuracy:
    """Vectorised MACs per genome (same slot arrangement as the latency predictor) -> OFA-like accuracy."""

    def __init__(self, space, gs: GeneSpace, seed: int = 1234):
        from hwnas.latency.pieces import slot_keys
        from hwnas.space.cost import block_cost, head_cost, stem_cost

        self.space, self.gs = space, gs
        R = len(space.resolutions)
        self.base = np.zeros(R)
        self.stage = [np.zeros((R, 2, len(s.kernels), len(s.expands))) for s in space.stages]
        for t, r in enumerate(space.resolutions):
            if t not in gs.resolution_indices:
                continue
            sk = slot_keys(space, r)
            cost = lambda key: {"StemPlan": stem_cost, "BlockPlan": block_cost, "HeadPlan": head_cost}[type(sk.plans[key]).__name__](sk.plans[key])[0]  # noqa: E731
            self.base[t] = cost(sk.stem) + cost(sk.head) + (cost(sk.fixed) if sk.fixed else 0)
            for i, (first, later) in enumerate(sk.stages):
                for pos, rows in enumerate((first, later)):
                    if rows is None:
                        continue
                    for ki, row in enumerate(rows):
                        for ei, key in enumerate(row):
                            self.stage[i][t, pos, ki, ei] = cost(key)
        rng = np.random.default_rng(seed)
        self.w = rng.normal(0, 1, size=gs.features(gs.smallest()[None]).shape[1])
        m = self.macs(np.stack([gs.smallest(), gs.largest()]))
        self.lmin, self.lmax = np.log(m[0]), np.log(m[1])

    def macs(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        t = X[:, 0]
        out = self.base[t].copy()
        for i, s in enumerate(self.space.stages):
            depth = np.asarray(s.depths)[X[:, 1 + i]]
            sl = self.gs.encoding.block_slice(i)
            for j in range(s.max_depth):
                out += np.where(depth > j, self.stage[i][t, min(j, 1), X[:, sl.start + 2 * j], X[:, sl.start + 2 * j + 1]], 0.0)
        return out

    def genomes(self, X: np.ndarray) -> np.ndarray:
        X = self.gs.canonical(X)
        u = (np.log(self.macs(X)) - self.lmin) / (self.lmax - self.lmin)
        depth = np.mean([np.asarray(s.depths)[X[:, 1 + i]] / s.max_depth for i, s in enumerate(self.space.stages)], axis=0)
        res = X[:, 0] / max(1, len(self.space.resolutions) - 1)
        gene = np.tanh(self.gs.features(X) @ self.w / np.sqrt(len(self.w)) * 3)
        return 0.70 + 0.075 * (1 - np.exp(-3 * u)) / (1 - np.exp(-3)) + 0.010 * depth + 0.006 * res + 0.004 * gene

    def __call__(self, subnets) -> np.ndarray:  # accuracy_fn(list[Subnet])
        return self.genomes(np.stack([self.gs.encode(s) for s in subnets]))


def hv_of(acc: np.ndarray, lat: np.ndarray, ref_acc: float, budget: float) -> float:
    return pm.hypervolume(np.column_stack([-acc, lat]), np.array([-ref_acc, budget]))


def nd_points(acc: np.ndarray, lat: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    ok = lat <= budget
    a, l = acc[ok], lat[ok]
    idx = pm.non_dominated(np.column_stack([-a, l]))
    return a[idx], l[idx]


def part_imagenet(table_path: str, seeds: list[int], time_limit: float, n_random: int, limits: list[float]) -> None:
    from hwnas.latency import LatencyPredictor, load_table

    space = load_space("mbv3-imagenet")
    pred = LatencyPredictor(load_table(table_path, space), space)
    gs = GeneSpace.for_space(space, pred.resolutions)
    acc_fn = SyntheticImagenetAccuracy(space, gs)
    header("mbv3-imagenet: real latency table, synthetic accuracy surrogate (NSGA-II, direct)")
    print(f"table: {table_path} (resolutions {pred.resolutions}); min predicted latency {pred.min_latency_ms():.3f} ms")

    # reference: >= n_random random subnets + a long NSGA-II run
    t = time.perf_counter()
    rng = np.random.default_rng(99)
    ra, rl = [], []
    for _ in range(0, n_random, 50_000):
        X = random_genomes(gs, 50_000, rng)
        ra.append(acc_fn.genomes(X))
        rl.append(pred.predict_genomes(X))
    ra, rl = np.concatenate(ra), np.concatenate(rl)
    budget = float(np.quantile(rl, 0.5))
    ref_acc = float(ra.min())
    print(f"random sample: {len(ra)} subnets, accuracy {100 * ra.min():.2f}..{100 * ra.max():.2f} %, latency "
          f"{rl.min():.2f}..{rl.max():.2f} ms; budget = median latency = {budget:.3f} ms ({time.perf_counter() - t:.1f}s)")
    t = time.perf_counter()
    long = run_search(space, acc_fn, pred, [budget], seed=12345, config=SearchConfig(mode="direct", pop_size=200, generations=300))
    la = np.array([p.acc for p in long.evaluated])
    ll = np.array([p.latency_ms for p in long.evaluated])
    fa, fl = nd_points(np.concatenate([ra, la]), np.concatenate([rl, ll]), budget)
    hv_ref = hv_of(fa, fl, ref_acc, budget)
    hv_ref_loose = hv_of(fa, fl, 0.0, budget)
    hv_rand_all = hv_of(*nd_points(ra, rl, budget), ref_acc, budget)
    print(f"long NSGA-II: {long.evaluations_real} evaluations, {long.seconds:.1f}s; reference front {len(fa)} points; "
          f"HV(ref) = {hv_ref:.6f} (tight), {hv_ref_loose:.6f} (acc 0); {len(ra)} random alone reach "
          f"{100 * hv_rand_all / hv_ref:.2f} %, the long run alone {100 * hv_of(*nd_points(la, ll, budget), ref_acc, budget) / hv_ref:.2f} %")

    print("\n| seed | seconds | generations | evaluations | HV % of reference (tight) | HV % (acc 0 ref) | random, same evaluations: HV % | random evaluations to match |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seed in seeds:
        t0 = time.perf_counter()
        r = run_search(space, acc_fn, pred, [budget], seed=seed, config=SearchConfig(mode="direct", pop_size=100, generations=100000, time_limit_s=time_limit))
        wall = time.perf_counter() - t0
        ea = np.array([p.acc for p in r.evaluated])
        el = np.array([p.latency_ms for p in r.evaluated])
        hv = hv_of(*nd_points(ea, el, budget), ref_acc, budget)
        hv_loose = hv_of(*nd_points(ea, el, budget), 0.0, budget)
        n = r.evaluations_real
        gens = next((ln for ln in r.log if "generations" in ln), "")
        g = gens.split("NSGA-II on real scores: ")[-1].split(" generations")[0]
        # random search: same n, then doubling until it matches
        rng = np.random.default_rng(1000 + seed)
        cur_a, cur_l = np.zeros(0), np.zeros(0)
        drawn, match, hv_same = 0, None, None
        target = n
        while drawn < 2_000_000:
            k = min(target - drawn, 200_000)
            X = random_genomes(gs, k, rng)
            cur_a, cur_l = nd_points(np.concatenate([cur_a, acc_fn.genomes(X)]), np.concatenate([cur_l, pred.predict_genomes(X)]), budget)
            drawn += k
            if drawn < target:
                continue
            h = hv_of(cur_a, cur_l, ref_acc, budget)
            if hv_same is None:
                hv_same = h
            if h >= hv:
                match = drawn
                break
            target *= 2
        match_txt = f"<= {match:,}" if match is not None else f"> {drawn:,}"
        print(f"| {seed} | {wall:.1f} | {g} | {n:,} | {100 * hv / hv_ref:.2f} | {100 * hv_loose / hv_ref_loose:.3f} | "
              f"{100 * hv_same / hv_ref:.2f} | {match_txt} |")
        sys.stdout.flush()

    print("\nshorter time limits (seed 0): how fast the front converges")
    print("\n| NSGA-II time limit (s) | wall (s) | evaluations | HV % of reference (tight) | random, same evaluations: HV % |")
    print("|---:|---:|---:|---:|---:|")
    for limit in limits:
        t0 = time.perf_counter()
        r = run_search(space, acc_fn, pred, [budget], seed=0, config=SearchConfig(mode="direct", pop_size=100, generations=100000, time_limit_s=limit))
        wall = time.perf_counter() - t0
        ea = np.array([p.acc for p in r.evaluated])
        el = np.array([p.latency_ms for p in r.evaluated])
        hv = hv_of(*nd_points(ea, el, budget), ref_acc, budget)
        X = random_genomes(gs, r.evaluations_real, np.random.default_rng(7))
        hv_r = hv_of(*nd_points(acc_fn.genomes(X), pred.predict_genomes(X), budget), ref_acc, budget)
        print(f"| {limit:g} | {wall:.1f} | {r.evaluations_real:,} | {100 * hv / hv_ref:.2f} | {100 * hv_r / hv_ref:.2f} |")
        sys.stdout.flush()


# ------------------------------------------------------------------ tiny / digits: surrogate vs plain NSGA-II
def evals_to_reach(result, budget: float, target_hv: float, ref_acc: float) -> int | None:
    a = np.array([p.acc for p in result.evaluated])
    l = np.array([p.latency_ms for p in result.evaluated])
    for k in range(1, len(a) + 1):
        if l[k - 1] > budget:
            continue
        if hv_of(*nd_points(a[:k], l[:k], budget), ref_acc, budget) >= target_hv:
            return k
    return None


def part_tiny(ckpt: str, table: str, budgets: list[float] | None, seed: int, calib_images: int, direct_gens: int) -> None:
    import torch

    from hwnas.data import calibration_subset, load_dataset
    from hwnas.latency import LatencyPredictor, load_table
    from hwnas.train import evaluate_subnet, load_supernet

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    net, meta = load_supernet(ckpt)
    space = meta.get_space()
    pred = LatencyPredictor(load_table(table, space), space)
    ds = load_dataset(meta.data)
    calib = calibration_subset(ds, n=calib_images, seed=seed)
    cache: dict[str, float] = {}
    cost = {"n": 0, "s": 0.0}

    def acc_fn(subnets):
        out = []
        for s in subnets:
            k = s.key()
            if k not in cache:
                t = time.perf_counter()
                cache[k] = evaluate_subnet(net, s, ds, calib=calib)
                cost["s"] += time.perf_counter() - t
                cost["n"] += 1
            out.append(cache[k])
        return np.array(out)

    gs = GeneSpace.for_space(space, pred.resolutions)
    L = pred.predict_genomes(random_genomes(gs, 20000, np.random.default_rng(0)))
    budget = budgets[0] if budgets else float(np.quantile(L, 0.5))
    header("mbv3-tiny / digits: surrogate-assisted loop vs plain NSGA-II on real supernet evaluations")
    print(f"checkpoint {ckpt} (data {meta.data}, {len(ds.val_y)} val images, BN recalibration on {len(calib)} images); "
          f"table {table}; budget {budget:.4f} ms (median latency of random subnets)")
    runs = {}
    t0 = time.perf_counter()
    runs["surrogate (default SearchConfig)"] = run_search(space, acc_fn, pred, [budget], seed=seed, config=SearchConfig())
    t1 = time.perf_counter()
    runs[f"plain NSGA-II, real evaluations (pop 32 x {direct_gens} gen)"] = run_search(
        space, acc_fn, pred, [budget], seed=seed, config=SearchConfig(mode="direct", pop_size=32, generations=direct_gens))
    t2 = time.perf_counter()
    print(f"one real evaluation: {1000 * cost['s'] / max(cost['n'], 1):.0f} ms on average ({cost['n']} distinct subnets); "
          f"wall: surrogate {t1 - t0:.1f}s, plain {t2 - t1:.1f}s")
    all_a = np.concatenate([[p.acc for p in r.evaluated] for r in runs.values()])
    all_l = np.concatenate([[p.latency_ms for p in r.evaluated] for r in runs.values()])
    ref_acc = float(all_a.min())
    best_hv = hv_of(*nd_points(all_a, all_l, budget), ref_acc, budget)
    print(f"hypervolume reference point: acc {100 * ref_acc:.2f} % (lowest scored), latency {budget:.4f} ms; "
          f"best known HV (union of both runs) {best_hv:.6f}")
    print("\n| method | real evaluations | predicted evaluations | final HV % of best known | real evals to 99 % of own final HV | real evals to 99 % of best known HV | best acc under budget | predictor (held-out tau / RMSE) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in runs.items():
        a = np.array([p.acc for p in r.evaluated])
        l = np.array([p.latency_ms for p in r.evaluated])
        own = hv_of(*nd_points(a, l, budget), ref_acc, budget)
        e_own = evals_to_reach(r, budget, 0.99 * own, ref_acc)
        e_best = evals_to_reach(r, budget, 0.99 * best_hv, ref_acc)
        p = f"{r.predictor.name}: {r.predictor.kendall_tau:.3f} / {100 * r.predictor.rmse:.2f} pp" if r.predictor else "-"
        print(f"| {name} | {r.evaluations_real} | {r.evaluations_predicted} | {100 * own / best_hv:.2f} | {e_own} | "
              f"{e_best if e_best is not None else 'not reached'} | {100 * r.best[0].predicted_acc:.2f} % @ {r.best[0].predicted_latency_ms:.4f} ms | {p} |")
    sur = list(runs.values())[0]
    if sur.iterations:
        print("\nsurrogate rounds: " + "; ".join(
            f"#{it.iteration} {it.predictor.name} tau {it.predictor.kendall_tau:.3f}"
            + (f", on new candidates tau {it.candidates_kendall_tau:.3f}" if it.candidates_kendall_tau is not None else "")
            for it in sur.iterations))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["imagenet", "tiny", "all"], default="all")
    ap.add_argument("--imagenet-table", default=None, help="mbv3-imagenet TABLE (default: latency_tables/mbv3-imagenet*.json)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--time-limit", type=float, default=25.0, help="NSGA-II wall-clock limit (s) of the timed run")
    ap.add_argument("--short-limits", type=float, nargs="*", default=[0.5, 1, 2, 5, 10], help="extra, shorter time limits (seed 0)")
    ap.add_argument("--random", type=int, default=100_000, help="random subnets in the reference front")
    ap.add_argument("--tiny-ckpt", default=None)
    ap.add_argument("--tiny-table", default=None)
    ap.add_argument("--tiny-budget", type=float, default=None)
    ap.add_argument("--calib-images", type=int, default=500)
    ap.add_argument("--direct-generations", type=int, default=15)
    args = ap.parse_args()
    if args.part in ("imagenet", "all"):
        path = args.imagenet_table
        if path is None:
            import glob

            found = sorted(glob.glob("latency_tables/mbv3-imagenet*.json"))
            if not found:
                sys.exit("no mbv3-imagenet table: pass --imagenet-table (hwnas profile --space mbv3-imagenet --out ...)")
            path = found[0]
        part_imagenet(path, args.seeds, args.time_limit, args.random, args.short_limits)
    if args.part in ("tiny", "all"):
        if not (args.tiny_ckpt and args.tiny_table):
            sys.exit("--tiny-ckpt and --tiny-table are needed for part tiny")
        part_tiny(args.tiny_ckpt, args.tiny_table, [args.tiny_budget] if args.tiny_budget else None, args.seeds[0] if args.seeds else 0,
                  args.calib_images, args.direct_generations)


if __name__ == "__main__":
    main()
