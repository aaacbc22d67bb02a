"""Per-gene mutation over active genes only, to a different allowed value.

Mutating an inactive gene would change nothing (the canonical form zeroes it), so
only active genes are candidates; each mutates with probability `prob`
(default 1 / number of active genes: one change per individual on average, the
usual 1/n rule). When a depth grows, the newly active blocks get uniformly random
kernel/expand values instead of the canonical zeros.
"""

from __future__ import annotations

import numpy as np

from hwnas.search.operators.genes import GeneSpace


def mutate(gs: GeneSpace, X: np.ndarray, rng: np.random.Generator, prob: float | None = None) -> np.ndarray:
    X = gs.canonical(X)
    n, L = X.shape
    active = gs.active_mask(X)
    if prob is None:
        p = 1.0 / np.maximum(active.sum(axis=1, keepdims=True), 1)
    else:
        p = np.full((n, 1), float(prob))
    hit = (rng.random((n, L)) < p) & active & (gs.upper[None, :] > 0)
    # a different value: shift by 1..upper modulo (upper+1) (uniform over the other choices)
    shift = rng.integers(1, np.maximum(gs.upper, 1) + 1, size=(n, L))
    Y = np.where(hit, (X + shift) % (gs.upper + 1), X)
    # resolution gene: a different *allowed* resolution
    allowed = np.asarray(gs.resolution_indices)
    if len(allowed) > 1:
        rows = np.nonzero(hit[:, 0])[0]
        for r in rows:
            others = allowed[allowed != X[r, 0]]
            Y[r, 0] = rng.choice(others)
    else:
        Y[:, 0] = allowed[0]
    # blocks that became active through a deeper stage: random kernel/expand
    newly = gs.active_mask(Y) & ~active
    if newly.any():
        fresh = rng.integers(0, gs.upper + 1, size=(n, L))
        Y = np.where(newly, fresh, Y)
    return gs.canonical(Y)
