"""The training configuration: one validated pydantic model, defaults per space and data.

A config file may give only the fields it wants to change (deep-merged onto the
defaults), so `--config lr.yaml` holding `phases: {full: {lr: 0.05}}` is enough.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwnas.errors import UserError
from hwnas.fileio import format_validation_error, read_structured
from hwnas.space.models import Space

PhaseName = Literal["full", "kernel", "depth1", "depth2", "expand1", "expand2"]
PHASES: tuple[str, ...] = ("full", "kernel", "depth1", "depth2", "expand1", "expand2")
"""Progressive shrinking order: largest only -> elastic kernel -> depth (2 steps) -> expand (2 steps)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhaseConfig(_Strict):
    """One phase's own schedule (OFA runs each phase as a separate job with a fresh schedule)."""

    epochs: int = Field(ge=0, description="0 skips the phase")
    lr: float = Field(gt=0, le=100)
    warmup_epochs: float = Field(default=0.0, ge=0)
    subnets_per_step: int = Field(default=1, ge=1, le=64, description="subnets sampled per step; gradients summed")


class Phases(_Strict):
    full: PhaseConfig
    kernel: PhaseConfig
    depth1: PhaseConfig
    depth2: PhaseConfig
    expand1: PhaseConfig
    expand2: PhaseConfig

    def get(self, name: str) -> PhaseConfig:
        return getattr(self, name)

    @model_validator(mode="after")
    def _warmup_fits(self) -> "Phases":
        for name in PHASES:
            p = self.get(name)
            if p.epochs > 0 and p.warmup_epochs > p.epochs:
                raise ValueError(f"{name}.warmup_epochs ({p.warmup_epochs}) exceeds {name}.epochs ({p.epochs})")
        return self


class TrainConfig(_Strict):
    """Everything that decides the trained weights (and nothing that does not, e.g. the device)."""

    phases: Phases
    batch_size: int = Field(default=128, ge=1, le=65536, description="per process (global = batch_size x world size)")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=3e-5, ge=0, description="not applied to BatchNorm parameters and biases")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    kd_weight: float = Field(default=1.0, ge=0, description="weight of the soft-target loss from the largest network (0 = no distillation)")
    kd_temperature: float = Field(default=1.0, gt=0)
    flip: bool = Field(default=True, description="random horizontal flips (off for digits, which are not mirror-invariant)")
    seed: int = Field(default=0, ge=0)
    eval_subnets: int = Field(default=3, ge=0, le=100, description="fixed random subnets evaluated at the end of each phase (besides smallest and largest)")
    calib_images: int = Field(default=2000, ge=2000, description="training images for BN recalibration (all if fewer)")
    eval_batch_size: int = Field(default=500, ge=1)
    checkpoint_every_iters: int = Field(default=0, ge=0, description="also checkpoint mid-epoch every N iterations (0: once per epoch)")
    checkpoint_every_seconds: float = Field(default=300.0, ge=0, description="also checkpoint mid-epoch when this long has passed (0: off)")

    @model_validator(mode="after")
    def _some_training(self) -> "TrainConfig":
        if sum(self.phases.get(n).epochs for n in PHASES) == 0:
            raise ValueError("every phase has 0 epochs; at least one phase must train")
        return self

    @property
    def total_epochs(self) -> int:
        return sum(self.phases.get(n).epochs for n in PHASES)

    def scaled(self, factor: float) -> "TrainConfig":
        """Every phase's epochs (and warm-up) multiplied by `factor`; a phase that trains keeps >= 1 epoch."""
        if not (factor > 0 and math.isfinite(factor)):
            raise UserError(f"--epochs-scale must be a positive number, got {factor}")
        if factor == 1.0:
            return self
        d = self.model_dump()
        for name in PHASES:
            p = d["phases"][name]
            if p["epochs"] > 0:
                e = max(1, round(p["epochs"] * factor))
                p["warmup_epochs"] = min(p["warmup_epochs"] * factor, float(e))
                p["epochs"] = e
        return TrainConfig.model_validate(d)


def _phases(epochs: list[int], lrs: list[float], warmup: list[float], per_step: list[int]) -> dict[str, Any]:
    return {
        n: dict(epochs=e, lr=lr, warmup_epochs=w, subnets_per_step=k)
        for n, e, lr, w, k in zip(PHASES, epochs, lrs, warmup, per_step)
    }


# OFA's sampling: 1 subnet per step for kernel, 2 for depth, 4 for expand.
_PER_STEP = [1, 1, 2, 2, 4, 4]


def default_config(space: Space, data_spec: str) -> TrainConfig:
    """Defaults per space and data. The digits demo is tuned for <= 7 min on a 2-core CPU;
    mbv3-imagenet follows OFA's schedule (180 / 125 / 25+125 / 25+125 epochs)."""
    digits = str(data_spec).strip().lower() == "digits"
    if space.name == "mbv3-imagenet":
        phases = _phases([180, 125, 25, 125, 25, 125], [0.4, 0.03, 0.01, 0.03, 0.01, 0.03], [5, 1, 0, 1, 0, 1], _PER_STEP)
        return TrainConfig(phases=Phases.model_validate(phases), batch_size=256, flip=not digits)
    if digits:
        phases = _phases([20, 4, 2, 5, 2, 8], [0.2, 0.05, 0.03, 0.05, 0.03, 0.05], [1, 0, 0, 0, 0, 0], _PER_STEP)
        return TrainConfig(phases=Phases.model_validate(phases), batch_size=64, flip=False, weight_decay=3e-5)
    # small images (CIFAR-sized spaces, custom spaces): a shortened OFA schedule
    phases = _phases([60, 40, 10, 40, 10, 40], [0.1, 0.03, 0.02, 0.03, 0.02, 0.03], [2, 1, 0, 1, 0, 1], _PER_STEP)
    return TrainConfig(phases=Phases.model_validate(phases), batch_size=128, flip=True)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(space: Space, data_spec: str, config: "TrainConfig | str | Path | dict | None") -> TrainConfig:
    """TrainConfig, a file (YAML/JSON, partial allowed), a dict or None -> validated config."""
    if isinstance(config, TrainConfig):
        return config
    base = default_config(space, data_spec)
    if config is None:
        return base
    source = "config"
    if isinstance(config, dict):
        over = config
    else:
        source = str(config)
        over = read_structured(config)
        if over is None:
            over = {}
        if not isinstance(over, dict):
            raise UserError(f"{source}: a training config must be a mapping, got {type(over).__name__}")
    try:
        return TrainConfig.model_validate(_deep_merge(base.model_dump(), over))
    except ValidationError as e:
        raise UserError(format_validation_error(source, e)) from None
