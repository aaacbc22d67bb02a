"""Supernet checkpoints: atomic, self-describing, readable with `torch.load(weights_only=True)`.

A checkpoint holds only tensors and plain data (dicts, lists, numbers, strings), so loading
one never runs code; it carries the space, data fingerprint and config it was trained
with, the position in the schedule, and all state needed to resume bit-for-bit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwnas.errors import UserError
from hwnas.fileio import atomic_path, format_validation_error
from hwnas.space.models import Space

FORMAT = "hwnas-supernet"
VERSION = 1


class SupernetMeta(BaseModel):
    """What a checkpoint was trained on and how far it got (JSON-able; stored as plain data)."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Any] = Field(description="Space JSON, num_classes set from the data")
    data: str = Field(description="DATA spec as given to train")
    data_fingerprint: str
    config: dict[str, Any]
    phase: str
    epoch: float = Field(ge=0, description="epochs completed, all phases together (fractional when a phase ends mid-epoch)")
    finished: bool
    metrics: dict[str, Any] = Field(default_factory=dict, description="last evaluation")

    def get_space(self) -> Space:
        return Space.model_validate(self.space)


def save_checkpoint(path: str | os.PathLike[str], state: dict) -> None:
    """Write `state` atomically: a temporary file in the same folder, fsync, then rename."""
    state = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint (weights_only=True); UserError naming the file if missing, damaged or foreign."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint file")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a torch file, unsafe pickle...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p}: damaged or not an hwnas checkpoint ({msg[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{p}: not an hwnas supernet checkpoint (written by `hwnas train`)")
    if state.get("version") != VERSION:
        raise UserError(f"{p}: checkpoint format version {state.get('version')} is not supported (expected {VERSION})")
    for key in ("meta", "model"):
        if key not in state:
            raise UserError(f"{p}: damaged checkpoint (no '{key}' entry)")
    return state


def read_meta(path: str | os.PathLike[str], state: dict) -> SupernetMeta:
    try:
        return SupernetMeta.model_validate(state["meta"])
    except ValidationError as e:
        raise UserError(format_validation_error(f"{path}: meta", e)) from None


def same_space(a: Space, b: Space) -> bool:
    """Same name and structure; the classifier width (num_classes, set from the data) is ignored."""
    return a.model_copy(update={"num_classes": b.num_classes}) == b


def check_space(path: str | os.PathLike[str], ckpt_space: Space, space: Space) -> None:
    if not same_space(space, ckpt_space):
        what = "a different structure" if space.name == ckpt_space.name else f"space '{ckpt_space.name}'"
        raise UserError(
            f"{path}: checkpoint is for {what}, not the requested space '{space.name}'; "
            f"pass --space {ckpt_space.name} (or its file) or use a checkpoint trained on '{space.name}'"
        )


def load_supernet(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", space: Space | None = None
) -> tuple["Supernet", SupernetMeta]:  # noqa: F821
    """A trained Supernet and its meta; UserError if `space` is given and the checkpoint is for another."""
    from hwnas.supernet import Supernet

    state = load_checkpoint(path, map_location=map_location)
    meta = read_meta(path, state)
    try:
        ckpt_space = meta.get_space()
    except ValidationError as e:
        raise UserError(format_validation_error(f"{path}: meta.space", e)) from None
    if space is not None:
        check_space(path, ckpt_space, space)
    net = Supernet(ckpt_space)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{path}: model weights do not match space '{ckpt_space.name}' ({str(e).splitlines()[0][:200]})") from None
    net.to(map_location)
    net.eval()
    return net, meta
