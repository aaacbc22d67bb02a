"""Multi-objective evolutionary search (NSGA-II) for the accuracy-latency Pareto front under a budget."""

from hwnas.search.engine import Objective, run_search
from hwnas.search.models import BudgetBest, EvaluatedPoint, FrontEntry, IterationReport, SearchConfig, SearchResult
from hwnas.search.predictors import PredictorReport, select_and_fit


def search_supernet(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - re-exported lazily (imports torch)
    """See `hwnas.search.pipeline.search_supernet`."""
    from hwnas.search.pipeline import search_supernet as _impl

    return _impl(*args, **kwargs)


__all__ = [
    "BudgetBest", "EvaluatedPoint", "FrontEntry", "IterationReport", "Objective", "PredictorReport", "SearchConfig",
    "SearchResult", "run_search", "search_supernet", "select_and_fit",
]
