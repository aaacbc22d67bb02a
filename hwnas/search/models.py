"""Pydantic models of the search's configuration and results (what the API returns and files hold)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hwnas.search.operators import CrossoverKind
from hwnas.search.predictors import ALL_PREDICTORS, PredictorName, PredictorReport
from hwnas.space import Subnet


class SearchConfig(BaseModel):
    """Knobs of one search. Defaults are sized for `mbv3-tiny`/digits in about a minute on 2 cores.

    mode `surrogate`: score `init_samples` subnets for real, then `iterations` rounds of
    (fit predictor -> NSGA-II on predictions -> score up to `candidates_per_iteration`
    new front members for real). mode `direct`: NSGA-II on the accuracy function itself
    (right when it is cheap, e.g. an accuracy predictor you already trust).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["surrogate", "direct"] = "surrogate"
    # NSGA-II (direct mode: on real evaluations; surrogate mode: on the predictor)
    pop_size: int = Field(default=100, ge=4)
    generations: int = Field(default=60, ge=1)
    time_limit_s: float | None = Field(default=None, gt=0)
    crossover: CrossoverKind = "uniform"
    crossover_prob: float = Field(default=0.9, ge=0.0, le=1.0)
    mutation_prob: float | None = Field(default=None, gt=0.0, le=1.0)
    # surrogate loop
    init_samples: int = Field(default=60, ge=4)
    iterations: int = Field(default=4, ge=0)
    candidates_per_iteration: int = Field(default=16, ge=1)
    predictors: list[PredictorName] = Field(default_factory=lambda: list(ALL_PREDICTORS), min_length=1)
    cv_folds: int = Field(default=5, ge=2)
    # hypervolume reference point: (accuracy hv_ref_acc, latency = largest budget)
    hv_ref_acc: float = Field(default=0.0, ge=0.0, le=1.0)


class FrontEntry(BaseModel):
    """One subnet with its scores; `predicted_acc` is the supernet's (inherited-weights) accuracy, 0..1."""

    model_config = ConfigDict(extra="forbid")

    subnet: Subnet
    predicted_acc: float
    predicted_latency_ms: float
    macs: int
    objectives: dict[str, float] = Field(default_factory=dict)  # extra objectives, if any

    def pareto_record(self) -> dict:
        """The SPEC's pareto.json element."""
        d = {
            "subnet": self.subnet.model_dump(),
            "predicted_acc": self.predicted_acc,
            "predicted_latency_ms": self.predicted_latency_ms,
            "macs": self.macs,
        }
        if self.objectives:
            d["objectives"] = dict(self.objectives)
        return d


class BudgetBest(FrontEntry):
    budget_ms: float


class EvaluatedPoint(BaseModel):
    """Every subnet scored for real, in the order it was scored (for plots and convergence curves)."""

    model_config = ConfigDict(extra="forbid")

    genome: list[int]
    acc: float
    latency_ms: float


class IterationReport(BaseModel):
    """One round of the surrogate loop: the predictor used and how it ranked the new candidates."""

    model_config = ConfigDict(extra="forbid")

    iteration: int
    predictor: PredictorReport
    new_candidates: int
    candidates_kendall_tau: float | None = None  # predictor vs real scores on the (unseen) candidates
    candidates_rmse: float | None = None
    hypervolume: float


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: str
    budgets_ms: list[float]
    objectives: list[str]
    front: list[FrontEntry]  # non-dominated, within the largest budget, sorted by latency
    best: list[BudgetBest]  # one per budget, in the order the budgets were given
    evaluated: list[EvaluatedPoint]
    hypervolume: float
    hv_reference: tuple[float, float]  # (accuracy 0..1, latency ms)
    evaluations_real: int
    evaluations_predicted: int
    min_latency_ms: float
    predictor: PredictorReport | None = None
    iterations: list[IterationReport] = Field(default_factory=list)
    seed: int
    seconds: float
    log: list[str] = Field(default_factory=list)
    outputs: dict[str, str] = Field(default_factory=dict)  # files written by search_supernet, by key
    val_images: int | None = None  # validation images each subnet was scored on (search_supernet)
    val_images_total: int | None = None  # ... out of this many in the split (fewer: a class-stratified subset)
    calib_images: int | None = None  # training images of each BN recalibration
    processes: int = 1  # torchrun processes that shared the scoring

    @property
    def best_subnet(self):  # noqa: ANN201 - Subnet
        """The best subnet for the first budget given (what best.json holds)."""
        return self.best[0].subnet

    @property
    def evaluations(self) -> int:
        return self.evaluations_real + self.evaluations_predicted
