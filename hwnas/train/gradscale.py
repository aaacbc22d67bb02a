"""Per-weight gradient scaling for steps that train several subnets at once.

A step of the sandwich rule sums the gradients of its subnets. Weights every subnet uses
(the first channels, the kernel centres, the first blocks of a stage) get the sum of all of
them; weights only large subnets use (the last expansion channels, the outer kernel rings,
the last block of a stage) get the gradient of one or two. At one learning rate the shared
weights therefore move several times further per step than the large subnets' own.

`UsageCounter` counts, per weight element, the subnets whose backward gave it a gradient
and, at the end of the step, scales each element's summed gradient by (subnets in the
step) / (subnets that used it): every weight then moves as far as one all subnets share.
Weight decay is untouched (it is the optimizer's, per step). Measured on cifar10-small it
does not close the large subnets' gap to the same nets trained alone and costs 0.9 points
(BENCHMARKS.md), so `grad_scaling` defaults to 'sum'; kept so the measurement can be repeated.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import torch
from torch import nn


class UsageCounter:
    """Counts, per weight element, the backward passes that gave it a non-zero gradient.

    A context manager: tensor hooks see each backward's own gradient of a parameter before
    it is added to `.grad` (on the full parameter: zero where the subnet's slice did not
    reach). A subnet whose gradient for a weight is exactly zero (e.g. behind a BatchNorm
    scale that is still 0) is not counted; it added nothing to that weight's sum either."""

    def __init__(self, params: Iterable[nn.Parameter]):
        self.params = [p for p in params if p.requires_grad]
        self.count: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "UsageCounter":
        self._handles = [p.register_hook(self._hook(i)) for i, p in enumerate(self.params)]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, i: int):
        def hook(g: torch.Tensor) -> None:
            with torch.no_grad():
                c = self.count.get(i)
                if c is None:
                    self.count[i] = (g != 0).to(torch.uint8)  # steps train at most a few subnets
                else:
                    c += g != 0
        return hook

    @torch.no_grad()
    def scale(self, n_subnets: int) -> None:
        """Multiplies each element's gradient by n_subnets / (backward passes that used it), then forgets the counts."""
        for i, p in enumerate(self.params):
            c = self.count.get(i)
            if c is None or p.grad is None:
                continue
            p.grad.mul_(float(n_subnets) / c.clamp_min_(1).to(p.grad.dtype))
        self.count.clear()
