"""`--resume`: the checkpoint to continue, and the checks that refuse resuming with other data, another
recipe or another time budget than the run was started with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hwnas.data import Dataset
from hwnas.errors import UserError
from hwnas.space.models import Space
from hwnas.train.checkpoint import SupernetMeta, check_space, load_checkpoint, read_meta
from hwnas.train.config import TrainConfig, resolve_config


def read_resume(out: Path, space: Space) -> tuple[dict[str, Any], SupernetMeta]:
    """`--resume`: the checkpoint at `out` and its meta, refused if missing or of another space."""
    if not out.exists():
        raise UserError(f"--resume: no checkpoint at {out}; run without --resume to start training there")
    state = load_checkpoint(out)
    meta = read_meta(out, state)
    check_space(out, meta.get_space(), space)
    return state, meta


def resumed_config(out: Path, meta: SupernetMeta, ds: Dataset, space: Space, data: str, config: Any,
                    epochs_scale: float, budget_s: float | None) -> TrainConfig:
    """The stored config of a run resumed: refused for other data, or when the arguments ask for
    another recipe or another time budget than it was started with."""
    if meta.data_fingerprint != ds.fingerprint:
        raise UserError(f"--resume: {out} was trained on different data ({meta.data!r}); pass the same --data")
    try:
        ckpt_cfg = TrainConfig.model_validate(meta.config)
    except ValidationError as e:
        raise UserError(f"--resume: {out} holds a training config this version cannot read "
                        f"({str(e).splitlines()[0]}); start a new --out") from None
    if config is not None or epochs_scale != 1.0:
        asked = resolve_config(space, data, config).scaled(epochs_scale)
        if not same_recipe(asked, ckpt_cfg):
            raise UserError(f"--resume: --config/--epochs-scale differ from the config stored in {out}; "
                            "resume without them (the stored config is used) or start a new --out")
    if budget_s is not None and ckpt_cfg.time_budget_s != budget_s:
        raise UserError(f"--resume: {out} was planned for --time-budget "
                        f"{ckpt_cfg.time_budget_s if ckpt_cfg.time_budget_s is not None else 'none'}; resume without "
                        "--time-budget (the stored plan is used) or start a new --out")
    return ckpt_cfg


def same_recipe(asked: TrainConfig, stored: TrainConfig) -> bool:
    """Is `asked` what `stored` was made from? A time-budgeted run's epochs (and the evaluation
    it moved to the end and may have made smaller) came from its plan, so they are not compared."""
    if stored.time_budget_s is None:
        return asked.for_planned_epochs() == stored
    a, b = asked.with_epochs(stored.planned_epochs).for_planned_epochs().model_dump(), stored.model_dump()
    for d in (a, b):
        d.pop("time_budget_s"), d.pop("eval_at"), d.pop("eval_subnets")
        for p in d["phases"]:
            p.pop("epochs"), p.pop("warmup_epochs")
    return a == b
