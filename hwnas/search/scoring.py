"""Scoring subnets for real at scale: shards over torchrun processes, and the search's ETA.

Under `torchrun --nproc-per-node K -m hwnas search ...` rank 0 runs the search loop alone (so the
predictor fits and NSGA-II runs cannot drift apart between processes) and, for every batch of
subnets the loop wants scored, broadcasts the batch; each rank scores its cost-balanced shard and
an all-reduce gives every rank the full accuracy array. The score of a subnet does not depend on
which rank computes it (same weights, same fixed calibration and validation images), so the front
equals the 1-process front for the same seed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.search.models import SearchConfig


def planned_real_evaluations(cfg: SearchConfig) -> int:
    """Upper bound on the subnets a search scores for real (the surrogate loop may converge earlier;
    direct NSGA-II scores each distinct subnet once)."""
    if cfg.mode == "direct":
        return cfg.pop_size * cfg.generations
    return cfg.init_samples + cfg.iterations * cfg.candidates_per_iteration


def shard_by_cost(costs: Sequence[float], world: int) -> list[list[int]]:
    """Indices of `costs` dealt to `world` ranks, dearest first to the least loaded rank (ties: lower
    index, lower rank): balanced wall time, and the same answer on every rank."""
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    order = sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i))
    load = [0.0] * world
    shards: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        r = min(range(world), key=lambda k: (load[k], k))
        shards[r].append(i)
        load[r] += float(costs[i])
    return [sorted(s) for s in shards]


def format_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class EtaReporter:
    """Says the search's remaining time once a few real evaluations have been timed, and again only
    when the projection moves by more than a quarter (at most once a minute): scoring subnets is
    what makes a big supernet's search long, so its rate times the evaluations still planned is
    the ETA."""

    def __init__(self, planned: int, say: Callable[[str], None], *, processes: int = 1,
                 min_done: int = 3, clock: Callable[[], float] = time.perf_counter) -> None:
        self.planned, self.say, self.processes = int(planned), say, int(processes)
        self.min_done, self.clock = min_done, clock
        self.last_finish: float | None = None
        self.last_said = float("-inf")
        self.messages: list[str] = []

    def update(self, done: float, seconds: float, *, force: bool = False) -> str | None:
        """`done` evaluations took `seconds` of scoring so far; returns (and says) a line when due.
        `force` says the first line even before `min_done` (the end of the first batch)."""
        if done <= 0 or (done < self.min_done and not force):
            return None
        per = seconds / done
        left = max(self.planned - done, 0.0)
        eta = per * left
        now = self.clock()
        finish = now + eta
        if self.last_finish is not None:
            prev_left = max(self.last_finish - now, 0.0)
            if abs(finish - self.last_finish) <= max(30.0, 0.25 * prev_left) or now - self.last_said < 60.0:
                return None
        procs = f" on {self.processes} processes" if self.processes > 1 else ""
        msg = (f"{'ETA' if self.last_finish is None else 'ETA update'}: about {format_duration(eta)} of scoring left "
               f"(up to {round(left)} of {self.planned} planned real evaluations, {per:.2f} s each{procs}; "
               f"predictor fits and NSGA-II runs add a little)")
        self.last_finish, self.last_said = finish, now
        self.messages.append(msg)
        self.say(msg)
        return msg


def all_reduce_scores(dctx: Any, values: np.ndarray, device: Any) -> np.ndarray:
    """Sum of every rank's float64 array (each rank fills only its shard, zeros elsewhere: exact)."""
    import torch
    import torch.distributed as dist

    dev = device if getattr(device, "type", "cpu") == "cuda" else torch.device("cpu")
    t = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float64), device=dev)
    if dctx.active:
        dist.all_reduce(t)
    return t.cpu().numpy()


def broadcast_batch(dctx: Any, payload: Any) -> Any:
    """Rank 0's payload on every rank (a list of subnet dicts, or None meaning: the search is done)."""
    if not dctx.active:
        return payload
    import torch.distributed as dist

    box = [payload if dctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
