"""pareto.png's data: the whole front the search found, members above the budget split off (greyed),
checked on the points handed to matplotlib, not on pixels."""

from __future__ import annotations

import pytest

from hwnas import load_space
from hwnas.search.models import BudgetBest, EvaluatedPoint, FrontEntry, SearchResult
from hwnas.search.report import front_points, plot_front


def _result(front: list[tuple[float, float]], evaluated: list[tuple[float, float]], budgets: list[float]) -> SearchResult:
    sub = load_space("mbv3-tiny").smallest()
    entries = [FrontEntry(subnet=sub, predicted_acc=a, predicted_latency_ms=l, macs=1) for l, a in front]
    best = [BudgetBest(subnet=sub, predicted_acc=max(a for l, a in front if l <= b), macs=1, budget_ms=b,
                       predicted_latency_ms=max(l for l, a in front if l <= b)) for b in budgets]
    return SearchResult(space="mbv3-tiny", budgets_ms=budgets, objectives=["acc", "latency"], front=entries, best=best,
                        evaluated=[EvaluatedPoint(genome=[0], acc=a, latency_ms=l) for l, a in evaluated],
                        hypervolume=0.0, hv_reference=(0.0, max(budgets)), evaluations_real=len(evaluated),
                        evaluations_predicted=0, min_latency_ms=front[0][0], seed=0, seconds=0.0)


FRONT = [(1.0, 0.50), (1.4, 0.60), (1.9, 0.70), (2.6, 0.78)]  # the search's front up to its largest budget, 3.0
EVALUATED = FRONT + [(1.2, 0.40), (2.0, 0.55), (3.5, 0.82), (3.6, 0.75), (4.0, 0.90)]  # real scores beyond 3.0 too


def test_front_above_the_budget_is_split_off_for_greying():
    d = front_points(_result(FRONT, EVALUATED, [2.0, 3.0]), budget_ms=2.0)
    assert d["front"] == [(1.0, 50.0), (1.4, 60.0), (1.9, 70.0)]
    # the search's own member above 2.0, then the non-dominated real scores beyond its largest budget (3.6 is dominated)
    assert d["front_over"] == [(2.6, 78.0), (3.5, 82.0), (4.0, 90.0)]
    assert all(l > 2.0 for l, _ in d["front_over"]) and all(l <= 2.0 for l, _ in d["front"])
    assert len(d["evaluated"]) == len(EVALUATED)


def test_default_split_is_the_largest_budget():
    d = front_points(_result(FRONT, EVALUATED, [2.0, 3.0]))
    assert d["front"] == [(l, pytest.approx(100 * a)) for l, a in FRONT]
    assert [l for l, _ in d["front_over"]] == [3.5, 4.0]


def test_plot_front_passes_the_greyed_points_to_matplotlib(tmp_path, monkeypatch):
    import matplotlib.axes

    calls: list[tuple[list[float], str]] = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kw):
        if len(args) >= 2 and isinstance(args[0], tuple):
            calls.append((list(args[0]), kw.get("color", "")))
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    path = plot_front(_result(FRONT, EVALUATED, [2.0, 3.0]), tmp_path / "p.png", "t", budget_ms=2.0)
    assert path.read_bytes()[:4] == b"\x89PNG"
    grey = [xs for xs, c in calls if c == "#9e9e9e"]
    assert grey == [[2.6, 3.5, 4.0]]
    assert [xs for xs, c in calls if c == "#1f4e9c"] == [[1.0, 1.4, 1.9]]
