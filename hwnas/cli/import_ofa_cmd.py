"""`hwnas import-ofa`: a published Once-for-All MobileNetV3 supernet -> an hwnas CKPT, exactly."""

from __future__ import annotations

import argparse

from hwnas.cli.common import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-ofa",
        help="convert an OFA MobileNetV3 supernet checkpoint (ofa_mbv3_d234_e346_k357_w1.0 / _w1.2) into a CKPT",
        description="Reads the checkpoint with torch.load(weights_only=True) (no code is unpickled), detects the width "
        "multiplier and class count from the tensor shapes, maps every tensor by role onto hwnas's supernet "
        "(space mbv3-imagenet or mbv3-imagenet-w1.2) and writes a checkpoint that search, export and generate take.",
    )
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="OFA checkpoint: {'state_dict': ...} or a bare state dict")
    p.add_argument("--out", required=True, metavar="CKPT",
                   help="hwnas supernet checkpoint to write (replaced atomically, and only by a complete import)")
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from hwnas.supernet.ofa_import import import_ofa

    r = import_ofa(args.checkpoint, args.out)
    human = (f"wrote {r['checkpoint']}: space {r['space']} (width {r['width_mult']:g}), {r['num_classes']} classes, "
             f"{r['params'] / 1e6:.2f}M parameters")
    emit(args, r, human)
    return 0
