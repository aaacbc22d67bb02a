"""The search's view of the genome: bounds, allowed values and vectorised helpers.

`hwnas.space.Encoding` defines the layout; this adds what the operators need in
bulk (canonical form and active masks for a whole population at once) and the
restriction of the resolution gene to the resolutions a latency table covers,
so no operator can ever propose a subnet the table cannot price.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwnas.errors import UserError
from hwnas.space import Encoding, Space, Subnet


@dataclass(frozen=True)
class GeneSpace:
    """Encoding + per-gene bounds + the allowed resolution indices (sorted)."""

    encoding: Encoding
    resolution_indices: tuple[int, ...]
    upper: np.ndarray = field(init=False, repr=False, compare=False)
    _depth_choices: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)
    _block_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.resolution_indices:
            raise UserError("search: no resolution of the space is covered by the latency table")
        sp = self.encoding.space
        object.__setattr__(self, "upper", self.encoding.upper())
        object.__setattr__(self, "_depth_choices", tuple(np.asarray(s.depths, dtype=np.int64) for s in sp.stages))
        object.__setattr__(self, "_block_starts", tuple(self.encoding.block_slice(i).start for i in range(len(sp.stages))))

    @classmethod
    def for_space(cls, space: Space, resolutions: list[int] | tuple[int, ...] | None = None) -> "GeneSpace":
        """Restrict the resolution gene to `resolutions` (those a latency table covers), if given."""
        if resolutions is None:
            idx = tuple(range(len(space.resolutions)))
        else:
            allowed = set(int(r) for r in resolutions)
            idx = tuple(i for i, r in enumerate(space.resolutions) if r in allowed)
            if not idx:
                raise UserError(
                    f"search: the latency table covers resolutions {sorted(allowed)}, none of which is in "
                    f"space '{space.name}' ({space.resolutions})"
                )
        return cls(Encoding(space), idx)

    # ---- basic facts ----
    @property
    def space(self) -> Space:
        return self.encoding.space

    @property
    def length(self) -> int:
        return self.encoding.length

    @property
    def n_stages(self) -> int:
        return len(self.space.stages)

    def block_start(self, stage: int) -> int:
        return self._block_starts[stage]

    # ---- vectorised masks / canonical form ----
    def active_mask(self, X: np.ndarray) -> np.ndarray:
        """[n, L] boolean: which genes affect the architecture (same as Encoding.active_mask, per row)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.int64))
        mask = np.ones(X.shape, dtype=bool)
        for i, s in enumerate(self.space.stages):
            depth = self._depth_choices[i][np.clip(X[:, 1 + i], 0, len(s.depths) - 1)]
            start = self._block_starts[i]
            slot = np.arange(2 * s.max_depth) // 2  # block index of every gene in the slice
            mask[:, start : start + 2 * s.max_depth] = slot[None, :] < depth[:, None]
        return mask

    def snap_resolution(self, X: np.ndarray) -> np.ndarray:
        """Move resolution genes to the nearest allowed index."""
        X = np.array(X, dtype=np.int64, copy=True)
        allowed = np.asarray(self.resolution_indices)
        d = np.abs(X[:, :1] - allowed[None, :])
        X[:, 0] = allowed[np.argmin(d, axis=1)]
        return X

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """Clip to bounds, snap resolution, zero inactive genes: one genome per architecture."""
        X = np.clip(np.atleast_2d(np.asarray(X, dtype=np.int64)), 0, self.upper)
        X = self.snap_resolution(X)
        return np.where(self.active_mask(X), X, 0)

    def is_valid(self, X: np.ndarray) -> np.ndarray:
        """Row-wise: inside bounds, allowed resolution, and canonical."""
        X = np.atleast_2d(np.asarray(X, dtype=np.int64))
        inside = ((X >= 0) & (X <= self.upper)).all(axis=1)
        res_ok = np.isin(X[:, 0], self.resolution_indices)
        canon = (np.where(self.active_mask(np.clip(X, 0, self.upper)), X, 0) == X).all(axis=1)
        return inside & res_ok & canon

    # ---- conversions ----
    def decode(self, x: np.ndarray) -> Subnet:
        return self.encoding.decode(np.asarray(x, dtype=np.int64))

    def encode(self, subnet: Subnet) -> np.ndarray:
        return self.encoding.encode(subnet)

    def smallest(self) -> np.ndarray:
        """All-minimum genome at the smallest allowed resolution."""
        x = np.zeros(self.length, dtype=np.int64)
        x[0] = self.resolution_indices[0]
        return self.canonical(x)[0]

    def largest(self) -> np.ndarray:
        x = self.upper.copy()
        x[0] = self.resolution_indices[-1]
        return self.canonical(x)[0]

    def features(self, X: np.ndarray) -> np.ndarray:
        """Predictor features: one-hot of active genes (as OFA's MLP) plus scaled ordinal values.

        The one-hot part equals `Encoding.onehot` row by row; the ordinal part gives
        smooth models (ridge, GP) the order of the choices (kernel 3 < 5 < 7).
        """
        X = self.canonical(X)
        mask = self.active_mask(X)
        widths = self.upper + 1
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        onehot = np.zeros((X.shape[0], int(widths.sum())), dtype=np.float32)
        rows, genes = np.nonzero(mask)
        onehot[rows, offsets[genes] + X[rows, genes]] = 1.0
        scale = np.maximum(self.upper, 1).astype(np.float32)
        ordinal = np.where(mask, (X + 1) / (scale + 1), 0.0).astype(np.float32)
        return np.concatenate([onehot, ordinal], axis=1)


def genome_keys(X: np.ndarray) -> list[bytes]:
    """Hashable identity of (canonical) genomes."""
    X = np.ascontiguousarray(np.atleast_2d(np.asarray(X, dtype=np.int64)))
    return [row.tobytes() for row in X]
