"""Transfer: start a supernet from another one trained on other data (`hwnas train --init CKPT`).

hwnas state-dict keys name roles (stem, first_block, stages.i.j.expand_conv / depthwise /
transforms / se / project, head), so "same role" is "same key": a tensor is copied when the key
exists in both supernets with the same shape, and is left freshly initialised otherwise. The
classifier is always fresh: the new data's classes are its own, even when there are as many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hwnas.errors import UserError

CLASSIFIER_PREFIX = "head.classifier."


@dataclass
class TransferReport:
    """Which tensors came from the init checkpoint and which were initialised here."""

    checkpoint: str
    source_space: str
    copied: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # in the init checkpoint, with no place here

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "source_space": self.source_space, "copied": self.copied,
                "fresh": self.fresh, "unused": self.unused, "copied_count": len(self.copied), "fresh_count": len(self.fresh)}

    def summary(self) -> str:
        fresh = ", ".join(self.fresh[:6]) + (f" ... ({len(self.fresh)} in all)" if len(self.fresh) > 6 else "")
        return (f"init: {len(self.copied)} tensors copied from {self.checkpoint} ({self.source_space}); "
                f"{len(self.fresh)} fresh: {fresh or 'none'}"
                + (f"; {len(self.unused)} of its tensors unused" if self.unused else ""))


def load_init(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """(model state dict, its space name) of a CKPT written by `hwnas train` or `hwnas import-ofa`."""
    from hwnas.train.checkpoint import load_checkpoint, read_meta

    state = load_checkpoint(path)
    meta = read_meta(path, state)
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise UserError(f"--init {path}: damaged checkpoint (its 'model' entry is not a state dict)")
    return model, str(meta.space.get("name", "?"))


@torch.no_grad()
def transfer_weights(model: nn.Module, source: dict[str, torch.Tensor], checkpoint: str, source_space: str) -> TransferReport:
    """Copy every tensor of `source` whose key and shape match `model`'s, except the classifier."""
    rep = TransferReport(checkpoint=checkpoint, source_space=source_space)
    own = model.state_dict()
    for k, dst in own.items():
        src = source.get(k)
        if k.startswith(CLASSIFIER_PREFIX) or src is None or tuple(src.shape) != tuple(dst.shape):
            rep.fresh.append(k)
            continue
        dst.copy_(src.to(dtype=dst.dtype))
        rep.copied.append(k)
    fresh = set(rep.fresh)
    rep.unused = [k for k in source if k not in own or k in fresh]
    trained = [k for k in rep.copied if not k.endswith("num_batches_tracked")]
    if not trained:
        raise UserError(f"--init {checkpoint}: no tensor of its supernet ('{source_space}') has the role and shape of one "
                        "here; --init needs a supernet of the same block structure (widths, kernels, expand ratios)")
    return rep
