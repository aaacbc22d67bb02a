"""`train_supernet`: the whole progressive-shrinking schedule as one resumable call.

The run is a sequence of positions (phase, epoch in phase, next batch). Everything a step
does is a function of that position and the saved state (subnets and augmentation are
drawn from generators seeded by the position; global RNGs are checkpointed), so a run
killed at any point and resumed from its last checkpoint ends exactly where an
uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
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

from hwnas.data import BatchIterator, Dataset, augment_batch, calibration_subset, load_dataset
from hwnas.errors import TrainingDiverged, UserError
from hwnas.space import build_plan, load_space, with_classes
from hwnas.space.models import Space
from hwnas.supernet import StaticNet, Supernet
from hwnas.train.checkpoint import SupernetMeta, check_space, load_checkpoint, read_meta, save_checkpoint
from hwnas.train.config import PHASES, TrainConfig, resolve_config
from hwnas.train.distributed import DistContext, init_distributed, resolve_device
from hwnas.train.evaluate import evaluate_subnet
from hwnas.train.losses import training_loss
from hwnas.train.phases import eval_subnets, sample_step
from hwnas.train.schedule import CosineSchedule, make_optimizer


def metrics_path(out: str | os.PathLike[str]) -> Path:
    """Where the JSON-lines metrics of a checkpoint live: next to it, `<stem>.metrics.jsonl`."""
    p = Path(out)
    return p.with_name(p.stem + ".metrics.jsonl")


@dataclass
class Position:
    """Where the schedule stands: the next batch to run."""

    phase_index: int = 0
    epoch: int = 0  # within the phase
    batch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"phase_index": self.phase_index, "epoch": self.epoch, "batch": self.batch}


def epochs_done(cfg: TrainConfig, pos: Position) -> int:
    return sum(cfg.phases.get(n).epochs for n in PHASES[: pos.phase_index]) + pos.epoch


def _skip_empty_phases(cfg: TrainConfig, pos: Position) -> Position:
    while pos.phase_index < len(PHASES) and pos.epoch >= cfg.phases.get(PHASES[pos.phase_index]).epochs:
        pos = Position(pos.phase_index + 1, 0, 0)
    return pos


# ---------------------------------------------------------------- RNG state as plain data


def _rng_state() -> dict[str, Any]:
    kind, keys, npos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(npos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _aug_generator(seed: int, pos: Position, rank: int) -> torch.Generator:
    seq = np.random.SeedSequence([seed, pos.phase_index, pos.epoch, pos.batch, rank, 1])
    return torch.Generator().manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))


# ---------------------------------------------------------------- the run


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
    pos: Position = field(default_factory=Position)
    teacher: StaticNet | None = None
    optimizer: torch.optim.Optimizer | None = None
    schedule: CosineSchedule | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0  # training seconds over all invocations
    images_seen: int = 0
    train_seconds: float = 0.0  # this invocation, training steps only

    @property
    def finished(self) -> bool:
        return self.pos.phase_index >= len(PHASES)

    @property
    def phase(self) -> str:
        return PHASES[min(self.pos.phase_index, len(PHASES) - 1)]

    def meta(self) -> SupernetMeta:
        return SupernetMeta(
            space=self.space.model_dump(mode="json"),
            data=self.data_spec,
            data_fingerprint=self.ds.fingerprint,
            config=self.cfg.model_dump(mode="json"),
            phase="finished" if self.finished else self.phase,
            epoch=epochs_done(self.cfg, self.pos),
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
            "rng": _rng_state(),
            "history": self.history,
            "elapsed": self.elapsed,
        }

    def save(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out, self.state())

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(metrics_path(self.out), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def _phase_iters(cfg: TrainConfig, phase: str, iters_per_epoch: int) -> tuple[int, int]:
    p = cfg.phases.get(phase)
    return p.epochs * iters_per_epoch, round(p.warmup_epochs * iters_per_epoch)


def _start_phase(run: _Run, iters_per_epoch: int) -> None:
    """Fresh optimizer and schedule for the current phase (OFA's phases are separate jobs)."""
    cfg, phase = run.cfg, run.phase
    p = cfg.phases.get(phase)
    run.optimizer = make_optimizer(run.model, p.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    total, warm = _phase_iters(cfg, phase, iters_per_epoch)
    run.schedule = CosineSchedule(p.lr, total, warm)


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
    if run.pos.phase_index >= 1 and run.teacher is None and run.cfg.kd_weight > 0:
        run.teacher = _make_teacher(run.model, run.device)
    if run.phase in ("expand1", "expand2"):
        run.model.reorder_channels()  # optimizer is fresh: no stale momentum survives the permutation


def _make_teacher(model: Supernet, device: torch.device) -> StaticNet:
    teacher = model.extract(model.space.largest())
    return _freeze(teacher, device)


def _freeze(net: nn.Module, device: torch.device) -> StaticNet:
    net.to(device=device, memory_format=torch.channels_last)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net  # type: ignore[return-value]


def _evaluate(run: _Run, calib: torch.Tensor) -> dict[str, Any]:
    """Smallest, largest and the fixed random subnets, each BN-recalibrated (rank 0 only)."""
    accs: dict[str, float] = {}
    subnets: dict[str, Any] = {}
    for name, sub in eval_subnets(run.space, run.cfg.eval_subnets, run.cfg.seed):
        accs[name] = evaluate_subnet(run.model, sub, run.ds, calib=calib, device=run.device, batch_size=run.cfg.eval_batch_size)
        subnets[name] = sub.model_dump()
    return {"acc": accs, "subnets": subnets}


def _progress_bar(run: _Run, total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    p = run.cfg.phases.get(run.phase)
    desc = f"{run.phase} {run.pos.epoch + 1}/{p.epochs}"
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not enabled, unit="it", mininterval=0.1 if tty else 10.0)  # logs get few lines


def _train_epoch(run: _Run, it: BatchIterator, ddp: nn.Module, calib: torch.Tensor, progress: bool) -> None:
    cfg, device = run.cfg, run.device
    phase = run.phase
    pcfg = cfg.phases.get(phase)
    it.set_epoch(run.pos.phase_index * 100_003 + run.pos.epoch)
    n_batches = len(it)
    cuda = device.type == "cuda"
    bar = _progress_bar(run, n_batches, run.pos.batch, progress and run.dist.is_main)
    loss_sum, loss_n = 0.0, 0
    t_epoch = time.perf_counter()
    last_ckpt = time.perf_counter()
    images_epoch = 0
    assert run.optimizer is not None and run.schedule is not None
    try:
        for xb, yb in it.iter_from(run.pos.batch):
            t0 = time.perf_counter()
            resolution, subs = sample_step(run.space, phase, cfg.seed, run.pos.epoch, run.pos.batch, pcfg.subnets_per_step)
            gen = _aug_generator(cfg.seed, run.pos, run.dist.rank)
            x = augment_batch(xb, resolution, run.ds.mean, run.ds.std, train=True, generator=gen, flip=cfg.flip)
            x = x.contiguous(memory_format=torch.channels_last)  # 2-4x faster depthwise convs, CPU and GPU
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                teacher_logits = None
                if run.teacher is not None and cfg.kd_weight > 0:
                    with torch.no_grad():
                        teacher_logits = run.teacher(x).float()
                run.optimizer.zero_grad(set_to_none=True)
                total = torch.zeros((), device=device)
                for sub in subs:
                    run.model.set_active(sub)
                    logits = ddp(x)
                    loss = training_loss(logits, yb, teacher_logits, label_smoothing=cfg.label_smoothing,
                                         kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature)
                    loss.backward()  # gradients of all sampled subnets are summed: one optimizer step
                    total += loss.detach()
            step_loss = float(run.dist.mean(total / len(subs)))
            if not np.isfinite(step_loss):
                raise TrainingDiverged(
                    f"loss became {step_loss} in phase {phase}, epoch {run.pos.epoch + 1}, batch {run.pos.batch + 1}; "
                    f"training stopped and the last good checkpoint {run.out} is kept "
                    f"(lower phases.{phase}.lr with --config and train to a new --out)"
                )
            lr = run.schedule.apply(run.optimizer)
            run.optimizer.step()
            run.schedule.step()
            run.pos.batch += 1
            dt = time.perf_counter() - t0
            run.train_seconds += dt
            run.elapsed += dt
            n_img = xb.shape[0] * run.dist.world_size
            images_epoch += n_img
            run.images_seen += n_img
            loss_sum += step_loss
            loss_n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.4f}", img_s=f"{n_img / max(dt, 1e-9):.0f}", refresh=False)
            if run.pos.batch < n_batches and (
                (cfg.checkpoint_every_iters and run.pos.batch % cfg.checkpoint_every_iters == 0)
                or (cfg.checkpoint_every_seconds and time.perf_counter() - last_ckpt >= cfg.checkpoint_every_seconds)
            ):
                run.save()
                last_ckpt = time.perf_counter()
    finally:
        bar.close()
    # end of epoch: evaluate at the end of a phase, advance, checkpoint, then log
    _sync_buffers(run)
    seconds = time.perf_counter() - t_epoch
    finished_phase = run.pos.epoch + 1 >= pcfg.epochs
    record: dict[str, Any] = {
        "type": "epoch", "phase": phase, "phase_epoch": run.pos.epoch + 1, "epoch": epochs_done(run.cfg, run.pos) + 1,
        "loss": loss_sum / max(loss_n, 1), "lr": run.schedule.lr_at(max(run.schedule.step_count - 1, 0)),
        "images_per_s": images_epoch / max(seconds, 1e-9), "seconds": seconds,
    }
    eval_record = None
    if finished_phase and run.dist.is_main:
        ev = _evaluate(run, calib)
        run.metrics = {"phase": phase, "epoch": record["epoch"], **ev}
        eval_record = {"type": "eval", **run.metrics}
        run.history.append(run.metrics)
    run.pos = Position(run.pos.phase_index, run.pos.epoch + 1, 0)
    if finished_phase:
        run.pos = _skip_empty_phases(run.cfg, Position(run.pos.phase_index + 1, 0, 0))
    run.save()
    run.log_metrics(record)
    if eval_record is not None:
        run.log_metrics(eval_record)
        if progress:
            accs = ", ".join(f"{k} {v:.3f}" for k, v in eval_record["acc"].items())
            print(f"[{phase}] epoch {record['epoch']}/{run.cfg.total_epochs} loss {record['loss']:.3f} "
                  f"{record['images_per_s']:.0f} img/s | val acc: {accs}", file=sys.stderr, flush=True)


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
        "epochs": epochs_done(run.cfg, run.pos),
        "finished": run.finished,
        "val_acc_max": acc.get("largest"),
        "val_acc_min": acc.get("smallest"),
        "val_acc": acc,
        "seconds": round(seconds, 3),
        "train_seconds_total": round(run.elapsed, 3),
        "images_per_s": round(run.images_seen / run.train_seconds, 1) if run.train_seconds > 0 else None,
        "world_size": run.dist.world_size,
        "weights_sha256": digest,
        "ranks_in_sync": in_sync,
        "device": str(run.device),
    }


