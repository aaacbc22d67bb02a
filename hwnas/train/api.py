"""`train_supernet`: the whole schedule (progressive shrinking, the sandwich rule, ...) as one resumable
call: the loop, its checkpoints, its evaluation and its re-planning against a time budget.

The run is a sequence of positions (`train.position`: phase, epoch in phase, next batch). Everything a
step does is a function of that position and the saved state, so a run killed at any point and resumed
from its last checkpoint ends exactly where an uninterrupted run would. Around the loop: `train.probe`
measures what a step costs here, `train.plan` turns costs into epochs, `train.resume` checks a resume,
`train.step` computes one step's loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.data import BatchIterator, Dataset, calibration_subset, load_dataset
from hwnas.errors import TrainingDiverged, UserError
from hwnas.space import build_plan, load_space, with_classes
from hwnas.space.models import Space
from hwnas.supernet import StaticNet, Supernet
from hwnas.train.checkpoint import SupernetMeta, save_checkpoint
from hwnas.train.ema import WeightEMA, step_decay
from hwnas.train.config import SHORT_RUN_OFF, PhaseConfig, TrainConfig, resolve_config
from hwnas.train.distributed import CpuThreads, DistContext, cpu_threads, init_distributed, memory_format_for, resolve_device
from hwnas.train.evaluate import evaluate_subnet
from hwnas.train.phases import check_phases, eval_subnets, sample_step, trains_largest
from hwnas.train.plan import (EVAL_SHARE, Plan, PhaseCost, SubnetEvalCost, estimate_eval_seconds, eval_subnets_within,
                              format_duration, parse_duration, phase_seconds, plan_epochs_with_saves,
                              span_seconds)
from hwnas.train.position import (Position, aug_generator, epochs_done, phase_epoch_count, phase_iters, rng_state,
                                  set_rng_state, skip_empty_phases)
from hwnas.train.probe import freeze, make_teacher, probe_costs
from hwnas.train.resume import read_resume, resumed_config
from hwnas.train.schedule import CosineSchedule, make_optimizer
from hwnas.train.step import step_inputs, step_loss
from hwnas.train.transfer import load_init, transfer_weights


def metrics_path(out: str | os.PathLike[str]) -> Path:
    """Where the JSON-lines metrics of a checkpoint live: next to it, `<stem>.metrics.jsonl`."""
    p = Path(out)
    return p.with_name(p.stem + ".metrics.jsonl")


# ---------------------------------------------------------------- the run

REPLAN_EVERY = 0.05
"""Re-plan a time-budgeted run after each further 5% of its expected step time (at the measured pace)."""
FIRST_REPLAN_STEP = 3
"""A time-budgeted run's plan is first checked at this step of each phase, from the cost of its steps after
the first (which pays one-time costs)."""


@dataclass
class _Run:
    """Explicit state of one training run (what a checkpoint holds, plus live objects)."""

    space: Space
    data_spec: str
    ds: Dataset
    cfg: TrainConfig
    out: Path
    device: torch.device
    dist: DistContext
    model: Supernet
    iters_per_epoch: int = 1
    pos: Position = field(default_factory=Position)
    teacher: StaticNet | None = None
    optimizer: torch.optim.Optimizer | None = None
    schedule: CosineSchedule | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0  # training seconds over all invocations
    images_seen: int = 0
    train_seconds: float = 0.0  # this invocation, training steps only
    plan: Plan | None = None
    bar: Any = None
    deadline: float | None = None  # perf_counter time the run must end by (time-budgeted fresh runs)
    phase_time: float = 0.0  # this phase's steps in this invocation, and their seconds after the first (re-planning)
    phase_steps: int = 0
    next_replan: int = FIRST_REPLAN_STEP  # the phase step (in this invocation) at which the plan is checked next
    cost_ratio: float = 1.0  # measured / probed cost per iteration (the bar's pace)
    replans: int = 0
    save_s: float = 0.5  # measured cost of one checkpoint
    init: dict[str, Any] | None = None  # `--init` transfer report (which tensors were copied, which fresh)
    ema: WeightEMA | None = None  # the weights' moving average while training runs (`ema_halflife_epochs`)

    @property
    def finished(self) -> bool:
        return self.pos.phase_index >= len(self.cfg.phases)

    @property
    def phase(self) -> PhaseConfig:
        return self.cfg.phases[min(self.pos.phase_index, len(self.cfg.phases) - 1)]

    @property
    def epochs(self) -> float:
        return epochs_done(self.cfg, self.pos, self.iters_per_epoch)

    def meta(self) -> SupernetMeta:
        return SupernetMeta(
            space=self.space.model_dump(mode="json"),
            data=self.data_spec,
            data_fingerprint=self.ds.fingerprint,
            config=self.cfg.model_dump(mode="json"),
            phase="finished" if self.finished else self.phase.name,
            epoch=self.epochs,
            finished=self.finished,
            metrics=self.metrics,
        )

    def state(self) -> dict[str, Any]:
        return {
            "meta": self.meta().model_dump(mode="json"),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "teacher": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()} if self.teacher else None,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None and not self.finished else None,
            "scheduler": self.schedule.state_dict() if self.schedule is not None and not self.finished else None,
            "position": self.pos.to_dict(),
            "rng": rng_state(),
            "history": self.history,
            "elapsed": self.elapsed,
            "init": self.init,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def save(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out, self.state())

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(metrics_path(self.out), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def _start_phase(run: _Run) -> None:
    """Fresh optimizer and schedule for the current phase (OFA's phases are separate jobs)."""
    cfg, p = run.cfg, run.phase
    run.optimizer = make_optimizer(run.model, p.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    total = phase_iters(cfg, run.pos.phase_index, run.iters_per_epoch)
    run.schedule = CosineSchedule(p.lr, total, round(p.warmup_epochs * run.iters_per_epoch))


def _sync_buffers(run: _Run) -> None:
    """Data-parallel: BN running statistics drift per rank (each sees its own batches); take rank 0's,
    so the teacher, the checkpoint and every rank agree."""
    if run.dist.active:
        import torch.distributed as dist

        for b in run.model.buffers():
            dist.broadcast(b, src=0)


def _phase_start_actions(run: _Run) -> None:
    """Once, at batch 0 of epoch 0 of a phase (re-done identically if a resume lands here)."""
    _sync_buffers(run)
    if run.phase.teacher == "frozen" and run.teacher is None and run.cfg.kd_weight > 0:
        run.teacher = make_teacher(run.model, run.device)
    if run.phase.reorder_channels:
        run.model.reorder_channels()  # optimizer is fresh: no stale momentum survives the permutation
        if run.ema is not None:
            run.ema.reset(run.model)  # the average of unpermuted weights would mix unrelated channels


def _evaluate(run: _Run, calib: torch.Tensor) -> dict[str, Any]:
    """Smallest, largest and the fixed random subnets, each BN-recalibrated (rank 0 only)."""
    accs: dict[str, float] = {}
    subnets: dict[str, Any] = {}
    for name, sub in eval_subnets(run.space, run.cfg.eval_subnets, run.cfg.seed):
        accs[name] = evaluate_subnet(run.model, sub, run.ds, calib=calib, device=run.device, batch_size=run.cfg.eval_batch_size)
        subnets[name] = sub.model_dump()
    return {"acc": accs, "subnets": subnets}


def _progress_bar(run: _Run, enabled: bool):
    """One bar for the whole run, in planned seconds of work: its 'remaining' is the run's ETA."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    plan = run.plan
    total = round(plan.train_s + plan.eval_s, 1) if plan is not None else None
    return tqdm(total=total, desc="train", file=sys.stderr, leave=False, dynamic_ncols=True, disable=not enabled,
                unit="s", bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining} left{postfix}]",
                mininterval=0.1 if tty else 30.0)  # logs get few lines


def _phase_iter(run: _Run) -> int:
    """Steps done in the current phase."""
    return run.pos.epoch * run.iters_per_epoch + run.pos.batch


def _train_epoch(run: _Run, it: BatchIterator, ddp: nn.Module, calib: torch.Tensor, progress: bool) -> None:
    """One epoch of the current phase (what is left of it after a resume), then its end (`_end_epoch`).
    The phase is read once: a re-plan during the epoch changes only the epochs, not what a step does."""
    phase, index = run.phase, run.pos.phase_index
    it.set_epoch(index * 100_003 + run.pos.epoch)
    cost = run.plan.cost(phase.name) if run.plan is not None else 0.0
    bar = run.bar
    if bar is not None:
        n_epochs = phase_epoch_count(run.cfg, index, run.iters_per_epoch)
        bar.set_description_str(f"{phase.name} {run.pos.epoch + 1}/{n_epochs}", refresh=False)
    loss_sum, loss_n, images_epoch = 0.0, 0, 0
    t_epoch = last_ckpt = time.perf_counter()
    for xb, yb in it.iter_from(run.pos.batch):
        if _phase_iter(run) >= phase_iters(run.cfg, index, run.iters_per_epoch):
            break
        t0 = time.perf_counter()
        step_value, lr = _train_step(run, phase, xb, yb, ddp)
        dt = time.perf_counter() - t0
        n_img = xb.shape[0] * run.dist.world_size
        _count_step(run, dt, n_img)
        images_epoch += n_img
        loss_sum += step_value
        loss_n += 1
        if bar is not None:
            bar.update(min(cost * run.cost_ratio, max(bar.total - bar.n, 0.0)))
            bar.set_postfix_str(f", loss {step_value:.3f}, lr {lr:.4f}, {n_img / max(dt, 1e-9):.0f} img/s", refresh=False)
        if run.pos.batch < len(it) and _checkpoint_due(run.cfg, run.pos.batch, time.perf_counter() - last_ckpt):
            run.save()
            last_ckpt = time.perf_counter()
    _end_epoch(run, phase, calib, progress, loss=loss_sum / max(loss_n, 1), images=images_epoch, t_epoch=t_epoch)


def _train_step(run: _Run, phase: PhaseConfig, xb: torch.Tensor, yb: torch.Tensor, ddp: nn.Module) -> tuple[float, float]:
    """One optimizer step: the step's subnets and their views, forward and backward of each, the
    update (and the weights' average). Returns the step's loss (mean over ranks) and its learning rate."""
    cfg, device, index = run.cfg, run.device, run.pos.phase_index
    assert run.optimizer is not None and run.schedule is not None
    resolution, subs = sample_step(run.space, phase, index, cfg.seed, run.pos.epoch, run.pos.batch)
    gen = aug_generator(cfg.seed, run.pos, run.dist.rank)
    x = step_inputs(xb, resolution, run.ds, cfg, phase, len(subs), gen, device)
    run.optimizer.zero_grad(set_to_none=True)
    teach = _phase_iter(run) >= cfg.kd_start * phase_iters(cfg, index, run.iters_per_epoch)
    # bf16 on CUDA only: under CPU autocast a sandwich step took 1.1x as long as in fp32 with avx512_bf16 (AMD EPYC)
    # and 1.7x with AMX (Intel Xeon): scripts/bench_cpu_bf16.py, BENCHMARKS.md
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        mean_loss = step_loss(run.model, ddp, x, yb, subs, phase, cfg, run.teacher, teach,
                              train_largest=trains_largest(phase, run.pos.batch))
    step_value = float(run.dist.mean(mean_loss))
    if not np.isfinite(step_value):
        raise TrainingDiverged(
            f"loss became {step_value} in phase {phase.name}, epoch {run.pos.epoch + 1}, batch {run.pos.batch + 1}; "
            f"training stopped and the last good checkpoint {run.out} is kept "
            f"(lower the phase's lr ('phases: {{{phase.name}: {{lr: ...}}}}') with --config and train to a new --out)"
        )
    lr = run.schedule.apply(run.optimizer)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.schedule.step()
    run.pos.batch += 1
    return step_value, lr


def _count_step(run: _Run, dt: float, n_img: int) -> None:
    """A finished step's seconds and images in the run's totals, then the plan checked against them."""
    run.train_seconds += dt
    run.elapsed += dt
    run.phase_steps += 1
    if run.phase_steps > 1:  # the phase's first step pays one-time costs (new shapes; on CUDA, kernel selection)
        run.phase_time += dt
    _replan(run)
    run.images_seen += n_img


def _checkpoint_due(cfg: TrainConfig, batch: int, since_last_s: float) -> bool:
    """A mid-epoch checkpoint every `checkpoint_every_iters` steps or `checkpoint_every_seconds`."""
    return bool((cfg.checkpoint_every_iters and batch % cfg.checkpoint_every_iters == 0)
                or (cfg.checkpoint_every_seconds and since_last_s >= cfg.checkpoint_every_seconds))


def _end_epoch(run: _Run, phase: PhaseConfig, calib: torch.Tensor, progress: bool, *, loss: float, images: int,
               t_epoch: float) -> None:
    """The end of an epoch: buffers synced, the evaluation if one is due, the position advanced, a
    checkpoint, then the epoch's metrics logged (a checkpoint never points past what the log shows)."""
    _sync_buffers(run)
    seconds = time.perf_counter() - t_epoch
    cfg, index = run.cfg, run.pos.phase_index  # a re-plan may have changed the epochs
    finished_phase = _phase_iter(run) >= phase_iters(cfg, index, run.iters_per_epoch)
    last_phase = skip_empty_phases(cfg, Position(index + 1, 0, 0), run.iters_per_epoch).phase_index >= len(cfg.phases)
    record: dict[str, Any] = {
        "type": "epoch", "phase": phase.name, "phase_epoch": run.pos.epoch + 1,
        "epoch": epochs_done(cfg, run.pos, run.iters_per_epoch),
        "loss": loss, "lr": run.schedule.lr_at(max(run.schedule.step_count - 1, 0)),
        "images_per_s": images / max(seconds, 1e-9), "seconds": seconds,
    }
    if finished_phase and last_phase and run.ema is not None:  # every rank: the finished supernet is the average
        run.ema.copy_to(run.model)
        run.ema = None
    eval_record = None
    if finished_phase and run.dist.is_main and (cfg.eval_at == "phase_end" or last_phase):
        eval_record = _evaluate_phase(run, phase, calib, record["epoch"])
    run.pos = Position(index, run.pos.epoch + 1, 0)
    if finished_phase:
        run.pos = skip_empty_phases(cfg, Position(index + 1, 0, 0), run.iters_per_epoch)
        run.phase_time, run.phase_steps, run.next_replan = 0.0, 0, FIRST_REPLAN_STEP
    run.save()
    run.log_metrics(record)
    if eval_record is not None:
        run.log_metrics(eval_record)
        if progress:
            accs = ", ".join(f"{k} {v:.3f}" for k, v in eval_record["acc"].items())
            msg = (f"[{phase.name}] epoch {record['epoch']:g}/{cfg.total_epochs:g} loss {record['loss']:.3f} "
                   f"{record['images_per_s']:.0f} img/s | val acc: {accs}")
            (run.bar.write(msg, file=sys.stderr) if run.bar is not None else print(msg, file=sys.stderr, flush=True))


def _evaluate_phase(run: _Run, phase: PhaseConfig, calib: torch.Tensor, epoch: float) -> dict[str, Any]:
    """(rank 0) The fixed subnets evaluated at the end of a phase (with the weights' average where one
    is kept), recorded in the run's metrics and history; the progress bar moves by the evaluation's share."""
    t_eval = time.perf_counter()
    with run.ema.applied(run.model) if run.ema is not None else contextlib.nullcontext():
        ev = _evaluate(run, calib)
    run.metrics = {"phase": phase.name, "epoch": epoch, **ev}
    record = {"type": "eval", "seconds": time.perf_counter() - t_eval, **run.metrics}
    run.history.append(run.metrics)
    if run.bar is not None and run.plan is not None:
        cfg = run.cfg
        share = run.plan.eval_s / (1 if cfg.eval_at == "end" else max(1, sum(p.epochs > 0 for p in cfg.phases)))
        run.bar.update(min(share, max(run.bar.total - run.bar.n, 0.0)))
    return record


LONG_RUN_S = 3600.0
"""Runs planned longer than this on a CPU, without a time budget, are warned about before they start."""



def _replan(run: _Run) -> None:
    """Keep a time-budgeted run on its deadline: when the steps of this phase run slower or faster
    than the probe measured (a busy machine, different subnets), scale the iterations still to
    come, of this phase and the later ones, so that the run ends on time. The current phase's
    cosine is stretched or shrunk to its new length. Data-parallel ranks apply rank 0's decision."""
    plan = run.plan
    if run.deadline is None or plan is None or run.phase_steps != run.next_replan:
        return
    # the next check comes after another REPLAN_EVERY of the planned step time at the *measured* cost, so
    # a probe that was far too optimistic is caught after 3 steps, not after 5% of its iterations; rank 0
    # decides it, so every rank checks (and meets in the broadcast) at the same step
    decision = None
    if run.dist.is_main:
        every = max(1, int(REPLAN_EVERY * plan.train_s / max(_measured_cost(run), 1e-9)))
        decision = (_replan_decision(run, plan), run.phase_steps + every)
    change, run.next_replan = _broadcast_plan(run.dist, decision)
    if change is None:
        return
    epochs, ratio, bar_left = change
    run.cfg = run.cfg.with_epochs(epochs, keep_warmup=run.phase.name)
    run.cost_ratio = ratio
    if run.bar is not None:
        run.bar.total = round(run.bar.n + bar_left, 1)
    assert run.schedule is not None
    run.schedule.total = max(1, phase_iters(run.cfg, run.pos.phase_index, run.iters_per_epoch))
    run.replans += 1


def _measured_cost(run: _Run) -> float:
    """Seconds per step of this phase so far in this invocation, its first step left out."""
    return run.phase_time / max(run.phase_steps - 1, 1)


def _replan_decision(run: _Run, plan: Plan) -> tuple[dict[str, float], float, float] | None:
    """(new epochs of the phases left, measured/planned cost, seconds left) or None to keep the plan."""
    assert run.deadline is not None
    cfg, ipe, index = run.cfg, run.iters_per_epoch, run.pos.phase_index
    done_here, here = _phase_iter(run), plan.phase_cost(run.phase.name)
    iters_here = phase_iters(cfg, index, ipe)
    # actual / planned seconds of the steps timed so far (this invocation's, its first left out): at the
    # planned price of *those* steps, so a phase's cheaper label-only start does not pass for a fast machine
    timed = span_seconds(here, cfg.kd_start, iters_here, done_here - run.phase_steps + 1, done_here)
    ratio = run.phase_time / timed if timed > 0 else 1.0
    left_iters = {i: (phase_iters(cfg, i, ipe) - (done_here if i == index else 0)) for i in range(index, len(cfg.phases))}
    expected = ratio * (span_seconds(here, cfg.kd_start, iters_here, done_here, iters_here)
                        + sum(n * plan.cost(cfg.phases[i].name) for i, n in left_iters.items() if i != index))
    evals_left = plan.eval_s if cfg.eval_at == "end" else plan.eval_s * (len(cfg.phases) - index) / len(cfg.phases)
    saves_left = sum(math.ceil(cfg.phases[i].epochs) for i in range(index, len(cfg.phases))) - run.pos.epoch + 1
    available = run.deadline - time.perf_counter() - evals_left - saves_left * run.save_s
    if expected <= 0 or abs(available / expected - 1) < 0.03:
        return None
    factor = max(available, 0.0) / expected
    epochs = {}
    for i, n in left_iters.items():
        if n <= 0 and i != index:
            continue  # a phase that trains nothing stays that way
        start = done_here if i == index else 0
        epochs[cfg.phases[i].name] = max(start + 1, start + int(n * factor)) / ipe
    return epochs, ratio, max(available, 0.0) + evals_left


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict (names and values): equal digests mean identical weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _result(run: _Run, seconds: float) -> dict[str, Any]:
    acc = run.metrics.get("acc", {})
    digest = weights_digest(run.model)
    in_sync = True
    if run.dist.active:  # data-parallel: every rank must hold the same weights at the end
        import torch.distributed as dist

        digests: list[Any] = [None] * run.dist.world_size
        dist.all_gather_object(digests, digest)
        in_sync = len(set(digests)) == 1
    return {
        "checkpoint": str(run.out.resolve()),
        "metrics": str(metrics_path(run.out).resolve()),
        "space": run.space.name,
        "epochs": run.epochs,
        "finished": run.finished,
        "val_acc_max": acc.get("largest"),
        "val_acc_min": acc.get("smallest"),
        "val_acc": acc,
        "seconds": round(seconds, 3),
        "planned_epochs": run.cfg.planned_epochs,
        "time_budget_s": run.cfg.time_budget_s,
        "schedule": run.cfg.schedule,
        "plan": run.plan.model_dump(mode="json") if run.plan is not None else None,  # as first planned
        "replans": run.replans,
        "train_seconds_total": round(run.elapsed, 3),
        "images_per_s": round(run.images_seen / run.train_seconds, 1) if run.train_seconds > 0 else None,
        "world_size": run.dist.world_size,
        "weights_sha256": digest,
        "ranks_in_sync": in_sync,
        "device": str(run.device),
        "cpu_threads": torch.get_num_threads() if run.device.type == "cpu" else None,
        "init": run.init,
    }


def make_plan(run: _Run, costs: dict[str, float], eval_costs: list[SubnetEvalCost], time_budget_s: float | None,
              spent_s: float, save_s: float, label_costs: dict[str, float] | None = None) -> tuple[TrainConfig, Plan]:
    """Epochs per phase that fit the budget (or the configured ones) and what the run will cost. `costs`: each
    phase's mean per iteration; `label_costs`: the label-only start's price where it differs (`probe_costs`)."""
    label_costs = label_costs or {}
    cfg = run.cfg
    calib_images = min(cfg.calib_images, run.ds.train_x.shape[0])
    val_images = int(run.ds.val_x.shape[0])
    kept = cfg.eval_subnets
    if time_budget_s is not None and eval_costs:
        kept = min(kept, eval_subnets_within(eval_costs, calib_images, val_images, EVAL_SHARE * time_budget_s))
    dropped = cfg.eval_subnets - kept
    cfg = cfg.model_copy(update={"eval_subnets": kept})
    eval_cfg = cfg.model_copy(update={"eval_at": "end"}) if time_budget_s is not None else cfg
    eval_s = estimate_eval_seconds(eval_cfg, eval_costs[:2 + kept], calib_images, val_images)
    if time_budget_s is not None:
        left = time_budget_s - spent_s - eval_s
        if left <= 0:
            raise UserError(f"--time-budget: the budget is used up by setup ({spent_s:.1f} s so far) and the evaluation "
                            f"at the end (about {eval_s:.1f} s) alone, of {format_duration(time_budget_s)}; give a longer budget")
        cfg = plan_epochs_with_saves(cfg, costs, run.iters_per_epoch, left, save_s)
        cfg = cfg.model_copy(update={"time_budget_s": time_budget_s, "eval_at": "end"})
    cfg = cfg.for_planned_epochs()
    saves = sum(math.ceil(p.epochs) for p in cfg.phases) + 1
    plan = Plan(time_budget_s=time_budget_s, planned_epochs=cfg.planned_epochs, iters_per_epoch=run.iters_per_epoch,
                costs=[PhaseCost(name=p.name, seconds_per_iter=costs[p.name], label_seconds_per_iter=label_costs.get(p.name))
                       for p in cfg.phases],
                train_s=phase_seconds(cfg, costs, run.iters_per_epoch), eval_s=eval_s, eval_subnets_dropped=dropped,
                overhead_s=spent_s + saves * save_s,
                cpu_threads=torch.get_num_threads() if run.device.type == "cpu" else None)
    return cfg, plan


def _broadcast_plan(dctx: DistContext, payload: Any) -> Any:
    """Every rank trains rank 0's plan (probes differ slightly per process)."""
    if not dctx.active:
        return payload
    import torch.distributed as dist

    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train_supernet(
    space: Space | str,
    data: str,
    out: str | Path,
    *,
    config: TrainConfig | str | Path | dict | None = None,
    epochs_scale: float = 1.0,
    time_budget: float | str | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    bar: bool | None = None,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or, with resume=True, continue) a supernet and return the SPEC `train --json` keys:
    checkpoint, epochs, val_acc_max, val_acc_min, seconds, planned_epochs, time_budget_s (and more).

    `time_budget` ('45m', '2h', seconds) plans the phases' epochs so the whole call, evaluation
    included, ends within it; the plan and ETA are printed before training starts (`progress`);
    `bar` (default: `progress`) adds a progress bar whose time left is the whole run's. Under torchrun
    every process calls this; only rank 0 writes. Raises UserError for bad input and
    TrainingDiverged (the last good checkpoint kept) when the loss stops being finite.
    `init` (transfer): a CKPT of a supernet with the same block structure, trained on other data; every
    tensor whose role and shape match is copied, the classifier starts fresh, and the defaults are the
    short, low-lr transfer_config; the result's `init` lists the copied and the fresh tensors.
    """
    t_start = time.perf_counter()
    budget_s = parse_duration(time_budget) if time_budget is not None else None
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    with cpu_threads(dev) as threads:
        dctx = init_distributed(dev)
        clean = False
        try:
            result = _train(space, data, Path(out), config, epochs_scale, budget_s, dev, dctx, resume, progress,
                            progress if bar is None else bar, t_start, init, threads)
            clean = True
            return result
        finally:
            dctx.close(clean)


def _train(space_spec: Space | str, data: str, out: Path, config: Any, epochs_scale: float, budget_s: float | None,
           device: torch.device, dctx: DistContext, resume: bool, progress: bool, show_bar: bool,
           t_start: float, init: str | Path | None = None, threads: CpuThreads | None = None) -> dict[str, Any]:
    space0 = load_space(space_spec)
    _check_args(out, epochs_scale, budget_s, resume, init)
    init_src = load_init(init) if init is not None else None
    state, meta = read_resume(out, space0) if resume else (None, None)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a checkpoint file path")

    ds = load_dataset(data)
    space = with_classes(space0, ds.num_classes)
    if state is not None and meta is not None:
        cfg = resumed_config(out, meta, ds, space, data, config, epochs_scale, budget_s)
    else:
        cfg = resolve_config(space, data, config, transfer=init is not None).scaled(epochs_scale)
    check_phases(space, cfg)
    dctx.barrier()  # every rank has checked --out before rank 0 creates it

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = Supernet(space).to(device=device, memory_format=memory_format_for(device))
    if cfg.zero_init_residual and state is None:
        model.zero_init_residual()  # before --init copies its tensors (a transferred block keeps its scale)

    world = dctx.world_size
    per_rank = -(-ds.train_x.shape[0] // world)
    it = BatchIterator(ds.train_x, ds.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed,
                       drop_last=per_rank >= cfg.batch_size, rank=dctx.rank, world_size=world, device=device)
    run = _Run(space=space, data_spec=data, ds=ds, cfg=cfg, out=out, device=device, dist=dctx, model=model,
               iters_per_epoch=len(it))

    if init_src is not None:
        report = transfer_weights(model, init_src[0], str(init), init_src[1])
        run.init = report.to_dict()
        if progress and dctx.is_main:
            print(report.summary(), file=sys.stderr, flush=True)
    if cfg.ema_halflife_epochs > 0:
        run.ema = WeightEMA(model, step_decay(cfg.ema_halflife_epochs, run.iters_per_epoch))
    if state is not None and meta is not None:
        _restore(run, state, meta, t_start, progress)
    else:
        _start_fresh(run, budget_s, t_start, progress)

    ddp = _data_parallel(model, dctx, device)
    calib = calibration_subset(ds, n=run.cfg.calib_images)
    model.train()
    run.bar = _progress_bar(run, show_bar and dctx.is_main) if not run.finished and show_bar and dctx.is_main else None
    try:
        while not run.finished:
            if run.pos.epoch == 0 and run.pos.batch == 0:
                _phase_start_actions(run)
                _start_phase(run)
            if threads is not None:
                threads.recheck()  # between epochs: fewer threads if another job took cores since
            _train_epoch(run, it, ddp, calib, progress)
    finally:
        if run.bar is not None:
            run.bar.close()
    dctx.barrier()
    return _result(run, time.perf_counter() - t_start)


def _check_args(out: Path, epochs_scale: float, budget_s: float | None, resume: bool, init: str | Path | None) -> None:
    """The argument combinations refused before anything is read."""
    if not (isinstance(epochs_scale, (int, float)) and epochs_scale > 0 and np.isfinite(epochs_scale)):
        raise UserError(f"--epochs-scale must be a positive number, got {epochs_scale}")
    if budget_s is not None and epochs_scale != 1.0:
        raise UserError("--time-budget and --epochs-scale both set the epochs; give one of them")
    if init is not None and resume:
        raise UserError("--init starts a new run from another supernet; --resume continues the run at --out "
                        "(which keeps what --init gave it): give one of them")
    if not resume and out.exists():
        raise UserError(f"--out {out} already exists; pass --resume to continue it, or choose a new path")


def _restore(run: _Run, state: dict[str, Any], meta: SupernetMeta, t_start: float, progress: bool) -> None:
    """A resumed run's weights, average, position, history, teacher, optimizer and random state,
    exactly as the checkpoint left them; the stored plan is kept and only the ETA is new."""
    run.model.load_state_dict(state["model"])
    if run.ema is not None:
        if state.get("ema") is not None:
            run.ema.load_state_dict(state["ema"])
        else:  # a finished checkpoint holds the average as its model; a checkpoint of step 0 has none yet
            run.ema.reset(run.model)
    run.init = state.get("init")
    run.pos = Position(**state["position"])
    run.history = list(state.get("history") or [])
    run.metrics = dict(meta.metrics)
    run.elapsed = float(state.get("elapsed", 0.0))
    if state.get("teacher") is not None:
        run.teacher = freeze(StaticNet(build_plan(run.space, run.space.largest())), run.device)
        run.teacher.load_state_dict(state["teacher"])
    if not run.finished:
        _start_phase(run)
        if state.get("optimizer") is not None and (run.pos.epoch > 0 or run.pos.batch > 0):
            assert run.optimizer is not None and run.schedule is not None
            run.optimizer.load_state_dict(state["optimizer"])
            run.schedule.load_state_dict(state["scheduler"])
        _plan_run(run, None, t_start, save_s=0.0, progress=progress)
    set_rng_state(state["rng"])
    run.log_metrics({"type": "resume", "epoch": run.epochs, "position": run.pos.to_dict()})


def _start_fresh(run: _Run, budget_s: float | None, t_start: float, progress: bool) -> None:
    """A new run: planned before anything is written (a refused plan leaves no checkpoint, and the
    first one holds the plan), an empty metrics log, and a first checkpoint, so that `--resume`
    works from the very start and a loss that stops being finite keeps it."""
    run.save_s = _save_seconds(run)
    _plan_run(run, budget_s, t_start, save_s=run.save_s, progress=progress)
    if budget_s is not None:
        run.deadline = t_start + budget_s
    run.pos = skip_empty_phases(run.cfg, Position(), run.iters_per_epoch)
    if run.dist.is_main:
        metrics_path(run.out).parent.mkdir(parents=True, exist_ok=True)
        metrics_path(run.out).write_text("", encoding="utf-8")
    run.save()


def _data_parallel(model: Supernet, dctx: DistContext, device: torch.device) -> nn.Module:
    """The module a step calls: the supernet itself, or under torchrun its DistributedDataParallel."""
    if not dctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,  # each step trains one subnet: the rest of the weights get no gradient
    )


def _save_seconds(run: _Run) -> float:
    """What one checkpoint costs, measured by serialising the state to memory (nothing is written)."""
    import io

    t = time.perf_counter()
    torch.save(run.state(), io.BytesIO())
    return time.perf_counter() - t


def _plan_run(run: _Run, budget_s: float | None, t_start: float, *, save_s: float, progress: bool) -> None:
    """Measure what a step of each phase costs here, fit the epochs to the budget (fresh runs with a
    budget only), and print the plan and the expected end. Rank 0 plans; every rank trains its plan
    (or raises its error, so no rank waits for a plan that never comes)."""
    payload: Any = None
    costs: dict[str, float] = {}
    if run.dist.is_main:
        costs, eval_costs, label_costs = probe_costs(run.model, run.cfg, run.space, run.ds, run.device)
        spent = time.perf_counter() - t_start
        try:
            cfg, plan = make_plan(run, costs, eval_costs, budget_s, spent, save_s, label_costs)
            payload = ("ok", cfg.model_dump(mode="json"), plan.model_dump(mode="json"), costs)
        except UserError as e:
            payload = ("error", str(e), None, None)
    payload = _broadcast_plan(run.dist, payload)
    if payload[0] == "error":
        raise UserError(payload[1])
    _, cfg_json, plan_json, costs = payload
    before = run.cfg
    run.cfg = TrainConfig.model_validate(cfg_json)
    run.plan = Plan.model_validate(plan_json)
    if run.pos.phase_index > 0 or run.pos.epoch > 0 or run.pos.batch > 0:  # resumed: what is left
        done = sum(round(p.epochs * run.iters_per_epoch) * costs[p.name] for p in run.cfg.phases[: run.pos.phase_index])
        done += span_seconds(run.plan.phase_cost(run.phase.name), run.cfg.kd_start,
                             phase_iters(run.cfg, run.pos.phase_index, run.iters_per_epoch), 0, _phase_iter(run))
        run.plan = run.plan.model_copy(update={"train_s": max(run.plan.train_s - done, 0.0)})
    if progress and run.dist.is_main:
        lines = run.plan.lines()
        if budget_s is None and run.cfg.time_budget_s is not None:  # a resumed budgeted run: the stored plan
            lines[0] = (f"plan: resuming a run planned for --time-budget {format_duration(run.cfg.time_budget_s)} "
                        "(its epochs are kept; the deadline of the first run is not)")
        if any(getattr(run.cfg, k) != getattr(before, k) for k in SHORT_RUN_OFF):
            lines.append(f"plan: {run.cfg.total_epochs:.1f} epochs in all, fewer than regularize_from_epochs "
                         f"{before.regularize_from_epochs:g}: no label smoothing, one shared view per step, no cutout "
                         "(set label_smoothing, augment_per_subnet or cutout in --config to keep them)")
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        if budget_s is None and run.cfg.time_budget_s is None and run.device.type == "cpu" and run.plan.total_s > LONG_RUN_S:
            print(f"warning: this training is expected to take {format_duration(run.plan.total_s)} on this CPU; pass "
                  "--time-budget (for example --time-budget 45m) to plan it for the time you have, or train on a GPU",
                  file=sys.stderr, flush=True)
