"""Repair: map any integer vector to the valid canonical genome of the architecture it denotes."""

from __future__ import annotations

import numpy as np

from hwnas.search.operators.genes import GeneSpace


def repair(gs: GeneSpace, X: np.ndarray) -> np.ndarray:
    """Clip to bounds, snap the resolution to one the table covers, zero inactive genes."""
    return gs.canonical(np.rint(np.asarray(X, dtype=np.float64)).astype(np.int64))
