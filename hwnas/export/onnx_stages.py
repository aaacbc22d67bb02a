"""The ONNX / ONNX Runtime stages of an export: write and check the graph, prove it against
PyTorch, measure it, quantise it to INT8, and stamp the final metadata.

Each stage works on files in the job's work folder; nothing here touches the user's paths
(that is `core.publish`, the last stage).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.export.check import accuracy_from_logits, open_session, ort_accuracy, ort_logits, parity, preprocess
from hwnas.export.job import ExportJob, Staged
from hwnas.export.onnx_io import INPUT_NAME, export_graph, write_metadata

PARITY_RTOL = 1e-4
"""fp32 ONNX Runtime vs PyTorch: max |diff| / max |logit| must not exceed this."""
LATENCY_WARN_FRACTION = 0.10
"""Warn when measured and predicted latency differ by more than this fraction of predicted."""
INT8_CALIBRATION_IMAGES = 256


class ParityError(HwnasError):
    """The exported graph does not compute what the PyTorch network computes (a bug: exit 1)."""


def measure_model(path: str | os.PathLike[str], resolution: int, channels: int, threads: int, provider: str, protocol: Any = None) -> float:
    """Median batch-1 latency (ms) of an ONNX (or .ort) file with the table's measurement protocol."""
    from hwnas.runtime import measure_latency

    session = open_session(path, threads=threads, provider=provider)
    stats = measure_latency(session, (1, channels, resolution, resolution), protocol=protocol)
    return float(stats.median_ms)


def measure_as_called(path: str | os.PathLike[str], resolution: int, channels: int, threads: int, provider: str,
                      protocol: Any = None) -> float:
    """Median batch-1 latency (ms) of a model file called the way an application (or an outside timing
    harness) calls it: `session.run` with a numpy input and outputs allocated per call, whatever the
    table's own `net_call` (a table profiled before 2026-12-02 timed whole networks with io-binding, a few
    microseconds less: 14% of a 0.03 ms model)."""
    from hwnas.runtime import MeasureProtocol

    p = (protocol or MeasureProtocol()).model_copy(update={"net_call": "session-run"})
    return measure_model(path, resolution, channels, threads, provider, p)


def check_latency(measured: float, predicted: float | None, what: str, warnings: list[str]) -> None:
    """Record (and print to stderr, always) a warning when measured and predicted disagree by >10%."""
    if predicted is None or predicted <= 0:
        return
    rel = (measured - predicted) / predicted
    if abs(rel) > LATENCY_WARN_FRACTION:
        msg = (f"{what} measured latency {measured:.3f} ms differs from the predicted {predicted:.3f} ms by {rel:+.0%} "
               f"(more than {LATENCY_WARN_FRACTION:.0%}): the table may be stale for this machine or the machine is busy")
        warnings.append(msg)
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def write_onnx(job: ExportJob) -> None:
    """Export the BN-folded network (opset 17, dynamic batch) with its metadata; onnx.checker must pass."""
    import onnx

    tmp = job.workdir / "model.onnx"
    job.log(f"export: subnet at {job.resolution}x{job.resolution}, {job.macs / 1e6:.2f}M MACs, "
            f"{job.params / 1e6:.3f}M params -> ONNX opset 17")
    export_graph(job.folded, job.resolution, tmp, channels=job.space.in_channels)
    write_metadata(tmp, tmp, job.meta)
    onnx.checker.check_model(str(tmp), full_check=True)
    job.files["onnx"] = Staged(tmp, job.out)


def check_onnx_runtime(job: ExportJob) -> None:
    """A fresh ONNX Runtime session on the file must match PyTorch (batched and batch 1); its accuracy is the model's."""
    sess = open_session(job.files["onnx"].tmp, threads=max(1, torch.get_num_threads()), provider="CPUExecutionProvider")
    got = ort_logits(sess, job.xv.numpy())
    p = parity(job.ref, got)
    acc = accuracy_from_logits(got, job.yv)
    p1 = parity(job.ref[:1], ort_logits(sess, job.xv[:1].numpy(), batch_size=1))
    rel = max(p.max_rel_diff, p1.max_rel_diff)
    job.log(f"parity: ONNX Runtime vs PyTorch on {len(job.yv)} validation images: max |diff| {p.max_abs_diff:.2e} "
            f"({p.max_rel_diff:.2e} relative); accuracy ORT {acc:.4f}, PyTorch {job.result['val_acc_torch']:.4f}")
    if rel > PARITY_RTOL:
        raise ParityError(f"exported model differs from PyTorch: max relative difference {rel:.2e} > {PARITY_RTOL:g}")
    job.result.update(val_acc=acc, max_abs_diff=max(p.max_abs_diff, p1.max_abs_diff), max_rel_diff=rel,
                      argmax_agreement=p.argmax_agreement, val_images=len(job.yv))


