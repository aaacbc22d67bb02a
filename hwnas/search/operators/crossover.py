"""Crossover that respects the space: children inherit only genes that were active in a parent.

A plain uniform crossover on the integer vector would copy a parent's *inactive*
kernel/expand genes (always 0 in canonical form) into a child that is deeper than
that parent, silently biasing deep children toward the smallest kernel and expand.
Here each parent's inactive genes are first filled from the other parent, so every
active gene of a child comes from a parent in which it was active.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hwnas.search.operators.genes import GeneSpace

CrossoverKind = Literal["uniform", "stage"]


def _filled(gs: GeneSpace, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ma, mb = gs.active_mask(A), gs.active_mask(B)
    return np.where(ma, A, B), np.where(mb, B, A)


def crossover(
    gs: GeneSpace, A: np.ndarray, B: np.ndarray, rng: np.random.Generator, kind: CrossoverKind = "uniform"
) -> tuple[np.ndarray, np.ndarray]:
    """Two children per parent pair (rows of A and B); canonical genomes.

    `uniform`: every gene (resolution, depths, per-block kernel/expand) independently
    from either parent. `stage`: the resolution and each whole stage (depth plus its
    blocks) from either parent, which keeps co-adapted blocks together.
    """
    A = np.atleast_2d(np.asarray(A, dtype=np.int64))
    B = np.atleast_2d(np.asarray(B, dtype=np.int64))
    Af, Bf = _filled(gs, A, B)
    n, L = A.shape
    if kind == "uniform":
        swap = rng.random((n, L)) < 0.5
    elif kind == "stage":
        swap = np.zeros((n, L), dtype=bool)
        swap[:, 0] = rng.random(n) < 0.5
        for i in range(gs.n_stages):
            s = rng.random(n) < 0.5
            swap[:, 1 + i] = s
            sl = gs.encoding.block_slice(i)
            swap[:, sl] = s[:, None]
    else:  # pragma: no cover - guarded by the config model
        raise ValueError(f"unknown crossover kind {kind!r}")
    C1 = np.where(swap, Bf, Af)
    C2 = np.where(swap, Af, Bf)
    return gs.canonical(C1), gs.canonical(C2)
