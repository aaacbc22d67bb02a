"""`export_subnet`: from a trained supernet and one subnet to a checked, measured ONNX file.

Order matters: every cheap check on the user's input (space, classes, output paths)
runs before any expensive work, and the output file appears only after the model has
passed the checker, the parity check and the measurements, so a failure never leaves
a half-checked model where the user asked for one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from hwnas.errors import HwnasError, UserError
from hwnas.fileio import atomic_path
from hwnas.export.check import accuracy_from_logits, open_session, ort_logits, parity, preprocess, torch_logits
from hwnas.export.fold import fold_batchnorm
from hwnas.export.onnx_io import ModelMetadata, Preprocessing, export_graph, write_metadata
from hwnas.export.outputs import check_new_file, int8_path
from hwnas.space import Subnet, build_plan, plan_cost

PARITY_RTOL = 1e-4
"""fp32 ONNX Runtime vs PyTorch: max |diff| / max |logit| must not exceed this."""
LATENCY_WARN_FRACTION = 0.10
"""Warn when measured and predicted latency differ by more than this fraction of predicted."""
CALIBRATION_IMAGES = 2000
INT8_CALIBRATION_IMAGES = 256


class ParityError(HwnasError):
    """The exported graph does not compute what the PyTorch network computes (a bug: exit 1)."""


class ExportResult(BaseModel):
    """What `hwnas export --json` prints (SPEC keys first)."""

    model_config = ConfigDict(extra="forbid")
    onnx: str
    max_abs_diff: float
    measured_latency_ms: float
    predicted_latency_ms: float | None
    val_acc: float
    val_acc_torch: float
    max_rel_diff: float
    argmax_agreement: float
    val_images: int
    space: str
    subnet: dict[str, Any]
    resolution: int
    macs: int
    params: int
    threads: int
    provider: str
    latency_precision: str = Field(description="which model the table predicts: fp32 or int8")
    predicted_acc: float | None = None
    int8_onnx: str | None = None
    int8_val_acc: float | None = None
    int8_acc_change: float | None = None
    int8_measured_latency_ms: float | None = None
    int8_speedup: float | None = None
    warnings: list[str] = Field(default_factory=list)
    seconds: float
    stage_seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def deployed_latency_ms(self) -> float:
        """The measured latency of the model the table describes (INT8 for an INT8 table)."""
        if self.latency_precision == "int8" and self.int8_measured_latency_ms is not None:
            return self.int8_measured_latency_ms
        return self.measured_latency_ms


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _table_of(table: Any, space) -> Any:
    if table is None or not isinstance(table, (str, os.PathLike)):
        return table
    from hwnas.latency import load_table

    return load_table(table, space)


def predict_latency(table: Any, space, subnet: Subnet) -> float:
    from hwnas.latency import latency_model

    return float(latency_model(table, space).predict(subnet))


def measure_model(path: str | os.PathLike[str], resolution: int, channels: int, threads: int, provider: str, protocol: Any = None) -> float:
    """Median batch-1 latency (ms) of an ONNX file with the table's measurement protocol."""
    from hwnas.runtime import measure_latency

    session = open_session(path, threads=threads, provider=provider)
    stats = measure_latency(session, (1, channels, resolution, resolution), protocol=protocol)
    return float(stats.median_ms)


def measure_subnet_ms(space: Any, subnet: Subnet, table: Any) -> float:
    """Measured latency (ms) of a subnet's deployed graph (BN folded) with the table's threads, provider
    and protocol. Latency does not depend on the weights, so untrained ones are used: a quick check
    of a candidate before anything is trained or exported for it."""
    from hwnas.supernet import StaticNet

    net = fold_batchnorm(StaticNet(build_plan(space, subnet)).eval())
    if table is not None:
        threads, provider, protocol = int(table.fingerprint.threads), str(table.fingerprint.provider), table.protocol
    else:
        threads, provider, protocol = 1, "CPUExecutionProvider", None
    with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmpd:
        path = Path(tmpd) / "candidate.onnx"
        export_graph(net, subnet.resolution, path, channels=space.in_channels)
        return measure_model(path, subnet.resolution, space.in_channels, threads, provider, protocol)


