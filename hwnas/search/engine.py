"""The search loop: NSGA-II on (accuracy, latency[, extras]) with the budget as a constraint.

Accuracy comes from any `accuracy_fn(list[Subnet]) -> array` (the supernet with
inherited weights in real use, anything in tests); latency from a latency predictor
(`.predict_genomes(X)`, `.min_latency_ms()`, `.resolutions`) or a plain vectorised
`latency_fn(X) -> array`. Every subnet is scored for real at most once (an archive keyed
by canonical genome), and all real scores are kept: the front and the per-budget bests
are picked from them, never from predictions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np

from hwnas.errors import UserError
from hwnas.search import pymoo_adapter as pm
from hwnas.search.models import (
    BudgetBest,
    EvaluatedPoint,
    FrontEntry,
    IterationReport,
    SearchConfig,
    SearchResult,
)
from hwnas.search.operators import GeneSpace, genome_keys, random_genomes
from hwnas.search.predictors import FittedPredictor, evaluate_predictor, select_and_fit
from hwnas.space import Space, Subnet, macs, params

AccuracyFn = Callable[[list[Subnet]], np.ndarray]
GenomeFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Objective:
    """An extra objective to minimise, computed from genomes (e.g. a second device's latency)."""

    name: str
    fn: GenomeFn


ObjectiveSpec = Union[str, Objective]


# ---------------------------------------------------------------- latency
@dataclass
class _Latency:
    fn: GenomeFn
    min_ms: float
    resolutions: list[int] | None


def _latency_from(obj: Any, gs_full: GeneSpace) -> _Latency:
    """Accept a LatencyModel or a bare vectorised function on genomes."""
    from hwnas.latency.model import LatencyModel

    model = obj if isinstance(obj, LatencyModel) else None
    fn: GenomeFn = model.predict_genomes if model is not None else obj
    if not callable(fn):
        raise TypeError("latency_predictor must be a LatencyModel or be callable on genomes")
    res = [int(r) for r in model.resolutions] if model is not None else None
    if model is not None:
        m = float(model.min_latency_ms())
    else:
        gs = GeneSpace.for_space(gs_full.space, res)
        m = float(fn(_min_latency_genome(gs, fn)[None, :])[0])
    return _Latency(fn=lambda X: np.asarray(fn(np.asarray(X, dtype=np.int64)), dtype=float), min_ms=m, resolutions=res)


def _min_latency_genome(gs: GeneSpace, fn: GenomeFn) -> np.ndarray:
    """Coordinate descent on latency from the smallest subnet (exact for additive tables)."""
    x = gs.smallest()
    best = float(fn(x[None, :])[0])
    improved = True
    while improved:
        improved = False
        for g in range(gs.length):
            if not gs.active_mask(x)[0, g]:
                continue
            values = gs.resolution_indices if g == 0 else range(int(gs.upper[g]) + 1)
            cand = np.repeat(x[None, :], len(values), axis=0)
            cand[:, g] = list(values)
            cand = gs.canonical(cand)
            lat = np.asarray(fn(cand), dtype=float)
            j = int(np.argmin(lat))
            if lat[j] < best - 1e-12:
                best, x, improved = float(lat[j]), cand[j], True
    return x


# ---------------------------------------------------------------- archive of real scores
@dataclass
class _Archive:
    gs: GeneSpace
    accuracy_fn: AccuracyFn
    index: dict[bytes, int] = field(default_factory=dict)
    X: list[np.ndarray] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.X)

    def contains(self, X: np.ndarray) -> np.ndarray:
        return np.array([k in self.index for k in genome_keys(self.gs.canonical(X))], dtype=bool) if len(X) else np.zeros(0, bool)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Real accuracy of every row; only architectures never seen before reach accuracy_fn."""
        X = self.gs.canonical(X)
        keys = genome_keys(X)
        new_rows, new_keys = [], []
        pending: set[bytes] = set()
        for x, k in zip(X, keys):
            if k not in self.index and k not in pending:
                pending.add(k)
                new_rows.append(x)
                new_keys.append(k)
        if new_rows:
            subnets = [self.gs.decode(x) for x in new_rows]
            acc = np.asarray(self.accuracy_fn(subnets), dtype=float).reshape(-1)
            if acc.shape != (len(subnets),):
                raise ValueError(f"accuracy_fn returned {acc.shape[0]} values for {len(subnets)} subnets")
            for x, k, a in zip(new_rows, new_keys, acc):
                self.index[k] = len(self.X)
                self.X.append(x)
                self.acc.append(float(a))
        return np.array([self.acc[self.index[k]] for k in keys])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.X:
            return np.zeros((0, self.gs.length), dtype=np.int64), np.zeros(0)
        return np.stack(self.X), np.asarray(self.acc, dtype=float)


# ---------------------------------------------------------------- extra objectives
def _extra_objectives(space: Space, gs: GeneSpace, specs: Sequence[ObjectiveSpec]) -> list[Objective]:
    out: list[Objective] = []
    for s in specs:
        if isinstance(s, Objective):
            out.append(s)
        elif s in ("macs", "params"):
            cost = macs if s == "macs" else params
            cache: dict[bytes, float] = {}

            def fn(X: np.ndarray, cost=cost, cache=cache) -> np.ndarray:
                vals = []
                for x, k in zip(gs.canonical(X), genome_keys(gs.canonical(X))):
                    if k not in cache:
                        cache[k] = float(cost(space, gs.decode(x)))
                    vals.append(cache[k])
                return np.asarray(vals)

            out.append(Objective(s, fn))
        else:
            raise UserError(f"objective '{s}' is not known; valid: macs, params (or an Objective)")
    names = [o.name for o in out]
    if len(set(names)) != len(names) or {"accuracy", "latency"} & set(names):
        raise UserError(f"extra objectives must have distinct names other than accuracy/latency, got {names}")
    return out


# ---------------------------------------------------------------- helpers
def check_budgets(budgets: Sequence[float], min_ms: float) -> list[float]:
    bs = [float(b) for b in budgets]
    if not bs:
        raise UserError("--budget-ms: give at least one latency budget in milliseconds")
    for b in bs:
        if not np.isfinite(b) or b <= 0:
            raise UserError(f"--budget-ms: {b:g} is not a positive number of milliseconds")
    for b in bs:
        if b < min_ms:
            raise UserError(
                f"--budget-ms: budget {b:g} ms is below the minimum predicted latency {min_ms:.4g} ms "
                "of this space on this table"
            )
    return bs


def _stratified(gs: GeneSpace, lat: _Latency, n: int, bmax: float, rng: np.random.Generator) -> np.ndarray:
    """`n` distinct genomes spread evenly over the latency range up to (a little beyond) the budget."""
    pool = random_genomes(gs, max(20 * n, 2000), rng)
    pool = np.concatenate([np.stack([gs.smallest(), gs.largest()]), pool])
    _, first = np.unique(np.stack(pool), axis=0, return_index=True)
    pool = pool[np.sort(first)]
    L = lat.fn(pool)
    keep = L <= 1.1 * bmax
    if keep.sum() >= n:
        pool, L = pool[keep], L[keep]
    chosen: list[int] = [0] if L[0] <= 1.1 * bmax else []  # the smallest subnet always
    edges = np.linspace(L.min(), L.max(), n + 1)
    bins = np.clip(np.searchsorted(edges, L, side="right") - 1, 0, n - 1)
    for b in rng.permutation(n):
        members = np.nonzero(bins == b)[0]
        members = members[~np.isin(members, chosen)]
        if len(members) and len(chosen) < n:
            chosen.append(int(rng.choice(members)))
    rest = np.setdiff1d(np.arange(len(pool)), chosen)
    if len(chosen) < n and len(rest):
        chosen += list(rng.choice(rest, size=min(n - len(chosen), len(rest)), replace=False))
    return pool[np.asarray(chosen, dtype=np.int64)]


def _spread(idx: np.ndarray, latency: np.ndarray, k: int) -> np.ndarray:
    """Pick k of `idx` evenly along latency (covering the whole front, ends included)."""
    if len(idx) <= k:
        return idx
    order = idx[np.argsort(latency[idx], kind="stable")]
    take = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return order[take]


def _hv(acc: np.ndarray, lat: np.ndarray, ref_acc: float, bmax: float) -> float:
    return pm.hypervolume(np.column_stack([-acc, lat]), np.array([-ref_acc, bmax]))


# ---------------------------------------------------------------- the search
def run_search(
    space: Space,
    accuracy_fn: AccuracyFn,
    latency_predictor: Any,
    budgets: Sequence[float],
    *,
    seed: int = 0,
    config: SearchConfig | None = None,
    extra_objectives: Sequence[ObjectiveSpec] = (),
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Accuracy-latency Pareto front under `max(budgets)` and the best subnet for each budget.

    Raises UserError if a budget is below the minimum predicted latency of the space.
    """
    cfg = config or SearchConfig()
    t0 = time.perf_counter()
    lines: list[str] = []

    def say(msg: str) -> None:
        lines.append(f"[{time.perf_counter() - t0:7.2f}s] {msg}")
        if log is not None:
            log(msg)

    gs_full = GeneSpace.for_space(space)
    lat = _latency_from(latency_predictor, gs_full)
    gs = GeneSpace.for_space(space, lat.resolutions)
    bs = check_budgets(budgets, lat.min_ms)
    bmax = max(bs)
    extras = _extra_objectives(space, gs, extra_objectives)
    obj_names = ["accuracy", "latency_ms", *[o.name for o in extras]]
    rng = np.random.default_rng(seed)
    archive = _Archive(gs, accuracy_fn)
    n_pred = 0
    say(
        f"space {space.name}: genome length {gs.length}, resolutions {[space.resolutions[i] for i in gs.resolution_indices]}; "
        f"budgets {bs} ms (constraint: latency <= {bmax:g} ms); min predicted latency {lat.min_ms:.4g} ms; "
        f"objectives {obj_names}; mode {cfg.mode}; seed {seed}"
    )

    def objectives(X: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        L = lat.fn(X)
        cols = [-acc, L] + [np.asarray(o.fn(X), dtype=float) for o in extras]
        return np.column_stack(cols), (L - bmax)[:, None]

    predictor_report = None
    iterations: list[IterationReport] = []

    if cfg.mode == "direct":

        def evaluate_real(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return objectives(X, archive.score(X))

        run = pm.run_nsga2(
            gs, evaluate_real, len(obj_names), pop_size=cfg.pop_size, n_gen=cfg.generations, seed=seed,
            time_limit_s=cfg.time_limit_s, crossover_kind=cfg.crossover, crossover_prob=cfg.crossover_prob,
            mutation_prob=cfg.mutation_prob,
        )
        say(f"NSGA-II on real scores: {run.generations} generations, {len(archive)} distinct subnets scored, {run.seconds:.1f}s")
    else:
        X0 = _stratified(gs, lat, cfg.init_samples, bmax, rng)
        archive.score(X0)
        Xa, ya = archive.arrays()
        say(f"initial set: {len(archive)} subnets stratified over latency, scored for real "
            f"(accuracy {ya.min():.4f}..{ya.max():.4f})")
        predictor: FittedPredictor | None = None
        for it in range(cfg.iterations):
            Xa, ya = archive.arrays()
            predictor, predictor_report = select_and_fit(Xa, ya, gs.features, seed=seed + it, candidates=cfg.predictors, folds=cfg.cv_folds)
            cand_scores = ", ".join(f"{k} {v:.3f}" for k, v in predictor_report.candidates.items())
            say(f"iteration {it + 1}: predictor {predictor_report.name} on {len(ya)} subnets, held-out Kendall tau "
                f"{predictor_report.kendall_tau:.3f}, RMSE {100 * predictor_report.rmse:.2f} %-points (CV tau: {cand_scores})")
            counter = [0]

            def evaluate_pred(X: np.ndarray, p: FittedPredictor = predictor) -> tuple[np.ndarray, np.ndarray]:
                counter[0] += len(X)
                return objectives(X, np.clip(p.predict(X), 0.0, 1.0))

            Lf = lat.fn(Xa)
            feas = np.nonzero(Lf <= bmax)[0]
            seeds_idx = feas[pm.non_dominated(np.column_stack([-ya[feas], Lf[feas]]))] if len(feas) else np.zeros(0, int)
            run = pm.run_nsga2(
                gs, evaluate_pred, len(obj_names), pop_size=cfg.pop_size, n_gen=cfg.generations, seed=seed + 7919 * (it + 1),
                time_limit_s=cfg.time_limit_s, seeds=Xa[seeds_idx][: cfg.pop_size // 2], crossover_kind=cfg.crossover,
                crossover_prob=cfg.crossover_prob, mutation_prob=cfg.mutation_prob,
            )
            n_pred += counter[0]
            feasible = np.nonzero(run.G[:, 0] <= 0)[0]
            nd = feasible[pm.non_dominated(run.F[feasible])] if len(feasible) else np.zeros(0, int)
            new = nd[~archive.contains(run.X[nd])] if len(nd) else nd
            Lr = lat.fn(run.X)
            pick = _spread(new, Lr, cfg.candidates_per_iteration)
            tau = rmse = None
            if len(pick):
                Xc = run.X[pick]
                yc = archive.score(Xc)
                if len(pick) >= 3:
                    tau, rmse = evaluate_predictor(predictor, Xc, yc)
            Xa, ya = archive.arrays()
            Lf = lat.fn(Xa)
            hv = _hv(ya, Lf, cfg.hv_ref_acc, bmax)
            iterations.append(IterationReport(iteration=it + 1, predictor=predictor_report, new_candidates=len(pick),
                                              candidates_kendall_tau=tau, candidates_rmse=rmse, hypervolume=hv))
            tau_txt = f", predictor on them: Kendall tau {tau:.3f}, RMSE {100 * rmse:.2f} %-points" if tau is not None else ""
            say(f"iteration {it + 1}: NSGA-II on the predictor ({run.generations} generations, {counter[0]} predicted evaluations); "
                f"{len(pick)} new front candidate{'' if len(pick) == 1 else 's'} scored for real{tau_txt}; hypervolume {hv:.5g}")
            if not len(pick):
                say("no new candidates on the predicted front: the loop has converged")
                break
        if cfg.iterations > 0:
            Xa, ya = archive.arrays()
            _, predictor_report = select_and_fit(Xa, ya, gs.features, seed=seed + cfg.iterations, candidates=cfg.predictors, folds=cfg.cv_folds)
            say(f"final predictor {predictor_report.name} refitted on {len(ya)} real scores: held-out Kendall tau "
                f"{predictor_report.kendall_tau:.3f}, RMSE {100 * predictor_report.rmse:.2f} %-points")

    # ---- every budget must have a feasible real-scored subnet (the fastest one, if need be)
    Xa, ya = archive.arrays()
    La = lat.fn(Xa)
    if any(not (La <= b).any() for b in bs):
        x = _min_latency_genome(gs, lat.fn)
        archive.score(x[None, :])
        Xa, ya = archive.arrays()
        La = lat.fn(Xa)
        say("scored the fastest subnet so that every budget has a feasible candidate")

    F_all, _ = objectives(Xa, ya)
    feas = np.nonzero(La <= bmax)[0]
    front_idx = feas[pm.non_dominated(F_all[feas])]
    front_idx = front_idx[np.lexsort((-ya[front_idx], La[front_idx]))]

    def entry(i: int, cls: type[FrontEntry] = FrontEntry, **kw: Any) -> FrontEntry:
        sub = gs.decode(Xa[i])
        return cls(subnet=sub, predicted_acc=float(ya[i]), predicted_latency_ms=float(La[i]), macs=int(macs(space, sub)),
                   objectives={o.name: float(F_all[i, 2 + j]) for j, o in enumerate(extras)}, **kw)

    front = [entry(int(i)) for i in front_idx]
    best: list[BudgetBest] = []
    for b in bs:
        ok = np.nonzero(La <= b)[0]
        i = int(ok[np.lexsort((La[ok], -ya[ok]))[0]])
        best.append(entry(i, BudgetBest, budget_ms=b))  # type: ignore[arg-type]
        say(f"budget {b:g} ms: best accuracy {ya[i]:.4f} at {La[i]:.4g} ms")
    hv = _hv(ya[front_idx], La[front_idx], cfg.hv_ref_acc, bmax)
    say(f"front: {len(front)} subnets; hypervolume {hv:.5g} (reference: accuracy {cfg.hv_ref_acc:g}, latency {bmax:g} ms); "
        f"evaluations: {len(archive)} real, {n_pred} predicted")
    return SearchResult(
        space=space.name,
        budgets_ms=bs,
        objectives=obj_names,
        front=front,
        best=best,
        evaluated=[EvaluatedPoint(genome=[int(v) for v in x], acc=float(a), latency_ms=float(l)) for x, a, l in zip(Xa, ya, La)],
        hypervolume=hv,
        hv_reference=(cfg.hv_ref_acc, bmax),
        evaluations_real=len(archive),
        evaluations_predicted=n_pred,
        min_latency_ms=lat.min_ms,
        predictor=predictor_report,
        iterations=iterations,
        seed=seed,
        seconds=time.perf_counter() - t0,
        log=lines,
    )
