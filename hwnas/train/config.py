"""The training configuration: one validated pydantic model, defaults per space, data and schedule.

A schedule is data: a list of phases, each naming which dimensions are elastic, how a step
samples subnets and who teaches them. Progressive shrinking (OFA), the sandwich rule with
in-place distillation (BigNAS) and delayed shrinking are three presets of that list, run by
one training loop.

A config file may give only the fields it wants to change (deep-merged onto the defaults);
`phases` may then be a mapping from phase name to the fields to change, so
`--config lr.yaml` holding `phases: {full: {lr: 0.05}}` is enough, and `schedule:
progressive` picks another preset's phase list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwnas.errors import UserError
from hwnas.fileio import format_validation_error, read_structured
from hwnas.space.models import Space

Dim = Literal["kernel", "depth", "expand"]
DIMS: tuple[str, ...] = ("kernel", "depth", "expand")
SCHEDULES: tuple[str, ...] = ("sandwich", "progressive", "delayed")
"""Preset schedules: `sandwich` (every dimension elastic from the start, largest + smallest + random
subnets per step, in-place distillation), `progressive` (OFA: full -> kernel -> depth -> expand with a
frozen teacher), `delayed` (the full network first, then the sandwich phase)."""

PHASES: tuple[str, ...] = ("full", "kernel", "depth1", "depth2", "expand1", "expand2")
"""The phase names of the progressive-shrinking preset, in order."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhaseConfig(_Strict):
    """One phase: what is elastic, how a step samples, who teaches, and its own lr schedule."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    epochs: float = Field(ge=0, description="0 skips the phase; a fraction trains part of an epoch")
    lr: float = Field(gt=0, le=100)
    warmup_epochs: float = Field(default=0.0, ge=0)
    elastic: dict[Dim, int] = Field(
        default_factory=dict,
        description="dimension -> how many of its largest choices are open (0 = all); a dimension not named stays at its largest",
    )
    sampler: Literal["random", "sandwich", "largest_random"] = Field(
        default="random", description="random: subnets drawn uniformly; sandwich: largest, smallest, then random ones; "
        "largest_random: largest, then random ones (the smallest only when drawn)")
    subnets_per_step: int = Field(default=1, ge=1, le=64, description="subnets trained per step; gradients summed")
    teacher: Literal["none", "frozen", "inplace"] = Field(
        default="none",
        description="frozen: a copy of the largest network taken when this phase starts (kept for later phases); "
        "inplace: the largest subnet of the same step (samplers sandwich and largest_random)")
    largest_every: int = Field(
        default=1, ge=1, le=64,
        description="samplers sandwich and largest_random: the largest subnet trains (takes a gradient) on every Nth step "
        "of the phase only; on the others it runs forward without gradient when it teaches in place, and not at all "
        "when nobody distils. The largest costs about two thirds of a small-image sandwich step, so with N = 2 a "
        "step can train one more random subnet for about the same time: measured with 4 subnets per step at 18.7 "
        "epochs on cifar10-small, -1.39 / +0.62 points mean inherited accuracy over two seeds (the same time); with "
        "3 per step and the time it saves spent on epochs (25.5 against 18.7 in equal time), +1.81 on one seed, "
        "not yet confirmed on a second, so off (BENCHMARKS.md)")
    reorder_channels: bool = Field(default=False, description="sort expanded channels by importance when the phase starts")
    depth_weights: dict[int, list[float]] = Field(
        default_factory=dict,
        description="stage index -> relative weights of its open depth choices, smallest first, for the random draws "
        "of a step (a stage not named: uniform). Weighting a stage towards its largest depth trains the blocks only "
        "deep subnets use more often (on cifar10-small, {0: [1, 1, 2]} cost 0.8 points: BENCHMARKS.md)")

    @field_validator("depth_weights")
    @classmethod
    def _weights(cls, v: dict[int, list[float]]) -> dict[int, list[float]]:
        for stage, w in v.items():
            if stage < 0:
                raise ValueError(f"stage indices must be >= 0, got {stage}")
            if not w or any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"stage {stage}: weights must be finite, >= 0 and not all 0, got {w}")
        return v

    @field_validator("elastic")
    @classmethod
    def _non_negative(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 0}
        if bad:
            raise ValueError(f"counts must be >= 0 (0 = every choice), got {bad}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PhaseConfig":
        if self.epochs > 0 and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        if self.teacher == "inplace" and self.sampler == "random":
            raise ValueError("teacher 'inplace' needs sampler 'sandwich' or 'largest_random' (the largest subnet of the step teaches)")
        if self.sampler == "sandwich" and self.subnets_per_step < 2:
            raise ValueError("sampler 'sandwich' trains the largest and the smallest subnet: subnets_per_step >= 2")
        if self.largest_every > 1 and self.sampler == "random":
            raise ValueError("largest_every > 1 needs sampler 'sandwich' or 'largest_random' (a random step has no largest)")
        if self.largest_every > 1 and self.subnets_per_step < 2:
            raise ValueError("largest_every > 1 needs subnets_per_step >= 2 (a step would otherwise train nothing)")
        return self

    @property
    def kind(self) -> tuple[Any, ...]:
        """What decides the cost of one step (phases of one kind cost the same per iteration)."""
        return (tuple(sorted(self.elastic.items())), self.sampler, self.subnets_per_step, self.teacher,
                tuple(sorted((k, tuple(v)) for k, v in self.depth_weights.items())), self.largest_every)


Regularizer = Literal["label_smoothing", "cutout", "dropout"]
"""A regulariser `regularize: largest` can keep to the step's largest subnet (`largest_only`)."""

