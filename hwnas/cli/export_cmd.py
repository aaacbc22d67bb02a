"""`hwnas export`: one subnet of a trained supernet -> a checked, measured, standalone ONNX model."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.cli.common import add_force_flag, add_json_flag, emit, log
from hwnas.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="extract a subnet, recalibrate BN, export ONNX, check it against PyTorch and measure it",
        description="Extract SUBNET from the trained supernet, re-estimate its BatchNorm statistics on training "
        "images, fold BN into the convolutions and export a standalone ONNX model (opset 17, dynamic batch, "
        "input 'input', output 'logits', preprocessing in the metadata). The file is checked with onnx.checker, "
        "run in ONNX Runtime against PyTorch on the validation images, and its latency is measured with the "
        "table's protocol (1 CPU thread without --table).",
    )
    p.add_argument("--supernet", required=True, metavar="CKPT", help="checkpoint written by `hwnas train`")
    p.add_argument("--subnet", required=True, metavar="SUBNET", help="subnet JSON (e.g. best.json from `hwnas search`)")
    p.add_argument("--data", required=True, metavar="DATA", help="digits, an ImageFolder root or a CIFAR-10 python folder")
    p.add_argument("--out", required=True, metavar="MODEL.onnx", help="output ONNX file (INT8: MODEL.int8.onnx next to it)")
    p.add_argument("--table", metavar="TABLE", help="latency table: predicted latency, and the threads/provider/protocol to measure with")
    p.add_argument("--int8", action="store_true", help="also write an INT8 (QDQ, static) model calibrated on training images")
    p.add_argument("--ort-format", action="store_true",
                   help="also write MODEL.ort (ONNX Runtime Mobile format, checked against the ONNX model) and "
                        "MODEL.required_operators.config for a reduced ONNX Runtime build")
    p.add_argument("--threads", type=int, help="intra-op threads for the latency measurement (default: the table's, else 1)")
    p.add_argument("--device", default="cpu", help="torch device for BN recalibration (default cpu)")
    add_force_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from hwnas.data import load_dataset
    from hwnas.export import export_subnet
    from hwnas.export.ort_format import ort_path
    from hwnas.export.outputs import check_new_file, int8_path
    from hwnas.fileio import read_structured

    # cheap checks first: output paths, the subnet file, flags
    out = check_new_file(args.out, args.force)
    if args.int8:
        check_new_file(int8_path(out), args.force)
    if args.ort_format:
        for p in [out] + ([int8_path(out)] if args.int8 else []):
            check_new_file(ort_path(p), args.force)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: must be >= 1, got {args.threads}")
    sub_obj = read_structured(args.subnet)
    if not Path(args.supernet).is_file():
        raise UserError(f"--supernet {args.supernet}: no such file")
    from hwnas.train import load_supernet

    net, meta = load_supernet(args.supernet, map_location="cpu")
    if not meta.finished:
        log(f"note: {args.supernet} is an unfinished training run (phase {meta.phase}, {meta.epoch} epochs); exporting it anyway")
    space = net.space
    try:
        subnet = space.validate_subnet(sub_obj)
    except UserError as e:
        raise UserError(f"--subnet {args.subnet}: {e}") from None
    table = None
    if args.table:
        from hwnas.latency import load_table

        table = load_table(args.table, space)
    ds = load_dataset(args.data)
    if ds.fingerprint != meta.data_fingerprint:
        log(f"note: DATA {args.data} is not the data the supernet was trained on ({meta.data}); "
            "BN statistics and accuracy are computed on the given data")
    res = export_subnet(net, subnet, ds, out, table=table, int8=args.int8, ort_format=args.ort_format, force=args.force,
                        threads=args.threads, device=args.device, progress=True)
    d = res.model_dump(mode="json")
    emit(args, d, human(res))
    return 0


def human(r) -> str:
    lines = [
        f"wrote {r.onnx}",
        f"  subnet        {r.space} @ {r.resolution}x{r.resolution}, {r.macs / 1e6:.2f}M MACs, {r.params / 1e6:.3f}M params",
        f"  parity        max |ORT - PyTorch| = {r.max_abs_diff:.2e} ({r.max_rel_diff:.1e} relative) on {r.val_images} validation images",
        f"  val accuracy  {r.val_acc:.4f} (ONNX Runtime), {r.val_acc_torch:.4f} (PyTorch)",
        f"  latency       measured {r.measured_latency_ms:.3f} ms"
        + (f", predicted {r.predicted_latency_ms:.3f} ms" if r.predicted_latency_ms is not None and r.latency_precision == "fp32" else "")
        + f" ({r.threads} thread(s), {r.provider}, batch 1, median)",
    ]
    if r.int8_onnx:
        lines.append(
            f"  int8          {r.int8_onnx}: accuracy {r.int8_val_acc:.4f} ({r.int8_acc_change:+.4f}), "
            f"latency {r.int8_measured_latency_ms:.3f} ms"
            + (f", predicted {r.predicted_latency_ms:.3f} ms" if r.predicted_latency_ms is not None and r.latency_precision == "int8" else "")
        )
    if r.ort:
        lines.append(f"  ort           {', '.join(r.ort_files)} (outputs equal the ONNX models'); "
                     f"reduced-build operators: {r.ort_config}")
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)
