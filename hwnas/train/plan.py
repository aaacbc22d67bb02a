"""Planning a training run to fit a wall-clock budget, and telling the user when it will end.

Pure arithmetic lives here (durations, epochs per phase from measured costs); measuring the
costs needs the training step and lives beside it (`train.probe.probe_costs`).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Sequence

from pydantic import BaseModel, ConfigDict, Field

from hwnas.errors import UserError
from hwnas.train.config import TrainConfig

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int, flag: str = "--time-budget") -> float:
    """'900s', '45m', '2h', '1.5h' or a bare number of seconds -> seconds (> 0); UserError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text).lower())
        if not m:
            raise UserError(f"{flag}: '{text}' is not a duration; use seconds, minutes or hours such as 900s, 45m or 2h")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"{flag}: the duration must be positive, got '{text}'")
    return value


def format_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


EVAL_SHARE = 0.10
"""Under a time budget the final evaluation keeps to this share of it: the fixed random subnets (the
smallest and the largest are always evaluated, `val_acc_min` / `val_acc_max`) are left out, last first,
until it fits. A 3-minute cifar10-small run spent a sixth of its budget evaluating 5 subnets."""


class PhaseCost(BaseModel):
    """Measured seconds per training iteration of one phase (phases of one kind share a measurement)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    seconds_per_iter: float = Field(gt=0, description="mean over the phase's iterations")
    label_seconds_per_iter: float | None = Field(
        default=None, gt=0, description="where teaching costs a forward more (a frozen teacher, `kd_view: student`): "
        "the price of the iterations before `kd_start`, which learn from labels alone; None: every iteration costs the mean")


def split_mean(label_s: float, teach_s: float, kd_start: float) -> float:
    """Mean seconds per iteration of a phase whose first `kd_start` share of iterations costs `label_s` and the rest
    `teach_s` (the step decides by `iteration >= kd_start * iterations`)."""
    return kd_start * label_s + (1.0 - kd_start) * teach_s


def span_seconds(cost: PhaseCost, kd_start: float, iters: int, start: int, stop: int) -> float:
    """Expected seconds of iterations [start, stop) of a phase of `iters` iterations: at the label-only price before
    the `kd_start` boundary and the teaching price after it, where the two differ; else at the mean. Re-planning
    compares the steps it timed with this, so the cheap label-only start of a phase is not read as a fast machine."""
    n = max(stop - start, 0)
    label = cost.label_seconds_per_iter
    if label is None or not 0 < kd_start < 1:
        return n * cost.seconds_per_iter
    teach = max((cost.seconds_per_iter - kd_start * label) / (1.0 - kd_start), 0.0)
    boundary = math.ceil(kd_start * iters)  # the first iteration that learns from the teacher
    n_label = max(min(stop, boundary) - start, 0)
    return n_label * label + (n - n_label) * teach


class Plan(BaseModel):
    """What the run is expected to do and cost; printed before training starts."""

    model_config = ConfigDict(extra="forbid")
    time_budget_s: float | None
    planned_epochs: dict[str, float]
    iters_per_epoch: int
    costs: list[PhaseCost]
    train_s: float = Field(description="expected seconds of training steps")
    eval_s: float = Field(description="expected seconds of evaluation")
    eval_subnets_dropped: int = Field(default=0, ge=0, description="fixed random subnets left out of the evaluation so it "
                                      "stays within EVAL_SHARE of the time budget")
    overhead_s: float = Field(description="seconds already spent (data, probe) plus checkpoints")
    cpu_threads: int | None = Field(default=None, description="intra-op threads the costs were measured with (CPU)")

    def cost(self, name: str) -> float:
        return self.phase_cost(name).seconds_per_iter

    def phase_cost(self, name: str) -> PhaseCost:
        return next(c for c in self.costs if c.name == name)

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.overhead_s

    def lines(self, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(timezone.utc)
        cost = {c.name: c.seconds_per_iter for c in self.costs}
        head = (f"plan: time budget {format_duration(self.time_budget_s)}" if self.time_budget_s
                else "plan: the configured epochs (no --time-budget)")
        threads = f" with {self.cpu_threads} CPU thread{'s' * (self.cpu_threads != 1)}" if self.cpu_threads else ""
        out = [head + f"; {self.iters_per_epoch} iterations per epoch, measured on this machine{threads}"]
        for name, e in self.planned_epochs.items():
            if e > 0:
                secs = e * self.iters_per_epoch * cost[name]
                label = self.phase_cost(name).label_seconds_per_iter
                start = f" (mean; {label:.3f} before kd_start)" if label is not None else ""
                out.append(f"  phase {name:<9} {e:7.2f} epochs  {cost[name]:.3f} s/iteration{start}  ~{format_duration(secs)}")
        dropped = (f" (without {self.eval_subnets_dropped} of the random subnets, to keep it within "
                   f"{EVAL_SHARE:.0%} of the budget)" if self.eval_subnets_dropped else "")
        out.append(f"  evaluation ~{format_duration(self.eval_s)}{dropped}; setup and checkpoints ~{format_duration(self.overhead_s)}")
        end = now + timedelta(seconds=self.total_s - self.overhead_s)
        out.append(f"  expected to take {format_duration(self.total_s)}, ending about {end:%Y-%m-%d %H:%M} UTC")
        return out


def phase_seconds(cfg: TrainConfig, costs: dict[str, float], iters_per_epoch: int) -> float:
    """Expected seconds of training steps for `cfg`'s epochs at these per-iteration costs."""
    return sum(round(p.epochs * iters_per_epoch) * costs[p.name] for p in cfg.phases)


