"""Initial populations: uniform per choice (as OFA samples), plus the extremes of the space."""

from __future__ import annotations

import numpy as np

from hwnas.search.operators.genes import GeneSpace, genome_keys


def random_genomes(gs: GeneSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` canonical genomes, every gene uniform over its choices (resolution over the allowed ones)."""
    X = rng.integers(0, gs.upper + 1, size=(n, gs.length), dtype=np.int64)
    X[:, 0] = rng.choice(np.asarray(gs.resolution_indices), size=n)
    return gs.canonical(X)


def initial_population(
    gs: GeneSpace,
    n: int,
    rng: np.random.Generator,
    *,
    seeds: np.ndarray | None = None,
    extremes: bool = True,
) -> np.ndarray:
    """Up to `n` distinct canonical genomes: `seeds` first, then smallest/largest, then random.

    The extremes anchor both ends of the accuracy-latency front from generation 0.
    Fewer than `n` rows only if the space itself has fewer architectures.
    """
    rows: list[np.ndarray] = []
    seen: set[bytes] = set()

    def add(X: np.ndarray) -> None:
        X = gs.canonical(X)
        for x, k in zip(X, genome_keys(X)):
            if len(rows) < n and k not in seen:
                seen.add(k)
                rows.append(x)

    if seeds is not None and len(seeds):
        add(np.asarray(seeds))
    if extremes:
        add(np.stack([gs.smallest(), gs.largest()]))
    for _ in range(50):
        if len(rows) >= n:
            break
        add(random_genomes(gs, 2 * (n - len(rows)) + 8, rng))
    return np.stack(rows) if rows else np.zeros((0, gs.length), dtype=np.int64)