def train_supernet(
    space: Space | str,
    data: str,
    out: str | Path,
    *,
    config: TrainConfig | str | Path | dict | None = None,
    epochs_scale: float = 1.0,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or, with resume=True, continue) a supernet with progressive shrinking and return the
    SPEC `train --json` keys: checkpoint, epochs, val_acc_max, val_acc_min, seconds (and more).

    Under torchrun every process calls this; only rank 0 writes. Raises UserError for bad input
    and TrainingDiverged (the last good checkpoint kept) when the loss stops being finite.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    threads = torch.get_num_threads()
    if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # One intra-op thread per process: these small convolutions gain little from more, and lose
        # up to 10x when the cores are shared (OpenMP spin-waits). Use torchrun for more cores.
        torch.set_num_threads(1)
    dctx = init_distributed(dev)
    try:
        return _train(space, data, Path(out), config, epochs_scale, dev, dctx, resume, progress, t_start)
    finally:
        dctx.close()
        torch.set_num_threads(threads)


def _train(space_spec: Space | str, data: str, out: Path, config: Any, epochs_scale: float, device: torch.device,
           dctx: DistContext, resume: bool, progress: bool, t_start: float) -> dict[str, Any]:
    space0 = load_space(space_spec)
    if not (isinstance(epochs_scale, (int, float)) and epochs_scale > 0 and np.isfinite(epochs_scale)):
        raise UserError(f"--epochs-scale must be a positive number, got {epochs_scale}")
    state = None
    if resume:
        if not out.exists():
            raise UserError(f"--resume: no checkpoint at {out}; run without --resume to start training there")
        state = load_checkpoint(out)
        meta = read_meta(out, state)
        ckpt_space = meta.get_space()
        check_space(out, ckpt_space, space0)
    elif out.exists():
        raise UserError(f"--out {out} already exists; pass --resume to continue it, or choose a new path")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a checkpoint file path")

    ds = load_dataset(data)
    space = with_classes(space0, ds.num_classes)
    if state is not None:
        if meta.data_fingerprint != ds.fingerprint:
            raise UserError(f"--resume: {out} was trained on different data ({meta.data!r}); pass the same --data")
        ckpt_cfg = TrainConfig.model_validate(meta.config)
        if config is not None or epochs_scale != 1.0:
            asked = resolve_config(space, data, config).scaled(epochs_scale)
            if asked != ckpt_cfg:
                raise UserError(f"--resume: --config/--epochs-scale differ from the config stored in {out}; "
                                "resume without them (the stored config is used) or start a new --out")
        cfg = ckpt_cfg
    else:
        cfg = resolve_config(space, data, config).scaled(epochs_scale)
    dctx.barrier()  # every rank has checked --out before rank 0 creates it

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = Supernet(space).to(device=device, memory_format=torch.channels_last)
    run = _Run(space=space, data_spec=data, ds=ds, cfg=cfg, out=out, device=device, dist=dctx, model=model)

    world = dctx.world_size
    per_rank = -(-ds.train_x.shape[0] // world)
    it = BatchIterator(ds.train_x, ds.train_y, cfg.batch_size, shuffle=True, seed=cfg.seed,
                       drop_last=per_rank >= cfg.batch_size, rank=dctx.rank, world_size=world, device=device)
    iters_per_epoch = len(it)

    if state is not None:
        model.load_state_dict(state["model"])
        run.pos = Position(**state["position"])
        run.history = list(state.get("history") or [])
        run.metrics = dict(meta.metrics)
        run.elapsed = float(state.get("elapsed", 0.0))
        if state.get("teacher") is not None:
            run.teacher = _freeze(StaticNet(build_plan(space, space.largest())), device)
            run.teacher.load_state_dict(state["teacher"])
        if not run.finished:
            _start_phase(run, iters_per_epoch)
            if state.get("optimizer") is not None and (run.pos.epoch > 0 or run.pos.batch > 0):
                assert run.optimizer is not None and run.schedule is not None
                run.optimizer.load_state_dict(state["optimizer"])
                run.schedule.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        run.log_metrics({"type": "resume", "epoch": epochs_done(cfg, run.pos), "position": run.pos.to_dict()})
    else:
        run.pos = _skip_empty_phases(cfg, Position())
        if dctx.is_main:
            metrics_path(out).parent.mkdir(parents=True, exist_ok=True)
            metrics_path(out).write_text("", encoding="utf-8")
        run.save()  # a first checkpoint: `--resume` works from the very start, and a NaN keeps it

    ddp: nn.Module = model
    if dctx.active:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # each step trains one subnet: the rest of the weights get no gradient
        )
    calib = calibration_subset(ds, n=cfg.calib_images)
    model.train()
    while not run.finished:
        if run.pos.epoch == 0 and run.pos.batch == 0:
            _phase_start_actions(run)
            _start_phase(run, iters_per_epoch)
        _train_epoch(run, it, ddp, calib, progress)
    dctx.barrier()
    return _result(run, time.perf_counter() - t_start)