def plan_epochs(cfg: TrainConfig, costs: dict[str, float], iters_per_epoch: int, available_s: float) -> TrainConfig:
    """Scale every phase's epochs by one factor so the steps take `available_s` at the measured costs.

    The phases keep their shares of the schedule (the preset's shape); epochs become fractional
    (whole iterations). A phase that trains keeps at least one iteration. UserError when not even
    one iteration per phase fits."""
    if available_s <= 0:
        raise UserError("--time-budget: the budget is used up by setup and evaluation alone; give a longer budget")
    full = sum(p.epochs * iters_per_epoch * costs[p.name] for p in cfg.phases)
    factor = available_s / full
    epochs: dict[str, float] = {}
    for p in cfg.phases:
        if p.epochs <= 0:
            epochs[p.name] = 0.0
            continue
        iters = max(1, int(p.epochs * factor * iters_per_epoch))
        epochs[p.name] = iters / iters_per_epoch
    minimum = sum(costs[p.name] for p in cfg.phases if p.epochs > 0)
    if minimum > available_s:
        raise UserError(f"--time-budget: one iteration of each phase alone takes {minimum:.1f} s, more than the "
                        f"{available_s:.1f} s left for training; give a longer budget")
    return cfg.with_epochs(epochs)


def plan_epochs_with_saves(cfg: TrainConfig, costs: dict[str, float], iters_per_epoch: int, available_s: float,
                           save_s: float) -> TrainConfig:
    """`plan_epochs` where the checkpoints also come out of `available_s`: one before the first step and
    one after every epoch (an epoch begun counts). Their number grows with the epochs the budget buys,
    so the steps' share is solved for: a first guess from the steps alone over-counted the checkpoints
    when they cost as much as the epochs (small data) and refused budgets that fit."""
    full = phase_seconds(cfg, costs, iters_per_epoch)  # the configured epochs' steps
    training = sum(1 for p in cfg.phases if p.epochs > 0)
    fixed = (training + 1) * save_s  # the first checkpoint, and a part-epoch rounded up per phase
    factor = (available_s - fixed) / max(full + cfg.total_epochs * save_s, 1e-12)
    return plan_epochs(cfg, costs, iters_per_epoch, factor * full)


class SubnetEvalCost(NamedTuple):
    """What evaluating one subnet costs per image, as measured: BN recalibration (training-mode
    forwards over the calibration images) and accuracy (eval-mode forwards over the validation images)."""

    calib_s: float
    val_s: float

    def seconds(self, calib_images: int, val_images: int) -> float:
        """One evaluation of this subnet: recalibration over `calib_images`, accuracy over `val_images`."""
        return self.calib_s * calib_images + self.val_s * val_images


def estimate_eval_seconds(cfg: TrainConfig, per_subnet: Sequence[SubnetEvalCost], calib_images: int,
                          val_images: int) -> float:
    """Evaluation cost of the run: the measured cost of each evaluated subnet (smallest, largest, the
    fixed random ones) over its images, times the evaluations the run makes. Measured, not scaled from the
    largest subnet: that model (x 0.6 per further subnet) gave half the real cost on cifar10-small
    (recalibration in training mode costs more than a forward in eval mode; small subnets less)."""
    n_evals = 1 if cfg.eval_at == "end" else sum(1 for p in cfg.phases if p.epochs > 0)
    per_eval = sum(c.seconds(calib_images, val_images) for c in per_subnet)
    return n_evals * per_eval


def eval_subnets_within(per_subnet: Sequence[SubnetEvalCost], calib_images: int, val_images: int, cap_s: float) -> int:
    """How many of the fixed random subnets (`per_subnet[2:]`, after the smallest and the largest) one
    evaluation can include and stay within `cap_s`, taken in order. The first two always count, so the
    answer is 0 when they alone exceed the cap."""
    total = sum(c.seconds(calib_images, val_images) for c in per_subnet[:2])
    kept = 0
    for c in per_subnet[2:]:
        total += c.seconds(calib_images, val_images)
        if total > cap_s:
            break
        kept += 1
    return kept
