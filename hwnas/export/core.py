"""`export_subnet`: from a trained supernet and one subnet to a checked, measured ONNX file.

Order matters: every cheap check on the user's input (space, classes, output paths)
runs before any expensive work, and the output file appears only after the model has
passed the checker, the parity check and the measurements, so a failure never leaves
a half-checked model where the user asked for one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from hwnas.errors import UserError
from hwnas.fileio import atomic_path
from hwnas.export import onnx_stages
from hwnas.export.check import accuracy_from_logits, preprocess, torch_logits
from hwnas.export.fold import fold_batchnorm
from hwnas.export.job import ExportJob, Stage
from hwnas.export.onnx_io import ModelMetadata, Preprocessing, export_graph
from hwnas.export.onnx_stages import (  # noqa: F401 - re-exported: callers import them from here
    INT8_CALIBRATION_IMAGES, LATENCY_WARN_FRACTION, PARITY_RTOL, ParityError, check_latency as _check_latency,
)
from hwnas.export.ort_format import ort_path, ort_stage
from hwnas.export.outputs import check_new_file, int8_path
from hwnas.progress import log as _log
from hwnas.space import Subnet, build_plan, plan_cost

CALIBRATION_IMAGES = 2000


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
    ort: str | None = Field(default=None, description="with --ort-format: the deployed model as .ort (ONNX Runtime Mobile)")
    ort_config: str | None = Field(default=None, description="its required-operators config for a reduced ORT build")
    ort_files: list[str] = Field(default_factory=list, description="every .ort written (one per ONNX model)")
    ort_max_rel_diff: float | None = None
    warnings: list[str] = Field(default_factory=list)
    seconds: float
    stage_seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def deployed_latency_ms(self) -> float:
        """The measured latency of the model the table describes (INT8 for an INT8 table)."""
        if self.latency_precision == "int8" and self.int8_measured_latency_ms is not None:
            return self.int8_measured_latency_ms
        return self.measured_latency_ms


def _table_of(table: Any, space) -> Any:
    if table is None or not isinstance(table, (str, os.PathLike)):
        return table
    from hwnas.latency import load_table

    return load_table(table, space)


def predict_latency(table: Any, space, subnet: Subnet) -> float:
    from hwnas.latency import latency_model

    return float(latency_model(table, space).predict(subnet))


def measure_model(path: str | os.PathLike[str], resolution: int, channels: int, threads: int, provider: str, protocol: Any = None) -> float:
    """Median batch-1 latency (ms) of a model file with the table's protocol (see onnx_stages.measure_model)."""
    return onnx_stages.measure_model(path, resolution, channels, threads, provider, protocol)


def measure_subnet_ms(space: Any, subnet: Subnet, table: Any) -> float:
    """Measured latency (ms) of a subnet's deployed graph (BN folded; QDQ INT8 for an INT8 table) with
    the table's threads, provider and protocol, called as an application calls it (`session.run`). Latency does not depend on the weights, so untrained
    ones (and random calibration inputs) are used: a quick check of a candidate before anything is
    trained or exported for it."""
    from hwnas.supernet import StaticNet

    net = fold_batchnorm(StaticNet(build_plan(space, subnet)).eval())
    if table is not None:
        threads, provider, protocol = int(table.fingerprint.threads), str(table.fingerprint.provider), table.protocol
    else:
        threads, provider, protocol = 1, "CPUExecutionProvider", None
    with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmpd:
        path = Path(tmpd) / "candidate.onnx"
        export_graph(net, subnet.resolution, path, channels=space.in_channels)
        if table is not None and table.int8:
            from hwnas.runtime import quantize_static_qdq

            calib = np.random.default_rng(0).standard_normal((8, space.in_channels, subnet.resolution, subnet.resolution))
            path = quantize_static_qdq(path, Path(tmpd) / "candidate.int8.onnx", calib.astype(np.float32), input_name="input")
        # as an application calls it: the stricter of the two protocols, so a candidate that passes here
        # (before it is fine-tuned) rarely fails the delivered file's check
        return onnx_stages.measure_as_called(path, subnet.resolution, space.in_channels, threads, provider, protocol)


