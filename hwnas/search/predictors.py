"""Accuracy predictors for the surrogate-assisted search, chosen by cross-validated Kendall tau.

OFA fits one MLP on one-hot encodings of 16K scored subnets; NSGANetV2 fits several
model families on a few hundred and keeps the one that ranks best under
cross-validation. We do the latter (a search only needs the *ranking* right), with
candidates from scikit-learn: ridge, an RBF Gaussian process, gradient-boosted trees
and an MLP. The held-out (out-of-fold) Kendall tau and RMSE of the chosen model are
reported so a user can judge how far to trust the predicted part of the search.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.stats import kendalltau

PredictorName = Literal["ridge", "gp", "gbt", "mlp"]
ALL_PREDICTORS: tuple[PredictorName, ...] = ("ridge", "gp", "gbt", "mlp")


def _make(name: PredictorName, n_features: int, seed: int):  # noqa: ANN202 - sklearn estimator
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import Ridge
    from sklearn.neural_network import MLPRegressor

    if name == "ridge":
        return Ridge(alpha=1.0)
    if name == "gp":
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(length_scale=np.sqrt(n_features), length_scale_bounds=(1e-1, 1e3)) + WhiteKernel(
            0.1, (1e-5, 1e1)
        )
        return GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed)
    if name == "gbt":
        return GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=seed)
    if name == "mlp":
        return MLPRegressor(hidden_layer_sizes=(32, 32), solver="lbfgs", alpha=1e-2, max_iter=300, random_state=seed)
    raise ValueError(f"unknown predictor {name!r}; valid: {', '.join(ALL_PREDICTORS)}")


@dataclass
class FittedPredictor:
    """A fitted model plus the target standardisation it was trained with."""

    name: str
    model: object
    y_mean: float
    y_std: float
    featurize: Callable[[np.ndarray], np.ndarray]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted accuracy (0..1) of genomes X."""
        from threadpoolctl import threadpool_limits

        if len(X) == 0:
            return np.zeros(0)
        with threadpool_limits(1):
            z = np.asarray(self.model.predict(self.featurize(X)), dtype=float)  # type: ignore[attr-defined]
        return z * self.y_std + self.y_mean


class PredictorReport(BaseModel):
    """How well the chosen predictor ranks subnets it was not trained on."""

    model_config = ConfigDict(extra="forbid")

    name: str
    n_train: int
    kendall_tau: float  # out-of-fold, chosen model
    rmse: float  # out-of-fold, accuracy as a fraction (0.01 = 1 %-point)
    candidates: dict[str, float]  # out-of-fold Kendall tau of every candidate
    folds: int


def _fit(name: PredictorName, F: np.ndarray, z: np.ndarray, seed: int):  # noqa: ANN202
    from sklearn.exceptions import ConvergenceWarning

    from threadpoolctl import threadpool_limits

    model = _make(name, F.shape[1], seed)
    # one BLAS thread: these matrices are tiny, and threads only contend on a shared 2-core machine
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        model.fit(F, z)
    return model


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    t = kendalltau(a, b).statistic
    return float(t) if np.isfinite(t) else 0.0


def select_and_fit(
    X: np.ndarray,
    y: np.ndarray,
    featurize: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int = 0,
    candidates: tuple[PredictorName, ...] | list[PredictorName] = ALL_PREDICTORS,
    folds: int = 5,
) -> tuple[FittedPredictor, PredictorReport]:
    """K-fold out-of-fold predictions for every candidate; keep the best Kendall tau; refit it on all data."""
    from sklearn.model_selection import KFold

    X = np.asarray(X)
    y = np.asarray(y, dtype=float)
    if len(X) < 4:
        raise ValueError(f"need at least 4 scored subnets to fit a predictor, got {len(X)}")
    F = featurize(X)
    y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
    z = (y - y_mean) / y_std
    k = int(max(2, min(folds, len(X) // 4)))
    splits = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(F))
    scores: dict[str, float] = {}
    oof: dict[str, np.ndarray] = {}
    for name in candidates:
        pred = np.zeros(len(y))
        for tr, te in splits:
            pred[te] = _fit(name, F[tr], z[tr], seed).predict(F[te]) * y_std + y_mean
        oof[name] = pred
        scores[name] = _tau(y, pred)
    best = max(candidates, key=lambda n: (scores[n], -float(np.sqrt(np.mean((oof[n] - y) ** 2)))))
    rmse = float(np.sqrt(np.mean((oof[best] - y) ** 2)))
    fitted = FittedPredictor(best, _fit(best, F, z, seed), y_mean, y_std, featurize)
    report = PredictorReport(name=best, n_train=len(y), kendall_tau=scores[best], rmse=rmse, candidates=scores, folds=k)
    return fitted, report


def evaluate_predictor(pred: FittedPredictor, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Kendall tau, RMSE) of a fitted predictor on a held-out set."""
    p = pred.predict(X)
    return _tau(np.asarray(y, dtype=float), p), float(np.sqrt(np.mean((p - np.asarray(y, dtype=float)) ** 2)))
