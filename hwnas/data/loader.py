"""Batching over in-memory uint8 tensors, with deterministic shuffling and rank sharding.

The data already sits in memory as one tensor, so a torch DataLoader with worker
processes would only add start-up cost and pickling; indexing the tensor directly is
both faster and exactly reproducible (resumable mid-epoch via `iter_from`).
"""

from __future__ import annotations

from typing import Iterator

import torch

from hwnas.data.sources import Dataset


class BatchIterator:
    """Yields (x_uint8, y) batches on `device`; same seed + epoch => same batches on every rank."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.epoch = 0
        # Pinned staging only helps (and only works) for host -> CUDA copies.
        self._pin = self.device.type == "cuda" and torch.cuda.is_available() and x.device.type == "cpu"

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation (seeded with seed + epoch) the next iteration uses."""
        self.epoch = int(epoch)

    @property
    def samples_per_rank(self) -> int:
        """Indices each rank sees per epoch (the padded total divided by world_size)."""
        n = self.x.shape[0]
        return -(-n // self.world_size)

    def __len__(self) -> int:
        per_rank = self.samples_per_rank
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in iteration order (CPU int64).

        Every rank builds the same permutation, wraps it round to a multiple of
        world_size and takes every world_size-th entry, so ranks get disjoint shards
        (up to the wrapped padding) of identical length.
        """
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(n, generator=g)
        else:
            perm = torch.arange(n)
        total = self.samples_per_rank * self.world_size
        if total > n and n > 0:
            perm = perm.repeat(-(-total // n))[:total]
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Like iter(self) but skips the first `start_batch` batches (resuming mid-epoch)."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        idx = self.epoch_indices()
        bs = self.batch_size
        for b in range(start_batch, len(self)):
            yield self._gather(idx[b * bs : (b + 1) * bs])

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pin:
            # Gather straight into page-locked memory (recycled by torch's caching host
            # allocator) so the copy to the GPU can overlap with compute.
            xb = torch.empty((len(idx), *self.x.shape[1:]), dtype=self.x.dtype, pin_memory=True)
            yb = torch.empty((len(idx),), dtype=self.y.dtype, pin_memory=True)
            torch.index_select(self.x, 0, idx, out=xb)
            torch.index_select(self.y, 0, idx, out=yb)
            return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        xb = self.x.index_select(0, idx.to(self.x.device))
        yb = self.y.index_select(0, idx.to(self.y.device))
        return xb.to(self.device), yb.to(self.device)


def calibration_subset(ds: Dataset, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """A fixed, seed-determined set of training images (uint8) for BatchNorm re-calibration.

    Fixed so that every sub-network is calibrated on the same images and accuracy
    differences reflect the architecture, not the sample. All images if fewer than n.
    """
    total = ds.train_x.shape[0]
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n >= total:
        return ds.train_x
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(total, generator=g)[:n].sort().values
    return ds.train_x.index_select(0, idx)
