"""Where a training run stands (phase, epoch, next batch) and the random state that goes with it.

Everything a step does is a function of its position and the saved state: subnets and augmentation come
from generators seeded by the position, and the global RNGs are saved as plain data. So a run killed at any
point and resumed from its last checkpoint ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hwnas.train.config import TrainConfig


@dataclass
class Position:
    """Where the schedule stands: the next batch to run."""

    phase_index: int = 0
    epoch: int = 0  # within the phase
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"phase_index": self.phase_index, "epoch": self.epoch, "batch": self.batch}


def phase_iters(cfg: TrainConfig, index: int, iters_per_epoch: int) -> int:
    """Iterations phase `index` runs: its (possibly fractional) epochs in whole iterations."""
    return round(cfg.phases[index].epochs * iters_per_epoch)


def phase_epoch_count(cfg: TrainConfig, index: int, iters_per_epoch: int) -> int:
    """Epochs (passes over the data, the last one possibly partial) phase `index` starts."""
    return -(-phase_iters(cfg, index, iters_per_epoch) // iters_per_epoch)


def epochs_done(cfg: TrainConfig, pos: Position, iters_per_epoch: int) -> float:
    """Epochs trained so far, all phases together (fractional when a phase ends mid-epoch)."""
    if pos.phase_index >= len(cfg.phases):
        return cfg.total_epochs
    done = sum(p.epochs for p in cfg.phases[: pos.phase_index])
    return round(done + (pos.epoch * iters_per_epoch + pos.batch) / iters_per_epoch, 6)


def skip_empty_phases(cfg: TrainConfig, pos: Position, iters_per_epoch: int) -> Position:
    while pos.phase_index < len(cfg.phases) and pos.epoch >= phase_epoch_count(cfg, pos.phase_index, iters_per_epoch):
        pos = Position(pos.phase_index + 1, 0, 0)
    return pos


def rng_state() -> dict[str, Any]:
    kind, keys, npos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(npos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def aug_generator(seed: int, pos: Position, rank: int) -> torch.Generator:
    seq = np.random.SeedSequence([seed, pos.phase_index, pos.epoch, pos.batch, rank, 1])
    return torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))
