"""Duplicate detection on canonical genomes: genomes that differ only in inactive genes are one subnet."""

from __future__ import annotations

import numpy as np

from hwnas.search.operators.genes import GeneSpace, genome_keys


def duplicate_mask(gs: GeneSpace, X: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """True for rows of X that repeat an earlier row of X or any row of `others`."""
    seen: set[bytes] = set(genome_keys(gs.canonical(others))) if others is not None and len(others) else set()
    out = np.zeros(len(X), dtype=bool)
    for i, k in enumerate(genome_keys(gs.canonical(X)) if len(X) else []):
        if k in seen:
            out[i] = True
        else:
            seen.add(k)
    return out