def export_subnet(
    supernet: torch.nn.Module,
    subnet: Subnet | dict | str,
    ds: Any,
    out: str | os.PathLike[str],
    *,
    table: Any = None,
    int8: bool = False,
    force: bool = False,
    threads: int | None = None,
    device: str = "cpu",
    predicted_acc: float | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    int8_out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    weights: torch.nn.Module | None = None,
) -> ExportResult:
    """Extract `subnet`, recalibrate BN on training images, fold BN, export ONNX with metadata,
    check it (onnx.checker, ORT vs PyTorch on the validation images), measure it, and, with
    `int8`, quantise it (QDQ static, calibrated on training images) and measure that too.

    `table`: a LatencyTable or a path; its threads/provider/protocol are used for the
    measurement and it gives the predicted latency (of the INT8 model for an INT8 table, which
    implies `int8`). The INT8 model goes to `int8_out` (default: MODEL.int8.onnx next to `out`).
    `weights`: a network of exactly this subnet trained further (generate's fine-tuning) to export
    instead of the supernet's inherited weights; it is copied, not changed.
    Raises UserError for bad input, ParityError if ONNX Runtime disagrees with PyTorch.
    """
    t_start = time.perf_counter()
    stages: dict[str, float] = {}
    warnings: list[str] = []
    space = supernet.space  # type: ignore[attr-defined]
    out = check_new_file(out, force)
    out8 = Path(int8_out) if int8_out is not None else int8_path(out)
    if int8:
        check_new_file(out8, force)
    sub = space.validate_subnet(subnet)
    if ds.num_classes != space.num_classes:
        raise UserError(f"DATA {ds.name}: has {ds.num_classes} classes but the supernet's classifier has {space.num_classes}")
    if ds.train_x.shape[1] != space.in_channels:
        raise UserError(f"DATA {ds.name}: images have {ds.train_x.shape[1]} channels, the space expects {space.in_channels}")
    table = _table_of(table, space)
    if table is not None:
        t_threads, provider = int(table.fingerprint.threads), str(table.fingerprint.provider)
        protocol = table.protocol
        precision = "int8" if table.int8 else "fp32"
    else:
        t_threads, provider, protocol, precision = 1, "CPUExecutionProvider", None, "fp32"
    threads = threads or t_threads
    if precision == "int8" and not int8:
        _log(progress, "note: the latency table is for INT8 models, so the INT8 model is exported too (--int8)")
        int8 = True
        check_new_file(out8, force)
    res = sub.resolution
    mean, std = [float(v) for v in ds.mean], [float(v) for v in ds.std]
    macs, n_params = plan_cost(build_plan(space, sub))
    predicted_ms = predict_latency(table, space, sub) if table is not None else None  # UserError if not covered

    # 1. extract + recalibrate BN on training images (the shared supernet statistics are wrong for any one subnet)
    t = time.perf_counter()
    from hwnas.data import calibration_subset
    from hwnas.train import recalibrate_bn

    if weights is not None:
        import copy

        net = copy.deepcopy(weights).to(device)
        shapes = {k: tuple(v.shape) for k, v in supernet.extract(sub).state_dict().items()}  # type: ignore[attr-defined]
        if {k: tuple(v.shape) for k, v in net.state_dict().items()} != shapes:
            raise UserError("export: the given weights are not a network of this subnet")
    else:
        net = supernet.extract(sub).to(device)  # type: ignore[attr-defined]
    recalibrate_bn(net, calibration_subset(ds, calibration_images), res, mean, std, device=device)
    net = net.eval().cpu().float()
    folded = fold_batchnorm(net)
    stages["extract_recalibrate"] = time.perf_counter() - t

    # 2. PyTorch reference on the validation images (unfolded network: the one the search evaluated)
    t = time.perf_counter()
    xv = preprocess(ds.val_x, res, mean, std)
    yv = ds.val_y.numpy()
    ref = torch_logits(net, xv)
    acc_torch = accuracy_from_logits(ref, yv)
    stages["torch_eval"] = time.perf_counter() - t

    meta = ModelMetadata(
        version=_version(), space=space.name, subnet=sub.model_dump(mode="json"),
        preprocessing=Preprocessing(resolution=res, mean=mean, std=std, class_names=list(ds.classes)),
        macs=macs, params=n_params, predicted_acc=predicted_acc,
        space_definition=space.to_file_dict(),
    )
    if table is not None:
        meta.predicted_latency_ms = predicted_ms
        meta.latency_target = {"threads": threads, "provider": provider, "precision": precision,
                               "fingerprint": table.fingerprint.model_dump(mode="json")}

    with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmpd:
        tmp = Path(tmpd) / "model.onnx"
        # 3. export + structural check
        t = time.perf_counter()
        _log(progress, f"export: subnet at {res}x{res}, {macs / 1e6:.2f}M MACs, {n_params / 1e6:.3f}M params -> ONNX opset 17")
        export_graph(folded, res, tmp, channels=space.in_channels)
        write_metadata(tmp, tmp, meta)
        import onnx

        onnx.checker.check_model(str(tmp), full_check=True)
        stages["onnx_export"] = time.perf_counter() - t

        # 4. ORT parity + accuracy in a fresh session
        t = time.perf_counter()
        sess = open_session(tmp, threads=max(1, torch.get_num_threads()), provider="CPUExecutionProvider")
        got = ort_logits(sess, xv.numpy())
        p = parity(ref, got)
        acc_ort = accuracy_from_logits(got, yv)
        one = ort_logits(sess, xv[:1].numpy(), batch_size=1)
        p1 = parity(ref[:1], one)
        stages["ort_check"] = time.perf_counter() - t
        _log(progress, f"parity: ONNX Runtime vs PyTorch on {len(yv)} validation images: max |diff| {p.max_abs_diff:.2e} "
                       f"({p.max_rel_diff:.2e} relative); accuracy ORT {acc_ort:.4f}, PyTorch {acc_torch:.4f}")
        if max(p.max_rel_diff, p1.max_rel_diff) > PARITY_RTOL:
            raise ParityError(f"exported model differs from PyTorch: max relative difference {max(p.max_rel_diff, p1.max_rel_diff):.2e} > {PARITY_RTOL:g}")

        # 5. latency with the table's protocol
        t = time.perf_counter()
        measured = measure_model(tmp, res, space.in_channels, threads, provider, protocol)
        stages["latency"] = time.perf_counter() - t
        _log(progress, f"latency: measured {measured:.3f} ms ({threads} thread(s), {provider})"
                       + (f", predicted {meta.predicted_latency_ms:.3f} ms" if meta.predicted_latency_ms is not None and precision == "fp32" else ""))
        if precision == "fp32":
            _check_latency(measured, meta.predicted_latency_ms, "fp32", warnings)

        # 6. INT8
        i8: dict[str, Any] = {}
        if int8:
            t = time.perf_counter()
            tmp8 = Path(tmpd) / "model.int8.onnx"
            calib = preprocess(calibration_subset(ds, INT8_CALIBRATION_IMAGES, seed=1), res, mean, std).numpy()
            from hwnas.runtime import quantize_static_qdq

            quantize_static_qdq(str(tmp), str(tmp8), calib, input_name="input")
            s8 = open_session(tmp8, threads=max(1, torch.get_num_threads()))
            acc8 = accuracy_from_logits(ort_logits(s8, xv.numpy()), yv)
            lat8 = measure_model(tmp8, res, space.in_channels, threads, provider, protocol)
            write_metadata(tmp8, tmp8, meta.model_copy(update={"precision": "int8", "val_acc": acc8}))
            stages["int8"] = time.perf_counter() - t
            i8 = dict(int8_onnx=str(out8), int8_val_acc=acc8, int8_acc_change=acc8 - acc_ort,
                      int8_measured_latency_ms=lat8, int8_speedup=measured / lat8 if lat8 > 0 else None)
            _log(progress, f"int8: accuracy {acc8:.4f} ({acc8 - acc_ort:+.4f}), latency {lat8:.3f} ms ({measured / lat8:.2f}x vs fp32)")
            if precision == "int8":
                _check_latency(lat8, meta.predicted_latency_ms, "int8", warnings)

        # 7. publish: only now do the user's paths change
        final_meta = meta.model_copy(update={"val_acc": acc_ort})
        if precision == "int8":  # the fp32 file's predicted latency would be misleading: it is the INT8 model's
            final_meta = final_meta.model_copy(update={"predicted_latency_ms": None})
        write_metadata(tmp, tmp, final_meta)
        _publish(tmp, out)
        if int8:
            _publish(tmp8, out8)

    return ExportResult(
        onnx=str(out), max_abs_diff=max(p.max_abs_diff, p1.max_abs_diff), measured_latency_ms=measured,
        predicted_latency_ms=meta.predicted_latency_ms, val_acc=acc_ort, val_acc_torch=acc_torch,
        max_rel_diff=max(p.max_rel_diff, p1.max_rel_diff), argmax_agreement=p.argmax_agreement, val_images=len(yv),
        space=space.name, subnet=sub.model_dump(mode="json"), resolution=res, macs=macs, params=n_params,
        threads=threads, provider=provider, latency_precision=precision, predicted_acc=predicted_acc,
        warnings=warnings, seconds=time.perf_counter() - t_start, stage_seconds=stages, **i8,
    )


def _check_latency(measured: float, predicted: float | None, what: str, warnings: list[str]) -> None:
    """Record (and print to stderr, always) a warning when measured and predicted disagree by >10%."""
    if predicted is None or predicted <= 0:
        return
    rel = (measured - predicted) / predicted
    if abs(rel) > LATENCY_WARN_FRACTION:
        msg = (f"{what} measured latency {measured:.3f} ms differs from the predicted {predicted:.3f} ms by {rel:+.0%} "
               f"(more than {LATENCY_WARN_FRACTION:.0%}): the table may be stale for this machine or the machine is busy")
        warnings.append(msg)
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def _publish(src: Path, dst: Path) -> None:
    """Copy a checked file into place atomically (a temporary name in dst's folder, then rename)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _version() -> str:
    from hwnas import __version__

    return __version__
