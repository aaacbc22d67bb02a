"""Fixed-length integer encoding of subnets (the genome the search evolves).

Layout: [resolution] + [depth per stage] + per stage, per block slot up to the
stage's max depth: [kernel, expand]. Each gene is an index into its choice list.
Genes of blocks beyond a stage's depth are inactive; the canonical encoding sets
them to 0 so that one architecture has exactly one genome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.space.models import Space, Subnet


@dataclass(frozen=True)
class Encoding:
    space: Space

    @property
    def length(self) -> int:
        return 1 + len(self.space.stages) + 2 * sum(self.space.max_blocks)

    def upper(self) -> np.ndarray:
        """Inclusive upper bound of every gene (lower bound is 0)."""
        up = [len(self.space.resolutions) - 1] + [len(s.depths) - 1 for s in self.space.stages]
        for s in self.space.stages:
            up += [len(s.kernels) - 1, len(s.expands) - 1] * s.max_depth
        return np.asarray(up, dtype=np.int64)

    def block_slice(self, stage: int) -> slice:
        start = 1 + len(self.space.stages) + 2 * sum(self.space.max_blocks[:stage])
        return slice(start, start + 2 * self.space.stages[stage].max_depth)

    def active_mask(self, x: np.ndarray) -> np.ndarray:
        """Boolean mask of genes that affect the architecture."""
        x = np.asarray(x, dtype=np.int64)
        mask = np.ones(self.length, dtype=bool)
        for i, s in enumerate(self.space.stages):
            d = s.depths[int(x[1 + i])]
            sl = self.block_slice(i)
            mask[sl.start + 2 * d : sl.stop] = False
        return mask

    def canonical(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=np.int64), 0, self.upper())
        return np.where(self.active_mask(x), x, 0)

    def encode(self, subnet: Subnet) -> np.ndarray:
        sp = self.space
        x = np.zeros(self.length, dtype=np.int64)
        x[0] = sp.resolutions.index(subnet.resolution)
        for i, s in enumerate(sp.stages):
            x[1 + i] = s.depths.index(subnet.depths[i])
            sl = self.block_slice(i)
            for j, (k, e) in enumerate(zip(subnet.kernels[i], subnet.expands[i])):
                x[sl.start + 2 * j] = s.kernels.index(k)
                x[sl.start + 2 * j + 1] = s.expands.index(e)
        return x

    def decode(self, x: np.ndarray) -> Subnet:
        sp = self.space
        x = np.asarray(x, dtype=np.int64)
        if x.shape != (self.length,):
            raise ValueError(f"genome must have length {self.length}, got shape {x.shape}")
        if (x < 0).any() or (x > self.upper()).any():
            raise ValueError("genome has a gene outside its choice range")
        depths, kernels, expands = [], [], []
        for i, s in enumerate(sp.stages):
            d = s.depths[int(x[1 + i])]
            sl = self.block_slice(i)
            depths.append(d)
            kernels.append([s.kernels[int(x[sl.start + 2 * j])] for j in range(d)])
            expands.append([s.expands[int(x[sl.start + 2 * j + 1])] for j in range(d)])
        return sp.validate_subnet(
            dict(resolution=sp.resolutions[int(x[0])], depths=depths, kernels=kernels, expands=expands)
        )

    def onehot(self, x: np.ndarray) -> np.ndarray:
        """One-hot features (inactive blocks all-zero) for accuracy predictors, as OFA's MLP uses."""
        x = self.canonical(x)
        mask = self.active_mask(x)
        up = self.upper()
        feats = []
        for g in range(self.length):
            v = np.zeros(int(up[g]) + 1, dtype=np.float32)
            if mask[g]:
                v[int(x[g])] = 1.0
            feats.append(v)
        return np.concatenate(feats)
