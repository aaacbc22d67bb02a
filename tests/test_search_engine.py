"""The search engine on a synthetic problem small enough to enumerate (exact Pareto front known)."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import UserError
from hwnas.search import SearchConfig, run_search, select_and_fit
from hwnas.search import pymoo_adapter as pm
from hwnas.search.operators import GeneSpace, genome_keys, random_genomes
from hwnas.search.predictors import evaluate_predictor
from hwnas.space import Space, Subnet, macs


def _micro_space() -> Space:
    st = dict(depths=[1, 2], kernels=[3, 5], expands=[2, 4])
    return Space.model_validate(dict(
        name="micro", num_classes=10,
        stem=dict(out_channels=8, kernel=3, stride=2, act="hswish"),
        stages=[dict(out_channels=c, stride=s, act="relu", se=False, **st) for c, s in ((8, 1), (16, 2), (16, 1))],
        head=dict(final_expand=32, feature_mix=None, act="hswish", dropout=0.0),
        resolutions=[12, 16],
    ))


class Problem:
    """Additive latency (a fake latency table) and a smooth, saturating accuracy with a per-gene term."""

    def __init__(self, space: Space, seed: int = 0):
        self.space = space
        self.gs = GeneSpace.for_space(space)
        rng = np.random.default_rng(seed)
        self.cost = rng.uniform(0.1, 1.0, size=(self.gs.length, 4)) * np.linspace(1, 2, 4)[None, :]
        self.cost[0] = [0.0, 1.5, 0, 0]  # resolution 16 costs 1.5 ms more
        self.w = rng.normal(0, 1, size=self.gs.features(self.gs.smallest()[None]).shape[1])
        self.calls = 0
        self.scored: list[str] = []

    # the LatencyModel protocol
    @property
    def resolutions(self) -> list[int]:
        return list(self.space.resolutions)

    def predict(self, subnet: Subnet) -> float:
        return float(self.predict_genomes(self.gs.encode(subnet)[None, :])[0])

    def predict_genomes(self, X: np.ndarray) -> np.ndarray:
        X = self.gs.canonical(X)
        m = self.gs.active_mask(X)
        return 1.0 + (self.cost[np.arange(self.gs.length)[None, :], X] * m).sum(axis=1)

    def min_latency_ms(self) -> float:
        return float(self.predict_genomes(self.all_genomes()).min())

    def acc_genomes(self, X: np.ndarray) -> np.ndarray:
        L = self.predict_genomes(X)
        return 0.5 + 0.4 * (1 - np.exp(-(L - 1.0) / 4.0)) + 0.01 * np.tanh(self.gs.features(X) @ self.w / 3)

    def accuracy_fn(self, subnets: list[Subnet]) -> np.ndarray:
        self.calls += 1
        self.scored += [s.key() for s in subnets]
        return self.acc_genomes(np.stack([self.gs.encode(s) for s in subnets]))

    def all_genomes(self) -> np.ndarray:
        grids = np.meshgrid(*[np.arange(u + 1) for u in self.gs.upper], indexing="ij")
        X = np.stack([g.ravel() for g in grids], axis=1)
        return np.unique(self.gs.canonical(X), axis=0)

    def exact_hv(self, budget: float, ref_acc: float) -> float:
        X = self.all_genomes()
        return pm.hypervolume(np.column_stack([-self.acc_genomes(X), self.predict_genomes(X)]), np.array([-ref_acc, budget]))


@pytest.fixture(scope="module")
def prob() -> Problem:
    return Problem(_micro_space())


def _budget(p: Problem, q: float) -> float:
    return float(np.quantile(p.predict_genomes(p.all_genomes()), q))


def test_direct_nsga2_reaches_exact_front_hypervolume(prob: Problem):
    n_all = len(prob.all_genomes())
    b = _budget(prob, 0.6)
    cfg = SearchConfig(mode="direct", pop_size=40, generations=40, hv_ref_acc=0.5)
    r = run_search(prob.space, prob.accuracy_fn, prob, [b], seed=0, config=cfg)
    exact = prob.exact_hv(b, 0.5)
    assert r.evaluations_real < 0.15 * n_all
    assert r.hypervolume >= 0.98 * exact
    assert r.hypervolume <= exact + 1e-9
    # random search with the same number of evaluations does clearly worse
    X = random_genomes(prob.gs, 3 * r.evaluations_real, np.random.default_rng(0))
    X = np.unique(X, axis=0)[: r.evaluations_real]
    hv_rand = pm.hypervolume(np.column_stack([-prob.acc_genomes(X), prob.predict_genomes(X)]), np.array([-0.5, b]))
    assert hv_rand < r.hypervolume


def test_every_subnet_scored_once_and_counts_are_honest(prob: Problem):
    p = Problem(prob.space)
    r = run_search(p.space, p.accuracy_fn, p, [_budget(p, 0.5)], seed=1, config=SearchConfig(mode="direct", pop_size=20, generations=15))
    assert len(p.scored) == len(set(p.scored)) == r.evaluations_real == len(r.evaluated)
    assert r.evaluations_predicted == 0


def test_seeded_runs_reproduce_and_seeds_differ(prob: Problem):
    cfg = SearchConfig(mode="direct", pop_size=16, generations=8)
    b = _budget(prob, 0.5)
    a1 = run_search(prob.space, prob.accuracy_fn, prob, [b], seed=3, config=cfg)
    a2 = run_search(prob.space, prob.accuracy_fn, prob, [b], seed=3, config=cfg)
    a3 = run_search(prob.space, prob.accuracy_fn, prob, [b], seed=4, config=cfg)
    assert [e.genome for e in a1.evaluated] == [e.genome for e in a2.evaluated]
    assert a1.front == a2.front and a1.hypervolume == a2.hypervolume
    assert [e.genome for e in a1.evaluated] != [e.genome for e in a3.evaluated]


def test_budget_is_a_constraint_and_each_budget_gets_its_best(prob: Problem):
    budgets = [_budget(prob, 0.5), _budget(prob, 0.2), _budget(prob, 0.8)]
    r = run_search(prob.space, prob.accuracy_fn, prob, budgets, seed=0, config=SearchConfig(mode="direct", pop_size=24, generations=12))
    assert r.budgets_ms == budgets and [b.budget_ms for b in r.best] == budgets
    assert r.front and all(e.predicted_latency_ms <= max(budgets) for e in r.front)
    lat = np.array([e.latency_ms for e in r.evaluated])
    acc = np.array([e.acc for e in r.evaluated])
    for b in r.best:
        assert b.predicted_latency_ms <= b.budget_ms
        assert b.predicted_acc == pytest.approx(acc[lat <= b.budget_ms].max())
        # best.json content is a valid subnet of the space, and priced as reported
        sub = prob.space.validate_subnet(b.subnet.model_dump())
        assert prob.predict_genomes(prob.gs.encode(sub)[None])[0] == pytest.approx(b.predicted_latency_ms)
        assert b.macs == macs(prob.space, sub)
    # the front is non-dominated and sorted by latency
    F = np.array([[-e.predicted_acc, e.predicted_latency_ms] for e in r.front])
    assert len(pm.non_dominated(F)) == len(F)
    assert (np.diff(F[:, 1]) >= 0).all() and (np.diff(F[:, 0]) <= 0).all()
    # the search stayed mostly inside the constraint: feasibility drives NSGA-II's selection
    assert (lat <= max(budgets)).mean() > 0.6


def test_infeasible_budget_names_the_minimum(prob: Problem):
    m = prob.min_latency_ms()
    with pytest.raises(UserError, match=rf"below the minimum predicted latency {m:.4g} ms"):
        run_search(prob.space, prob.accuracy_fn, prob, [0.5 * m, 2 * m], config=SearchConfig(mode="direct"))
    # exactly the minimum is feasible: the answer is the fastest subnet
    r = run_search(prob.space, prob.accuracy_fn, prob, [m], seed=0, config=SearchConfig(mode="direct", pop_size=8, generations=2))
    assert r.best[0].predicted_latency_ms == pytest.approx(m)


def test_bare_latency_function_is_accepted(prob: Problem):
    """Any vectorised latency_fn(X) works; its minimum is found by coordinate descent (exact when additive)."""
    r = run_search(prob.space, prob.accuracy_fn, lambda X: prob.predict_genomes(X), [_budget(prob, 0.4)],
                   config=SearchConfig(mode="direct", pop_size=8, generations=2))
    assert r.min_latency_ms == pytest.approx(prob.min_latency_ms())


def test_extra_objective_macs(prob: Problem):
    r = run_search(prob.space, prob.accuracy_fn, prob, [_budget(prob, 0.7)], seed=0,
                   config=SearchConfig(mode="direct", pop_size=24, generations=10), extra_objectives=("macs",))
    assert r.objectives == ["accuracy", "latency_ms", "macs"]
    assert all(e.objectives["macs"] == e.macs for e in r.front)
    F = np.array([[-e.predicted_acc, e.predicted_latency_ms, e.macs] for e in r.front])
    assert len(pm.non_dominated(F)) == len(F)
    # a 3-objective front holds at least the 2-objective one
    F2 = np.array([[-e.acc, e.latency_ms] for e in r.evaluated if e.latency_ms <= r.budgets_ms[0]])
    assert len(r.front) >= len(pm.non_dominated(F2))
    with pytest.raises(UserError, match="not known"):
        run_search(prob.space, prob.accuracy_fn, prob, [10.0], extra_objectives=("flops",))


def test_surrogate_loop_scores_few_subnets_for_real_and_reports_predictor(prob: Problem):
    p = Problem(prob.space)
    b = _budget(p, 0.6)
    cfg = SearchConfig(mode="surrogate", init_samples=30, iterations=3, candidates_per_iteration=8, pop_size=40,
                       generations=30, predictors=["ridge", "gp"], cv_folds=3, hv_ref_acc=0.5)
    r = run_search(p.space, p.accuracy_fn, p, [b], seed=0, config=cfg)
    assert r.evaluations_real <= 30 + 3 * 8 + 1
    assert r.evaluations_real == len(set(p.scored)) == len(p.scored)
    assert r.evaluations_predicted >= 3 * 40 * 10
    assert r.predictor is not None and r.predictor.name in ("ridge", "gp")
    assert r.predictor.kendall_tau > 0.5 and r.predictor.rmse < 0.05
    assert len(r.iterations) >= 1 and all(it.new_candidates > 0 for it in r.iterations[:1])
    # surrogate-guided candidates raise the hypervolume above the initial random set's
    assert r.hypervolume >= 0.95 * p.exact_hv(b, 0.5)
    assert r.iterations[-1].hypervolume >= r.iterations[0].hypervolume
    assert any("Kendall tau" in line for line in r.log)


def test_predictor_selection_beats_random(prob: Problem):
    rng = np.random.default_rng(0)
    X = np.unique(random_genomes(prob.gs, 400, rng), axis=0)
    y = prob.acc_genomes(X)
    tr, te = X[:150], X[150:]
    fitted, rep = select_and_fit(tr, prob.acc_genomes(tr), prob.gs.features, seed=0, candidates=["ridge", "gp", "gbt"], folds=3)
    assert set(rep.candidates) == {"ridge", "gp", "gbt"}
    assert rep.kendall_tau == max(rep.candidates.values())
    tau, rmse = evaluate_predictor(fitted, te, prob.acc_genomes(te))
    assert tau > 0.7 and rmse < 0.03
    # a model that ignores the inputs ranks no better than chance
    shuffled = rng.permutation(prob.acc_genomes(te))
    from scipy.stats import kendalltau

    assert abs(kendalltau(shuffled, prob.acc_genomes(te)).statistic) < 0.2 < tau
    assert len(set(genome_keys(X))) == len(y)
