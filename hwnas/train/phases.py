"""Which subnets each progressive-shrinking phase trains: a restricted copy of the space.

Sampling is a pure function of (seed, phase, epoch, step), so every data-parallel rank
draws the same subnets without communicating, and a resumed run draws what the
uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np

from hwnas.space.models import Space, Subnet
from hwnas.train.config import PHASES


def phase_space(space: Space, phase: str) -> Space:
    """The space's choice lists restricted to what `phase` trains (resolutions are never restricted).

    full: largest kernel, depth and expand only; kernel: every kernel; depth1 / depth2:
    every kernel and the top two / all depths; expand1 / expand2: everything, with the
    top two / all expand ratios.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
    level = PHASES.index(phase)
    stages = []
    for s in space.stages:
        kernels = s.kernels if level >= 1 else s.kernels[-1:]
        depths = s.depths if level >= 3 else s.depths[-2:] if level == 2 else s.depths[-1:]
        expands = s.expands if level >= 5 else s.expands[-2:] if level == 4 else s.expands[-1:]
        stages.append(s.model_copy(update=dict(kernels=kernels, depths=depths, expands=expands)))
    return space.model_copy(update=dict(stages=stages))


def step_rng(seed: int, phase: str, epoch: int, step: int) -> np.random.Generator:
    """An explicit generator for one training step (identical on every rank and after resume)."""
    return np.random.default_rng([seed, PHASES.index(phase), epoch, step])


def sample_step(space: Space, phase: str, seed: int, epoch: int, step: int, count: int) -> tuple[int, list[Subnet]]:
    """One step's resolution and `count` subnets (all at that resolution), valid for the full `space`."""
    rng = step_rng(seed, phase, epoch, step)
    restricted = phase_space(space, phase)
    resolution = int(rng.choice(space.resolutions))
    subs = []
    for _ in range(count):
        s = restricted.sample(rng=rng)
        d = s.model_dump()
        d["resolution"] = resolution
        subs.append(space.validate_subnet(d))
    return resolution, subs


def eval_subnets(space: Space, count: int, seed: int) -> list[tuple[str, Subnet]]:
    """The fixed set evaluated after every phase: the smallest subnet (every choice and the
    resolution at their minimum), the largest (all at maximum) and `count` random subnets
    drawn once from `seed`."""
    out = [("smallest", space.smallest()), ("largest", space.largest())]
    rng = np.random.default_rng([seed, 7919])
    for i in range(count):
        out.append((f"random{i}", space.sample(rng=rng)))
    return out
