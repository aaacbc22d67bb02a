"""An exponential moving average of the supernet's weights (BigNAS keeps one; off by default here).

The average is over parameters only: BatchNorm statistics are recalibrated per subnet before any
evaluation, so averaging them would buy nothing. The shadow lives beside the model, not inside it,
so the optimizer, DDP and the checkpoint's "model" entry see the live weights while training runs;
the finished checkpoint holds the average.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def step_decay(halflife_epochs: float, iters_per_epoch: int) -> float:
    """Per-step decay whose weight halves after `halflife_epochs` epochs: the horizon is set in epochs,
    so a 7-epoch CPU run and a 300-epoch GPU run average over the same share of their schedule."""
    if not (halflife_epochs > 0 and math.isfinite(halflife_epochs)):
        raise ValueError(f"halflife_epochs must be positive, got {halflife_epochs}")
    return 0.5 ** (1.0 / max(halflife_epochs * max(iters_per_epoch, 1), 1e-9))


class WeightEMA:
    """The weights seen so far, the n-th newest weighted by decay**n, normalised (Adam's bias correction):
    shadow <- lerp(shadow, param, (1 - d) / (1 - d**k)) at the k-th update. The starting weights never
    count, and the half-life asked for is the one got however short the run. The usual warm-up
    min(d, (1 + k) / (10 + k)) caps the horizon at about k / 9 steps; in a 546-step CPU run it overrode
    every half-life above 0.55 epochs (half-lives 0.7 and 2 gave the same network to the bit)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().clone() for n in self.names]
        self.updates = 0

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    def current_decay(self) -> float:
        """How much of the shadow the next update keeps (0 at the first: the shadow becomes the weights)."""
        d = self.decay
        return 1.0 - (1.0 - d) / (1.0 - d ** (self.updates + 1))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self._params(model)], 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average at the live weights (after a channel re-sort has permuted them)."""
        for s, p in zip(self.shadow, self._params(model)):
            s.copy_(p.detach())
        self.updates = 0

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, self._params(model)):
            p.copy_(s)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged weights inside the block, its live weights restored after."""
        live = [p.detach().clone() for p in self._params(model)]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, v in zip(self._params(model), live):
                    p.copy_(v)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": {n: s.detach().cpu() for n, s in zip(self.names, self.shadow)}}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        missing = [n for n in self.names if n not in shadow]
        if missing:
            raise ValueError(f"weight average lacks {len(missing)} tensors (e.g. {missing[0]})")
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                s.copy_(shadow[n].to(s.device))
        self.updates = int(state["updates"])
