"""The only module that imports pymoo: NSGA-II, our operators wrapped as pymoo operators, hypervolume.

Keeping pymoo behind this thin layer pins its API surface to a few classes
(Problem, Sampling, Crossover, Mutation, Repair, DuplicateElimination, NSGA2, HV)
that are stable across pymoo 0.6.x; the operators themselves are plain numpy in
`hwnas.search.operators` and can be tested without pymoo.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.indicators.hv import HV
from pymoo.termination import get_termination
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.search.operators import (
    CrossoverKind,
    GeneSpace,
    crossover,
    duplicate_mask,
    initial_population,
    mutate,
    repair,
)

# evaluate(X canonical genomes [n, L]) -> (F [n, n_obj] to minimise, G [n, 1] <= 0 feasible)
EvaluateFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _rng(random_state: np.random.Generator | None, fallback: np.random.Generator) -> np.random.Generator:
    # pymoo >= 0.6.2 passes its seeded Generator; 0.6.1 passes none: use ours (seeded too)
    return random_state if isinstance(random_state, np.random.Generator) else fallback


class _Problem(Problem):
    def __init__(self, gs: GeneSpace, n_obj: int, evaluate: EvaluateFn) -> None:
        super().__init__(n_var=gs.length, n_obj=n_obj, n_ieq_constr=1, xl=np.zeros(gs.length), xu=gs.upper.astype(float), vtype=int)
        self._gs = gs
        self._evaluate_fn = evaluate

    def _evaluate(self, X, out, *args, **kwargs):  # noqa: ANN001 - pymoo signature
        F, G = self._evaluate_fn(self._gs.canonical(np.asarray(X)))
        out["F"] = np.asarray(F, dtype=float)
        out["G"] = np.asarray(G, dtype=float).reshape(len(X), -1)


class _Sampling(Sampling):
    def __init__(self, gs: GeneSpace, fallback: np.random.Generator, seeds: np.ndarray | None) -> None:
        super().__init__()
        self._gs, self._fallback, self._seeds = gs, fallback, seeds

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):  # noqa: ANN001
        return initial_population(self._gs, n_samples, _rng(random_state, self._fallback), seeds=self._seeds)


class _Crossover(Crossover):
    def __init__(self, gs: GeneSpace, fallback: np.random.Generator, kind: CrossoverKind, prob: float) -> None:
        super().__init__(n_parents=2, n_offsprings=2, prob=prob)
        self._gs, self._fallback, self._kind = gs, fallback, kind

    def _do(self, problem, X, *args, random_state=None, **kwargs):  # noqa: ANN001
        C1, C2 = crossover(self._gs, X[0], X[1], _rng(random_state, self._fallback), self._kind)
        return np.stack([C1, C2])


class _Mutation(Mutation):
    def __init__(self, gs: GeneSpace, fallback: np.random.Generator, prob_var: float | None) -> None:
        super().__init__(prob=1.0)
        self._gs, self._fallback, self._p = gs, fallback, prob_var

    def _do(self, problem, X, *args, random_state=None, **kwargs):  # noqa: ANN001
        return mutate(self._gs, X, _rng(random_state, self._fallback), self._p)


class _Repair(Repair):
    def __init__(self, gs: GeneSpace) -> None:
        super().__init__()
        self._gs = gs

    def _do(self, problem, X, *args, **kwargs):  # noqa: ANN001
        return repair(self._gs, X)


class _Duplicates(DuplicateElimination):
    """Compares canonical genomes by hash: O(n) instead of pymoo's O(n^2) distance matrix."""

    def __init__(self, gs: GeneSpace) -> None:
        super().__init__()
        self._gs = gs

    def _do(self, pop, other, is_duplicate):  # noqa: ANN001
        X = np.asarray(pop.get("X"))
        O = np.asarray(other.get("X")) if other is not None else None
        return is_duplicate | duplicate_mask(self._gs, X, O)


@dataclass
class NSGA2Run:
    """Final population of one NSGA-II run (canonical genomes, objectives, constraint values)."""

    X: np.ndarray
    F: np.ndarray
    G: np.ndarray
    generations: int
    seconds: float


def run_nsga2(
    gs: GeneSpace,
    evaluate: EvaluateFn,
    n_obj: int,
    *,
    pop_size: int,
    n_gen: int,
    seed: int,
    time_limit_s: float | None = None,
    seeds: np.ndarray | None = None,
    crossover_kind: CrossoverKind = "uniform",
    crossover_prob: float = 0.9,
    mutation_prob: float | None = None,
    on_generation: Callable[[int], None] | None = None,
) -> NSGA2Run:
    """NSGA-II (ask/tell) with space-respecting operators; stops after `n_gen` or `time_limit_s`."""
    fallback = np.random.default_rng(seed)
    problem = _Problem(gs, n_obj, evaluate)
    algo = NSGA2(
        pop_size=pop_size,
        sampling=_Sampling(gs, fallback, seeds),
        crossover=_Crossover(gs, fallback, crossover_kind, crossover_prob),
        mutation=_Mutation(gs, fallback, mutation_prob),
        repair=_Repair(gs),
        eliminate_duplicates=_Duplicates(gs),
    )
    algo.setup(problem, termination=get_termination("n_gen", n_gen), seed=seed, verbose=False)
    t0 = time.perf_counter()
    gen = 0
    while algo.has_next():
        algo.next()
        gen += 1
        if on_generation is not None:
            on_generation(gen)
        if time_limit_s is not None and time.perf_counter() - t0 >= time_limit_s:
            break
    pop = algo.pop
    return NSGA2Run(
        X=gs.canonical(np.asarray(pop.get("X"))),
        F=np.asarray(pop.get("F"), dtype=float),
        G=np.asarray(pop.get("G"), dtype=float),
        generations=gen,
        seconds=time.perf_counter() - t0,
    )


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of F (all objectives minimised)."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=np.int64)


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume (pymoo/moocore) of minimisation points F w.r.t. `ref`; points not better than ref count 0."""
    F = np.asarray(F, dtype=float).reshape(-1, len(ref))
    ref = np.asarray(ref, dtype=float)
    F = F[(F < ref).all(axis=1)]
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=ref)(F))