def export_subnet(
    supernet: torch.nn.Module,
    subnet: Subnet | dict | str,
    ds: Any,
    out: str | os.PathLike[str],
    *,
    table: Any = None,
    int8: bool = False,
    ort_format: bool = False,
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
    check it (onnx.checker, ORT vs PyTorch on the validation images), measure it; with `int8`,
    quantise it (QDQ static, calibrated on training images) and measure that too; with
    `ort_format`, convert each model to .ort (plus the reduced-build operator config) and prove it.

    `table`: a LatencyTable or a path; its threads/provider/protocol are used for the
    measurement and it gives the predicted latency (of the INT8 model for an INT8 table, which
    implies `int8`). The INT8 model goes to `int8_out` (default: MODEL.int8.onnx next to `out`).
    `weights`: a network of exactly this subnet trained further (generate's fine-tuning) to export
    instead of the supernet's inherited weights; it is copied, not changed.
    Raises UserError for bad input, ParityError / OrtFormatError if a runtime disagrees.
    """
    t_start = time.perf_counter()
    job = plan_export(supernet, subnet, ds, out, table=table, int8=int8, ort_format=ort_format, force=force, threads=threads,
                      device=device, predicted_acc=predicted_acc, calibration_images=calibration_images, int8_out=int8_out,
                      progress=progress, weights=weights)
    with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmpd:
        job.workdir = Path(tmpd)
        for name, stage in export_stages(job):
            t = time.perf_counter()
            stage(job)
            job.stage_seconds[name] = time.perf_counter() - t
    return ExportResult(
        onnx=str(job.out), predicted_latency_ms=job.predicted_ms, space=job.space.name, subnet=job.subnet.model_dump(mode="json"),
        resolution=job.resolution, macs=job.macs, params=job.params, threads=job.threads, provider=job.provider,
        latency_precision=job.precision, predicted_acc=predicted_acc, warnings=job.warnings,
        seconds=time.perf_counter() - t_start, stage_seconds=job.stage_seconds, **job.result,
    )


def export_stages(job: ExportJob) -> list[tuple[str, Stage]]:
    """The export as data: (name, stage) in order; the options decide which stages run."""
    stages: list[tuple[str, Stage]] = [
        ("extract_recalibrate", build_network),
        ("torch_eval", torch_reference),
        ("onnx_export", onnx_stages.write_onnx),
        ("ort_check", onnx_stages.check_onnx_runtime),
        ("latency", onnx_stages.measure_fp32),
    ]
    if job.int8:
        stages.append(("int8", onnx_stages.quantize_int8))
    stages.append(("metadata", onnx_stages.finalize_metadata))
    if job.ort_format:
        stages.append(("ort_format", ort_stage))
    stages.append(("publish", publish))
    return stages


def plan_export(supernet: torch.nn.Module, subnet: Subnet | dict | str, ds: Any, out: str | os.PathLike[str], *, table: Any,
                int8: bool, ort_format: bool, force: bool, threads: int | None, device: str, predicted_acc: float | None,
                calibration_images: int, int8_out: str | os.PathLike[str] | None, progress: bool,
                weights: torch.nn.Module | None) -> ExportJob:
    """Every cheap check of the user's input (outputs, subnet, data, table coverage) before any expensive work."""
    space = supernet.space  # type: ignore[attr-defined]
    out = check_new_file(out, force)
    out8 = Path(int8_out) if int8_out is not None else int8_path(out)
    sub = space.validate_subnet(subnet)
    if ds.num_classes != space.num_classes:
        raise UserError(f"DATA {ds.name}: has {ds.num_classes} classes but the supernet's classifier has {space.num_classes}")
    if ds.train_x.shape[1] != space.in_channels:
        raise UserError(f"DATA {ds.name}: images have {ds.train_x.shape[1]} channels, the space expects {space.in_channels}")
    table = _table_of(table, space)
    if table is not None:
        t_threads, provider, protocol = int(table.fingerprint.threads), str(table.fingerprint.provider), table.protocol
        precision = "int8" if table.int8 else "fp32"
    else:
        t_threads, provider, protocol, precision = 1, "CPUExecutionProvider", None, "fp32"
    if precision == "int8" and not int8:
        _log(progress, "note: the latency table is for INT8 models, so the INT8 model is exported too (--int8)")
        int8 = True
    for p in ([out8] if int8 else []) + ([ort_path(out)] + ([ort_path(out8)] if int8 else []) if ort_format else []):
        check_new_file(p, force)
    macs, n_params = plan_cost(build_plan(space, sub))
    predicted_ms = predict_latency(table, space, sub) if table is not None else None  # UserError if not covered
    return ExportJob(supernet=supernet, space=space, subnet=sub, ds=ds, out=out, int8_out=out8, int8=int8, ort_format=ort_format,
                     table=table, threads=threads or t_threads, provider=provider, protocol=protocol, precision=precision,
                     device=device, calibration_images=calibration_images, predicted_acc=predicted_acc, predicted_ms=predicted_ms,
                     weights=weights, macs=macs, params=n_params, progress=progress)


def build_network(job: ExportJob) -> None:
    """Extract the subnet and recalibrate BN on training images (the shared supernet statistics are wrong
    for any one subnet), or copy the given trained weights with their own BN statistics; fold BN into
    the convolutions.

    A network trained as itself (generate's fine-tuning or direct route) keeps its running statistics:
    recalibrating them cost 3.0 and 3.3 points on two cifar10-small networks trained alone
    (0.6815 -> 0.6515, 0.6100 -> 0.5770)."""
    if job.weights is not None:
        import copy

        net = copy.deepcopy(job.weights).to(job.device)
        shapes = {k: tuple(v.shape) for k, v in job.supernet.extract(job.subnet).state_dict().items()}  # type: ignore[attr-defined]
        if {k: tuple(v.shape) for k, v in net.state_dict().items()} != shapes:
            raise UserError("export: the given weights are not a network of this subnet")
    else:
        net = inherited_network(job.supernet, job.subnet, job.ds, job.calibration_images, job.device)
    job.net = net.eval().cpu().float()
    job.folded = fold_batchnorm(job.net)


def inherited_network(supernet: torch.nn.Module, subnet: Subnet, ds: Any, calibration_images: int = CALIBRATION_IMAGES,
                      device: str = "cpu") -> torch.nn.Module:
    """The subnet with the supernet's weights and BN statistics recalibrated on a fixed set of training images:
    the network an export of the supernet's weights starts from (the shared supernet statistics are wrong for
    any one subnet)."""
    from hwnas.train.evaluate import inherited_subnet

    return inherited_subnet(supernet, subnet, ds, calib_images=calibration_images, device=device,  # type: ignore[arg-type]
                            memory_format=torch.contiguous_format)


def torch_reference(job: ExportJob) -> None:
    """PyTorch logits on the validation images (of the unfolded network: the one the search evaluated),
    and the metadata every file of this export carries."""
    job.xv = preprocess(job.ds.val_x, job.resolution, job.mean, job.std)
    job.yv = job.ds.val_y.numpy()
    job.ref = torch_logits(job.net, job.xv)
    job.result["val_acc_torch"] = accuracy_from_logits(job.ref, job.yv)
    meta = ModelMetadata(
        version=_version(), space=job.space.name, subnet=job.subnet.model_dump(mode="json"),
        preprocessing=Preprocessing(resolution=job.resolution, mean=job.mean, std=job.std, class_names=list(job.ds.classes)),
        macs=job.macs, params=job.params, predicted_acc=job.predicted_acc, space_definition=job.space.to_file_dict(),
    )
    if job.table is not None:
        meta.predicted_latency_ms = job.predicted_ms
        meta.latency_target = {"threads": job.threads, "provider": job.provider, "precision": job.precision,
                               "fingerprint": job.table.fingerprint.model_dump(mode="json")}
    job.meta = meta


def publish(job: ExportJob) -> None:
    """Only now do the user's paths change: every staged file is copied in atomically, the primary
    ONNX file last, so its presence marks a complete export."""
    order = sorted(job.files, key=lambda role: (role == "onnx", role))
    for role in order:
        _publish(job.files[role].tmp, job.files[role].dst)


def _publish(src: Path, dst: Path) -> None:
    """Copy a checked file into place atomically (a temporary name in dst's folder, then rename)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _version() -> str:
    from hwnas import __version__

    return __version__
