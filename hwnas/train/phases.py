"""Which subnets a phase trains: a restricted copy of the space and a seeded per-step draw.

Sampling is a pure function of (seed, phase index, epoch, step), so every data-parallel rank
draws the same subnets without communicating, and a resumed run draws what the
uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np

from hwnas.errors import UserError
from hwnas.space.models import Space, Subnet
from hwnas.train.config import PhaseConfig, TrainConfig


def _open(choices: list[int], count: int | None) -> list[int]:
    """The largest `count` choices (0 = all; None = the largest only)."""
    if count is None:
        return choices[-1:]
    return list(choices) if count == 0 else choices[-count:]


def phase_space(space: Space, phase: PhaseConfig) -> Space:
    """The space's choice lists restricted to what `phase` makes elastic (resolutions are never restricted)."""
    stages = []
    for s in space.stages:
        stages.append(s.model_copy(update=dict(
            kernels=_open(s.kernels, phase.elastic.get("kernel")),
            depths=_open(s.depths, phase.elastic.get("depth")),
            expands=_open(s.expands, phase.elastic.get("expand")),
        )))
    return space.model_copy(update=dict(stages=stages))


def check_phases(space: Space, cfg: TrainConfig) -> None:
    """What a config says of the space's stages holds for this space (raised before training, not at a step)."""
    for phase in cfg.phases:
        if phase.depth_weights:
            try:
                phase_space(space, phase).depth_probabilities(phase.depth_weights)
            except ValueError as e:
                raise UserError(f"phase {phase.name!r}: {e}") from None


def step_rng(seed: int, phase_index: int, epoch: int, step: int) -> np.random.Generator:
    """An explicit generator for one training step (identical on every rank and after resume)."""
    return np.random.default_rng([seed, phase_index, epoch, step])


def sample_step(space: Space, phase: PhaseConfig, phase_index: int, seed: int, epoch: int, step: int) -> tuple[int, list[Subnet]]:
    """One step's resolution and subnets (all at that resolution), valid for the full `space`.

    random: `subnets_per_step` draws from the phase's space (uniform per choice, depths skewed by the
    phase's `depth_weights`). sandwich: the phase's largest subnet first (the in-place teacher), its
    smallest, then random draws. largest_random: the largest, then random draws (more of the step for
    the middle of the space)."""
    rng = step_rng(seed, phase_index, epoch, step)
    restricted = phase_space(space, phase)
    resolution = int(rng.choice(space.resolutions))

    def draw(n: int) -> list[Subnet]:
        return [restricted.sample(rng=rng, depth_weights=phase.depth_weights) for _ in range(n)]

    if phase.sampler == "sandwich":
        subs = [restricted.largest(), restricted.smallest()] + draw(phase.subnets_per_step - 2)
    elif phase.sampler == "largest_random":
        subs = [restricted.largest()] + draw(phase.subnets_per_step - 1)
    else:
        subs = draw(phase.subnets_per_step)
    out = []
    for s in subs:
        d = s.model_dump()
        d["resolution"] = resolution
        out.append(space.validate_subnet(d))
    return resolution, out


def trains_largest(phase: PhaseConfig, step: int) -> bool:
    """Whether this step's first subnet (the largest, under the sandwich and largest_random samplers) takes a
    gradient: every step, or with `largest_every` N every Nth step of an epoch (counted from its first)."""
    return phase.sampler == "random" or step % phase.largest_every == 0


def eval_subnets(space: Space, count: int, seed: int) -> list[tuple[str, Subnet]]:
    """The fixed set evaluated after a phase: the smallest subnet (every choice and the
    resolution at their minimum), the largest (all at maximum) and `count` random subnets
    drawn once from `seed`."""
    out = [("smallest", space.smallest()), ("largest", space.largest())]
    rng = np.random.default_rng([seed, 7919])
    for i in range(count):
        out.append((f"random{i}", space.sample(rng=rng)))
    return out
