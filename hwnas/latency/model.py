"""The one interface search, export and generate use to ask a latency table about subnets.

The table's calibration form decides the implementation (`latency_model`), so a new kind of
predictor is one new class registered here, not edits in every stage that predicts.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from hwnas.latency.predictor import LatencyPredictor
from hwnas.latency.table import LatencyTable
from hwnas.space import Space, Subnet


@runtime_checkable
class LatencyModel(Protocol):
    """Predicted whole-network latency (ms) on the table's target."""

    @property
    def resolutions(self) -> list[int]:
        """The input resolutions it covers."""
        ...

    def predict(self, subnet: Subnet) -> float:
        """One subnet."""
        ...

    def predict_genomes(self, X: np.ndarray) -> np.ndarray:
        """Many subnets at once, as genome rows (`Encoding(space)`): the search's hot path."""
        ...

    def min_latency_ms(self) -> float:
        """The fastest subnet's predicted latency (for checking a budget before any search)."""
        ...


MODELS: dict[str, Callable[[LatencyTable, Space], LatencyModel]] = {"linear-v1": LatencyPredictor, "linear-res-v1": LatencyPredictor}
"""Calibration form (as stored in the table) -> the model that reads it."""


def latency_model(table: LatencyTable, space: Space) -> LatencyModel:
    """The latency model for `table` on `space` (UserError if the space does not match the table)."""
    return MODELS[table.calibration.form](table, space)