def measure_fp32(job: ExportJob) -> None:
    """Latency of the fp32 file with the table's threads, provider and protocol."""
    ms = measure_model(job.files["onnx"].tmp, job.resolution, job.space.in_channels, job.threads, job.provider, job.protocol)
    job.result["measured_latency_ms"] = ms
    fp32_pred = job.predicted_ms is not None and job.precision == "fp32"
    job.log(f"latency: measured {ms:.3f} ms ({job.threads} thread(s), {job.provider})"
            + (f", predicted {job.predicted_ms:.3f} ms" if fp32_pred else ""))
    if job.precision == "fp32":
        check_latency(ms, job.predicted_ms, "fp32", job.warnings)


def quantize_calibrated(src: str | os.PathLike[str], dst: str | os.PathLike[str], ds: Any, resolution: int) -> Path:
    """Static QDQ INT8 of the fp32 file `src` into `dst`, calibrated on a fixed set of INT8_CALIBRATION_IMAGES
    training images (seed 1): one recipe, so a candidate scored quantised is the model the export delivers."""
    from hwnas.data import calibration_subset
    from hwnas.runtime import quantize_static_qdq

    calib = preprocess(calibration_subset(ds, INT8_CALIBRATION_IMAGES, seed=1), resolution, ds.mean, ds.std).numpy()
    quantize_static_qdq(str(src), str(dst), calib, input_name=INPUT_NAME)
    return Path(dst)


def quantize_int8(job: ExportJob) -> None:
    """Static QDQ INT8 calibrated on training images; its accuracy through ONNX Runtime and its latency."""
    tmp8 = quantize_calibrated(job.files["onnx"].tmp, job.workdir / "model.int8.onnx", job.ds, job.resolution)
    acc8 = ort_accuracy(tmp8, job.xv.numpy(), job.yv)
    lat8 = measure_model(tmp8, job.resolution, job.space.in_channels, job.threads, job.provider, job.protocol)
    write_metadata(tmp8, tmp8, job.meta.model_copy(update={"precision": "int8", "val_acc": acc8}))
    fp32_ms, fp32_acc = job.result["measured_latency_ms"], job.result["val_acc"]
    job.files["int8"] = Staged(tmp8, job.int8_out)
    job.result.update(int8_onnx=str(job.int8_out), int8_val_acc=acc8, int8_acc_change=acc8 - fp32_acc,
                      int8_measured_latency_ms=lat8, int8_speedup=fp32_ms / lat8 if lat8 > 0 else None)
    job.log(f"int8: accuracy {acc8:.4f} ({acc8 - fp32_acc:+.4f}), latency {lat8:.3f} ms ({fp32_ms / lat8:.2f}x vs fp32)")
    if job.precision == "int8":
        check_latency(lat8, job.predicted_ms, "int8", job.warnings)


def finalize_metadata(job: ExportJob) -> None:
    """The fp32 file gets its measured accuracy; with an INT8 table its predicted latency is dropped
    (it is the INT8 model's and would mislead on the fp32 file)."""
    meta = job.meta.model_copy(update={"val_acc": job.result["val_acc"]})
    if job.precision == "int8":
        meta = meta.model_copy(update={"predicted_latency_ms": None})
    tmp = job.files["onnx"].tmp
    write_metadata(tmp, tmp, meta)


def staged_onnx(job: ExportJob) -> list[tuple[str, Path]]:
    """(role, work file) of every ONNX model this export produces, in a fixed order."""
    return [(role, job.files[role].tmp) for role in ("onnx", "int8") if role in job.files]


def is_int8_file(path: str | Path) -> bool:
    """True for a QDQ-quantised graph (it holds QuantizeLinear nodes)."""
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)