SHORT_RUN_OFF: Mapping[str, Any] = MappingProxyType({"label_smoothing": 0.0, "augment_per_subnet": False, "cutout": 0.0})
"""The regularisers a run planned for fewer than `regularize_from_epochs` trains without, and their off values."""


class TrainConfig(_Strict):
    """Everything that decides the trained weights (and nothing that does not, e.g. the device)."""

    schedule: str = Field(default="custom", description="the preset the phases came from (informational)")
    phases: list[PhaseConfig] = Field(min_length=1)
    batch_size: int = Field(default=128, ge=1, le=65536, description="per process (global = batch_size x world size)")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=3e-5, ge=0, description="not applied to BatchNorm parameters and biases")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    kd_weight: float = Field(default=1.0, ge=0, description="weight of the soft-target loss from the teacher (0 = no distillation)")
    kd_temperature: float = Field(default=1.0, gt=0)
    kd_divergence: Literal["kl", "alpha"] = Field(
        default="kl", description="how a student is measured against its teacher: kl (KL(teacher || student)) or alpha "
        "(AlphaNet's adaptive alpha-divergence: per sample the larger of D_-1 and D_1, importance weights clipped at 5)")
    kd_view: Literal["teacher", "student"] = Field(
        default="teacher", description="with an in-place teacher and a view per subnet (`augment_per_subnet`): the soft "
        "target of each student is the largest's prediction on the largest's own view ('teacher': the forward it "
        "trained with, free; another crop, flip and cutout than the student's), or on the student's view ('student': "
        "one more forward of the largest per student, without gradients: on cifar10-small +0.20 points over two seeds at "
        "11 epochs and +1.31 at 18.7 epochs, for 14-27% more time per distilling step; in equal time (17.06 epochs "
        "against 18.73, two seeds) 0.75 points below 'teacher', BENCHMARKS.md)")
    kd_start: float = Field(
        default=0.0, ge=0, lt=1,
        description="share of each teaching phase's iterations trained on labels alone before the teacher's soft targets "
        "are used (a teacher that has not learnt yet pulls its students towards its mistakes)")
    grad_scaling: Literal["sum", "usage"] = Field(
        default="sum", description="how the gradients of a step's subnets combine: 'sum', or 'usage': each weight's sum "
        "times (subnets in the step) / (subnets that used that weight), so weights only large subnets use move as far "
        "per step as the shared ones")
    ema_halflife_epochs: float = Field(
        default=0.0, ge=0, description="keep an exponential moving average of the weights whose weight halves after this "
        "many epochs, evaluate with it and store it as the finished supernet (0: off, the live weights)")
    zero_init_residual: bool = Field(
        default=False, description="start every residual block's last BN scale at 0, so each block starts as the identity "
        "and every depth computes the same function at first (BigNAS)")
    flip: bool = Field(default=True, description="random horizontal flips (off for digits, which are not mirror-invariant)")
    cutout: float = Field(default=0.0, ge=0, lt=1, description="side of one cutout square per image as a fraction of "
                          "the resolution (0: none)")
    augment_per_subnet: bool = Field(
        default=False, description="each subnet of a step trains on its own random crop and flip of the batch instead of "
        "one shared draw: the shared weights see several views of an image per step, not one view several times")
    regularize: Literal["all", "largest"] = Field(
        default="all", description="which subnets of a step get label smoothing and cutout (the regularisers "
        "`largest_only` names): all, or only the largest "
        "(BigNAS: the largest overfits while smaller subnets underfit). The largest is the step's first subnet under the "
        "sandwich and largest_random samplers; a phase that samples at random has none, so none of its subnets is regularised. "
        "'largest' in the small-image sandwich default (measured on cifar10-small, BENCHMARKS.md)")
    largest_only: list[Regularizer] = Field(
        default_factory=lambda: ["label_smoothing", "cutout"],
        description="with regularize 'largest': the regularisers only the step's largest subnet trains with; every "
        "subnet trains with the others ('dropout' is the space's head dropout: the other subnets run it in eval mode, "
        "BN still on batch statistics). BigNAS restricts dropout too; measured 0.8 points worse on cifar10-small")
    regularize_from_epochs: float | None = Field(
        default=None, gt=0, description="label smoothing, `augment_per_subnet` and `cutout` apply only to runs planned for "
        "at least this many epochs in all; shorter ones train with one shared view per step, no label smoothing and no "
        "cutout (None: always as configured). The epochs are the plan's, so a time budget decides; decided once, when "
        "the run is planned")
    seed: int = Field(default=0, ge=0)
    eval_subnets: int = Field(default=3, ge=0, le=100, description="fixed random subnets evaluated (besides smallest and largest)")
    eval_at: Literal["phase_end", "end"] = Field(default="phase_end", description="evaluate after every phase or only at the end")
    calib_images: int = Field(default=2000, ge=1, description="training images for BN recalibration (all if fewer)")
    eval_batch_size: int = Field(default=500, ge=1)
    checkpoint_every_iters: int = Field(default=0, ge=0, description="also checkpoint mid-epoch every N iterations (0: once per epoch)")
    checkpoint_every_seconds: float = Field(default=300.0, ge=0, description="also checkpoint mid-epoch when this long has passed (0: off)")
    time_budget_s: float | None = Field(default=None, gt=0, description="the wall-clock budget the phase epochs were planned for")

    @field_validator("phases")
    @classmethod
    def _unique_names(cls, v: list[PhaseConfig]) -> list[PhaseConfig]:
        names = [p.name for p in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"phase names must be unique, repeated: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _some_training(self) -> "TrainConfig":
        if sum(p.epochs for p in self.phases) == 0:
            raise ValueError("every phase has 0 epochs; at least one phase must train")
        return self

    @property
    def total_epochs(self) -> float:
        return sum(p.epochs for p in self.phases)

    def phase(self, name: str) -> PhaseConfig:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(f"no phase named {name!r}; phases are {', '.join(p.name for p in self.phases)}")

    @property
    def planned_epochs(self) -> dict[str, float]:
        return {p.name: p.epochs for p in self.phases}

    def with_epochs(self, epochs: dict[str, float], keep_warmup: str | None = None) -> "TrainConfig":
        """The same config with these phase epochs: warm-up scaled along (the phase `keep_warmup`, already
        running, keeps its own), never above the epochs."""
        d = self.model_dump()
        for p in d["phases"]:
            if p["name"] in epochs:
                new = float(epochs[p["name"]])
                old = p["epochs"]
                scale = 1.0 if p["name"] == keep_warmup else (new / old if old > 0 else 0.0)
                p["warmup_epochs"] = min(p["warmup_epochs"] * scale, new)
                p["epochs"] = new
        return TrainConfig.model_validate(d)

    def for_planned_epochs(self) -> "TrainConfig":
        """The config a run of these epochs trains with: below `regularize_from_epochs` in all, label
        smoothing off, one shared view per step and no cutout. No default sets the threshold any more: with
        both regularisers kept to the largest subnet the full recipe measured no worse on short runs."""
        if self.regularize_from_epochs is None or self.total_epochs >= self.regularize_from_epochs:
            return self
        return self.model_copy(update=dict(SHORT_RUN_OFF))

    def scaled(self, factor: float) -> "TrainConfig":
        """Every phase's epochs (and warm-up) multiplied by `factor`, rounded; a phase that trains keeps >= 1 epoch."""
        if not (factor > 0 and math.isfinite(factor)):
            raise UserError(f"--epochs-scale must be a positive number, got {factor}")
        if factor == 1.0:
            return self
        return self.with_epochs({p.name: float(max(1, round(p.epochs * factor))) for p in self.phases if p.epochs > 0})


# ---------------------------------------------------------------- presets


def progressive_phases(epochs: list[float], lrs: list[float], warmup: list[float], per_step: list[int]) -> list[dict[str, Any]]:
    """OFA's progressive shrinking: full -> kernel -> depth (top 2, all) -> expand (top 2, all),
    a frozen copy of the full network teaching from phase 2 on, channels re-sorted before expand."""
    elastic: list[dict[str, int]] = [{}, {"kernel": 0}, {"kernel": 0, "depth": 2}, {"kernel": 0, "depth": 0},
                                     {"kernel": 0, "depth": 0, "expand": 2}, {"kernel": 0, "depth": 0, "expand": 0}]
    return [dict(name=n, epochs=e, lr=lr, warmup_epochs=w, subnets_per_step=k, elastic=el,
                 teacher="none" if i == 0 else "frozen", reorder_channels=n.startswith("expand"))
            for i, (n, e, lr, w, k, el) in enumerate(zip(PHASES, epochs, lrs, warmup, per_step, elastic))]


ALL_ELASTIC = {"kernel": 0, "depth": 0, "expand": 0}


def sandwich_phase(epochs: float, lr: float, warmup: float, per_step: int = 4, name: str = "sandwich") -> dict[str, Any]:
    """BigNAS's sandwich rule: every dimension elastic; largest + smallest + random subnets each step,
    the largest teaching the others in place."""
    return dict(name=name, epochs=epochs, lr=lr, warmup_epochs=warmup, elastic=dict(ALL_ELASTIC), sampler="sandwich",
                subnets_per_step=per_step, teacher="inplace")


def full_phase(epochs: float, lr: float, warmup: float) -> dict[str, Any]:
    return dict(name="full", epochs=epochs, lr=lr, warmup_epochs=warmup)


# OFA's sampling: 1 subnet per step for kernel, 2 for depth, 4 for expand.
_PER_STEP = [1, 1, 2, 2, 4, 4]


def _is_imagenet(space: Space) -> bool:
    return space.name in ("mbv3-imagenet", "mbv3-imagenet-w1.2")


def _preset_phases(space: Space, digits: bool, schedule: str) -> list[dict[str, Any]]:
    if _is_imagenet(space):
        if schedule == "progressive":
            return progressive_phases([180, 125, 25, 125, 25, 125], [0.4, 0.03, 0.01, 0.03, 0.01, 0.03], [5, 1, 0, 1, 0, 1], _PER_STEP)
        if schedule == "delayed":
            return [full_phase(180, 0.4, 5), sandwich_phase(300, 0.1, 1)]
        return [sandwich_phase(480, 0.4, 5)]
    if digits:
        if schedule == "progressive":
            return progressive_phases([20, 4, 2, 5, 2, 8], [0.2, 0.05, 0.03, 0.05, 0.03, 0.05], [1, 0, 0, 0, 0, 0], _PER_STEP)
        if schedule == "delayed":
            return [full_phase(10, 0.2, 1), sandwich_phase(14, 0.1, 0)]
        return [sandwich_phase(22, 0.2, 1)]
    # small images (CIFAR-sized spaces, custom spaces)
    if schedule == "progressive":
        return progressive_phases([60, 40, 10, 40, 10, 40], [0.1, 0.03, 0.02, 0.03, 0.02, 0.03], [2, 1, 0, 1, 0, 1], _PER_STEP)
    if schedule == "delayed":
        return [full_phase(40, 0.1, 2), sandwich_phase(60, 0.05, 1)]
    # lr 0.05 with 4 subnets per step, measured without distillation: +2.8 points over lr 0.1 with it, Spearman with
    # MACs +0.86 (distillation came back later at half weight, default_config). 3 subnets
    # per step (largest, smallest, 1 random) at lr 0.2 / 3 (subnets x lr as with 4 at 0.05): an epoch costs about 20%
    # less, and in the time 4 per step train 7 epochs, 3 per step train 8.7 that score 1.56 points more over two seeds,
    # although at equal epochs 3 per step is 1.15 below 4 (BENCHMARKS.md, bench_recipes.py on cifar10-small)
    return [sandwich_phase(100, 0.2 / 3, 2, per_step=3)]


DEFAULT_SCHEDULE = "sandwich"
"""The schedule that measured best on real images at CPU scale (BENCHMARKS.md, issue 9)."""


def default_config(space: Space, data_spec: str, schedule: str | None = None) -> TrainConfig:
    """Defaults per space, data and schedule preset. The digits demo is tuned for <= 7 min on a 2-core CPU;
    mbv3-imagenet's progressive preset follows OFA (180 / 125 / 25+125 / 25+125 epochs)."""
    schedule = schedule or DEFAULT_SCHEDULE
    if schedule not in SCHEDULES:
        raise UserError(f"schedule: '{schedule}' is not one of {', '.join(SCHEDULES)}")
    digits = str(data_spec).strip().lower() == "digits"
    phases = _preset_phases(space, digits, schedule)
    # zero-initialised residual blocks: +7.8 points for inherited subnets at equal epochs on cifar10-small
    # (BENCHMARKS.md, bench_recipes.py); the field's own default stays False, so configs stored before read truly
    common: dict[str, Any] = dict(schedule=schedule, phases=phases, zero_init_residual=True)
    if _is_imagenet(space):
        return TrainConfig.model_validate(dict(common, batch_size=256, flip=not digits))
    if digits:
        return TrainConfig.model_validate(dict(common, batch_size=64, flip=False, weight_decay=3e-5))
    small = dict(common, batch_size=128, flip=True)
    if schedule == "sandwich":
        # in-place distillation at half weight after 30% of the steps: +0.50/+0.65 points mean inherited accuracy at
        # 18.7 epochs on cifar10-small (two seeds), the ranking kept (Spearman with MACs 0.90/0.88, 0.83/0.93 without);
        # at weight 1 it gained +0.85 but flattened the ranking (0.36/0.79), and the search ranks by it; from the start
        # it cost 0.7 points at 7 epochs, where weight 1 after 30% was within the noise (BENCHMARKS.md, bench_recipes.py)
        small["kd_weight"] = 0.5
        small["kd_start"] = 0.3
        # weight decay 5e-4 (the field's default 3e-5): +0.68 points mean inherited accuracy over 8 subnets at 7 epochs
        # on cifar10-small, the gap to the alone nets -1.61 against -2.29 (BENCHMARKS.md, bench_recipes.py)
        small["weight_decay"] = 5e-4
        # each subnet of a step on its own crop and flip, with label smoothing 0.1: +1.86 points mean inherited
        # accuracy over 8 subnets at 18.7 epochs (a 45-minute run with two threads) on cifar10-small, the gap to the
        # alone nets -2.87 against -4.74; the views alone: +0.72 (BENCHMARKS.md, bench_recipes.py). Label smoothing
        # had been off since it cost 0.41-0.58 points at 7-8.7 epochs with one shared view. With label smoothing and
        # cutout for every subnet it was 1.04 points below that at 11 epochs, so shorter runs trained without them
        # (regularize_from_epochs 14); with both kept to the largest (below) the full recipe ties the short-run one at 11
        # epochs (-0.06 / +0.11, two seeds) and is above it at 7 (+0.57 / +1.43, two seeds), so every run keeps them.
        small["augment_per_subnet"] = True
        small["label_smoothing"] = 0.1
        # one 8x8 cutout square per subnet view (cutout 0.25): +0.28 / +0.63 points mean inherited accuracy at 18.7
        # epochs on cifar10-small (two seeds), the gap to the alone nets -2.10 / -1.64 against -2.38 / -2.26 (-2.21 /
        # -1.74 against two alone draws), the ranking kept (Spearman with MACs 0.90 / 0.95); 0.375 for every subnet was 0.50
        # points worse, and kd_weight 0.75 with cutout +0.09 (within the seed spread, τ lower); on shorter
        # runs measured only within the full recipe (above)
        small["cutout"] = 0.25
        # label smoothing and cutout for the step's largest subnet only (BigNAS): +1.31 points mean inherited accuracy
        # at 18.7 epochs on cifar10-small over four seeds (-0.72 / +0.36 / +2.19 / +3.43 against the default before it
        # on the same seeds), every subnet +0.6 to +1.9 on average; the gap to the alone nets -1.25 against -2.57 (two
        # alone draws) on those seeds, -1.49 over ten seeds; Spearman with MACs 0.74-0.95 per seed, mean 0.87
        # (BENCHMARKS.md, bench_recipes.py)
        small["regularize"] = "largest"
        # a 12x12 square (cutout 0.375) for the largest alone was measured and not kept: over five seeds at 18.7 epochs
        # on cifar10-small, -0.56 points mean inherited accuracy against 0.25 on the same seeds (lower on all 8
        # subnets), Kendall tau with the alone nets +0.58 against +0.47 (+0.12, 1.8 standard errors), and the subnet a
        # search would pick within each budget no better (0.95 against 0.94 points below the best alone); 0.5 was 0.59
        # points worse over two seeds (BENCHMARKS.md, bench_recipes.py)
    return TrainConfig.model_validate(small)


TRANSFER_EPOCHS_SCALE = 0.25
TRANSFER_LR_SCALE = 0.2
"""`train --init` (transfer) defaults: the same schedule, a quarter of the epochs (a training phase keeps
>= 1) and a fifth of the learning rates, so the copied features are adapted rather than overwritten."""


def transfer_config(space: Space, data_spec: str, schedule: str | None = None) -> TrainConfig:
    """The default config for fine-tuning a supernet started from another one (`train --init`)."""
    base = default_config(space, data_spec, schedule)
    d = base.model_dump()
    for p in d["phases"]:
        if p["epochs"] > 0:
            p["epochs"] = float(max(1, round(p["epochs"] * TRANSFER_EPOCHS_SCALE)))
        p["warmup_epochs"] = min(p["warmup_epochs"] * TRANSFER_EPOCHS_SCALE, p["epochs"])
        p["lr"] = p["lr"] * TRANSFER_LR_SCALE
    return TrainConfig.model_validate(d)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _merge_phases(base: list[dict[str, Any]], over: Any, source: str) -> Any:
    """`phases` given as a mapping name -> fields changes those phases of the preset; a list replaces them."""
    if not isinstance(over, dict):
        return over
    names = [p["name"] for p in base]
    bad = [n for n, v in over.items() if not isinstance(v, dict)]
    if bad:
        raise UserError(f"{source}: phases.{bad[0]} must be a mapping of the fields to change (lr, epochs, ...), "
                        f"got {type(over[bad[0]]).__name__}")
    unknown = [n for n in over if n not in names]
    if unknown:
        raise UserError(f"{source}: phases.{unknown[0]}: no phase of that name in this schedule (phases: {', '.join(names)}); "
                        f"set 'schedule' to the preset that has it ({', '.join(SCHEDULES)}) or give 'phases' as a full list")
    return [_deep_merge(p, over[p["name"]]) if p["name"] in over else p for p in base]


def resolve_config(space: Space, data_spec: str, config: "TrainConfig | str | Path | dict | None",
                   transfer: bool = False) -> TrainConfig:
    """TrainConfig, a file (YAML/JSON, partial allowed), a dict or None -> validated config.
    `transfer`: the defaults a partial config merges onto are transfer_config's (`train --init`)."""
    defaults = transfer_config if transfer else default_config
    if isinstance(config, TrainConfig):
        return config
    if config is None:
        return defaults(space, data_spec)
    source = "config"
    if isinstance(config, dict):
        over = dict(config)
    else:
        source = str(config)
        over = read_structured(config)
        if over is None:
            over = {}
        if not isinstance(over, dict):
            raise UserError(f"{source}: a training config must be a mapping, got {type(over).__name__}")
        over = dict(over)
    schedule = over.get("schedule")
    if schedule is not None and schedule not in SCHEDULES and not isinstance(over.get("phases"), list):
        raise UserError(f"{source}: schedule: '{schedule}' is not one of {', '.join(SCHEDULES)} "
                        "(a custom schedule gives 'phases' as a full list)")
    base = defaults(space, data_spec, schedule if schedule in SCHEDULES else None).model_dump()
    if isinstance(over.get("phases"), list) and "schedule" not in over:
        over["schedule"] = "custom"
    if "phases" in over:
        over["phases"] = _merge_phases(base["phases"], over["phases"], source)
    try:
        return TrainConfig.model_validate(_deep_merge(base, over))
    except ValidationError as e:
        raise UserError(_phase_names_in_errors(format_validation_error(source, e), over, base)) from None


def _phase_names_in_errors(msg: str, over: dict[str, Any], base: dict[str, Any]) -> str:
    """`phases.0.lr` -> `phases.full.lr`: name the phase as the user wrote it."""
    phases = over.get("phases") if isinstance(over.get("phases"), list) else base["phases"]

    def name(m: re.Match[str]) -> str:
        i = int(m.group(1))
        if 0 <= i < len(phases) and isinstance(phases[i], dict) and "name" in phases[i]:
            return f"phases.{phases[i]['name']}"
        return m.group(0)

    return re.sub(r"phases\.(\d+)(?=[.:]|$)", name, msg)
