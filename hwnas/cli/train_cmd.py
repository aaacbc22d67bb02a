"""`hwnas train`: supernet training (resumable, time-budgeted, data-parallel under torchrun)."""

from __future__ import annotations

import argparse
import os
import sys

from hwnas.cli.common import add_json_flag, emit, log


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the supernet (sandwich rule by default; progressive shrinking with 'schedule: progressive'); "
        "torchrun --nproc-per-node K -m hwnas train ... for data-parallel",
    )
    p.add_argument("--space", required=True, help="preset name (mbv3-imagenet, mbv3-imagenet-w1.2, mbv3-cifar, mbv3-tiny) or a JSON/YAML file")
    p.add_argument("--data", required=True, help="'digits', an ImageFolder root (train/ and val/) or a CIFAR-10 python folder")
    p.add_argument("--out", required=True, help="checkpoint file to write (CKPT); metrics go next to it as <stem>.metrics.jsonl")
    p.add_argument("--config", default=None,
                   help="YAML/JSON training config; fields not given keep the defaults ('schedule: progressive' picks OFA's phases)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every phase's epochs (a training phase keeps >= 1)")
    p.add_argument("--time-budget", default=None, metavar="DURATION",
                   help="plan the epochs so the whole run, evaluation included, ends within this time (900s, 45m, 2h)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out where it stopped")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="transfer: start from this supernet (same block structure, trained on other data, or imported "
                        "with import-ofa): tensors whose role and shape match are copied, the classifier starts fresh; "
                        "defaults to a short schedule with lower learning rates")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr (the plan and results are still printed)")
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from hwnas.errors import TrainingDiverged
    from hwnas.train.api import train_supernet

    rank = int(os.environ.get("RANK", "0"))
    try:
        res = train_supernet(
            args.space, args.data, args.out, config=args.config, epochs_scale=args.epochs_scale,
            time_budget=args.time_budget, device=args.device, resume=args.resume, progress=rank == 0,
            bar=not args.no_progress, init=args.init,
        )
    except TrainingDiverged as e:
        # exit 1: not a malformed input but a run that failed; the message says how to recover
        print(f"hwnas train: error: {e}", file=sys.stderr)
        return 1
    if rank != 0:
        return 0
    if res["val_acc_max"] is not None:
        log(f"checkpoint {res['checkpoint']} ({res['epochs']:g} epochs, {res['train_seconds_total']:.0f} s of training)")
    budget = res["time_budget_s"]
    human = (
        f"checkpoint   {res['checkpoint']}\n"
        f"epochs       {res['epochs']:g} ({', '.join(f'{k} {v:g}' for k, v in res['planned_epochs'].items())})\n"
        f"val acc      largest {_pct(res['val_acc_max'])}, smallest {_pct(res['val_acc_min'])}\n"
        f"seconds      {res['seconds']:.1f}" + (f" (budget {budget:.0f})" if budget else "")
    )
    if res.get("init"):
        from hwnas.train.transfer import TransferReport

        ini = res["init"]
        rep = TransferReport(ini["checkpoint"], ini["source_space"], ini["copied"], ini["fresh"], ini["unused"])
        human += "\n" + rep.summary()
    emit(args, res, human)
    return 0


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"
