"""Choosing a subnet without a supernet, for time budgets too short to train one.

On a 2-core CPU, a supernet given 40% of a 15-minute budget trains 0.36 epochs of cifar10-small.
Its accuracy estimates are then noise. generate chose resolutions of 24 and 40 for 32-pixel images,
and its fine-tuned models lost to a fixed network trained for the whole time by 7 to 10 points.
With no supernet worth asking, the budget is better spent the way a careful user would spend it:
- keep the data's own resolution;
- among the subnets under the latency budget, take the largest that still trains at least
  `MIN_EPOCHS` epochs in the time there is (on small data, epochs buy more than MACs: the alone
  networks of the quality benchmark did not rank by size even at 18 epochs);
- train it from scratch for that time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hwnas.latency.model import LatencyModel
from hwnas.latency.pieces import mixed_pool
from hwnas.space import Encoding, Space, Subnet
from hwnas.space.cost import macs

MIN_EPOCHS = 30.0
"""Epochs the chosen subnet must get in the training time (when even the smallest cannot, the smallest).

Measured on cifar10-small (2-core CPU, BENCHMARKS.md): in 15 minutes the smallest uniform net (15.6M MACs)
trained 15.7 epochs and scored 0.68, while the 12-epoch rule's picks (26-28M MACs, about 10 epochs) scored
0.61-0.63. Doubling the epochs was worth about 6 points between 7 and 15 epochs, quadrupling the MACs at
equal epochs about 6 (H200, 15 epochs): up to a few tens of epochs, epochs buy more than MACs."""
POOL = 3000
"""Random subnets drawn per resolution tried (half of them leaning to small or large choices)."""


def native_resolution(space: Space, image_size: int) -> int:
    """The space's resolution closest to the images' own size (the smaller one on a tie)."""
    return min(space.resolutions, key=lambda r: (abs(r - image_size), r))


def uniform_subnets(space: Space, resolution: int) -> list[Subnet]:
    """Every subnet with one depth, kernel and expand shared by all stages (the fixed nets a user would try)."""
    common = lambda attr: sorted(set.intersection(*(set(getattr(s, attr)) for s in space.stages)))  # noqa: E731
    n = len(space.stages)
    return [space.validate_subnet(dict(resolution=resolution, depths=[d] * n, kernels=[[k] * d] * n, expands=[[e] * d] * n))
            for d in common("depths") for k in common("kernels") for e in common("expands")]


def predict_latencies(space: Space, model: LatencyModel, subs: list[Subnet]) -> dict[str, float]:
    """Predicted latency (ms) by subnet key, in one vectorised call."""
    if not subs:
        return {}
    enc = Encoding(space)
    lat = model.predict_genomes(np.stack([enc.encode(s) for s in subs]))
    return {s.key(): float(ms) for s, ms in zip(subs, lat)}


def feasible_subnets(space: Space, model: LatencyModel, budget_ms: float, resolution: int, seed: int = 0,
                     pool: int = POOL) -> tuple[list[Subnet], dict[str, float]]:
    """Distinct subnets at `resolution` predicted within `budget_ms` (the uniform ones and a seeded random pool),
    with their predicted latencies by key (the direct route re-chooses by them)."""
    rng = np.random.default_rng([seed, resolution, 2024])
    subs: dict[str, Subnet] = {s.key(): s for s in uniform_subnets(space, resolution)}
    for s in mixed_pool(space, rng, pool):
        s = space.validate_subnet(dict(s.model_dump(exclude={"space"}), resolution=resolution))
        subs.setdefault(s.key(), s)
    lat = predict_latencies(space, model, list(subs.values()))
    feasible = [s for k, s in subs.items() if lat[k] <= budget_ms]
    return feasible, {s.key(): lat[s.key()] for s in feasible}


def resolution_for(space: Space, model: LatencyModel, budget_ms: float, image_size: int, seed: int = 0
                   ) -> tuple[int, list[Subnet], dict[str, float]]:
    """The native resolution if any subnet fits the budget there, else the closest lower (then higher)
    resolution that has one; with that resolution's feasible subnets and their predicted latencies by key."""
    native = native_resolution(space, image_size)
    order = sorted((r for r in model.resolutions if r <= native), reverse=True) + sorted(r for r in model.resolutions if r > native)
    for r in order:
        feasible, lat = feasible_subnets(space, model, budget_ms, r, seed)
        if feasible:
            return r, feasible, lat
    return order[0], [], {}


def choose_for_time(space: Space, feasible: list[Subnet], seconds_per_epoch: Callable[[Subnet], float],
                    train_s: float, min_epochs: float = MIN_EPOCHS) -> tuple[Subnet, float]:
    """(subnet, expected epochs): the feasible subnet with the most MACs whose expected epochs in
    `train_s` reach `min_epochs`, else the one with the fewest MACs.

    The cost of an epoch is timed on the smallest and the largest feasible subnet and taken as linear
    in MACs between them (training steps of these small nets are close to linear in MACs)."""
    if not feasible:
        raise ValueError("no feasible subnet to choose from")
    by_macs = sorted(feasible, key=lambda s: (macs(space, s), s.key()))
    lo, hi = by_macs[0], by_macs[-1]
    m_lo, m_hi = macs(space, lo), macs(space, hi)
    s_lo = seconds_per_epoch(lo)
    s_hi = seconds_per_epoch(hi) if m_hi > m_lo else s_lo
    slope = (s_hi - s_lo) / (m_hi - m_lo) if m_hi > m_lo else 0.0

    def epochs(s: Subnet) -> float:
        return train_s / max(s_lo + slope * (macs(space, s) - m_lo), 1e-9)

    fits = [s for s in by_macs if epochs(s) >= min_epochs]
    pick = fits[-1] if fits else lo
    return pick, epochs(pick)
