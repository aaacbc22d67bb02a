"""Low-level ONNX / ONNX Runtime helpers shared by the latency profiler and the export stage.

One place decides how a graph is exported, how a session is configured and how a
latency is measured, so that a block measured by the profiler, a whole subnet
measured by `latency validate` and the model `hwnas export` ships all run under the
same conditions (graph optimisation ALL, fixed thread counts, sequential execution).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hwnas.errors import UserError
from hwnas.fileio import atomic_path, write_bytes
from hwnas.runtime import ortbench

if TYPE_CHECKING:  # heavy imports stay lazy: `hwnas latency predict` must not need torch
    import onnxruntime
    import torch

__all__ = [
    "LatencyStats", "MeasureProtocol", "export_onnx", "export_onnx_bytes", "fix_input_shape", "make_session",
    "measure_latency", "quantize_static_qdq", "quantize_static_qdq_bytes", "stats_from_samples", "available_providers",
    "check_target", "ortbench",
]


class MeasureProtocol(BaseModel):
    """How one latency is measured (mirrors `ortbench.DEFAULT_PROTOCOL`, the standalone runner's).

    Warm-up, then timed runs until both a minimum count and a minimum time are reached (capped),
    so fast graphs get many samples and slow ones enough; several interleaved rounds; noisy
    entries re-measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_runs: int = Field(default=ortbench.DEFAULT_PROTOCOL["warmup_runs"], ge=0)
    warmup_s: float = Field(default=ortbench.DEFAULT_PROTOCOL["warmup_s"], ge=0.0)
    revisit_warmup_runs: int = Field(default=ortbench.DEFAULT_PROTOCOL["revisit_warmup_runs"], ge=0)
    min_repeats: int = Field(default=ortbench.DEFAULT_PROTOCOL["min_repeats"], ge=3)
    max_repeats: int = Field(default=ortbench.DEFAULT_PROTOCOL["max_repeats"], ge=3)
    min_time_s: float = Field(default=ortbench.DEFAULT_PROTOCOL["min_time_s"], ge=0.0)
    rounds: int = Field(default=ortbench.DEFAULT_PROTOCOL["rounds"], ge=1)
    noisy_rel_mad: float = Field(default=ortbench.DEFAULT_PROTOCOL["noisy_rel_mad"], gt=0.0)
    max_remeasure: int = Field(default=ortbench.DEFAULT_PROTOCOL["max_remeasure"], ge=0)


class LatencyStats(BaseModel):
    """Summary of timed runs in milliseconds: the median is what tables and reports use."""

    model_config = ConfigDict(extra="forbid")

    median_ms: float = Field(ge=0.0)
    mean_ms: float = Field(ge=0.0)
    p10_ms: float = Field(ge=0.0)
    p90_ms: float = Field(ge=0.0)
    mad_ms: float = Field(ge=0.0, description="median absolute deviation")
    repeats: int = Field(ge=1)

    @property
    def rel_spread(self) -> float:
        """MAD / median: the dispersion that flags a noisy measurement."""
        return self.mad_ms / self.median_ms if self.median_ms > 0 else 0.0


def stats_from_samples(samples_ms: np.ndarray | list[float]) -> LatencyStats:
    if len(samples_ms) == 0:
        raise ValueError("no latency samples")
    return LatencyStats.model_validate(ortbench.summarize(samples_ms))


# ---------------------------------------------------------------- export

def export_onnx_bytes(
    module: "torch.nn.Module",
    example_input: "torch.Tensor",
    *,
    dynamic_batch: bool = True,
    dynamic_spatial: bool = False,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "logits",
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Export to an in-memory ONNX model (legacy TorchScript exporter: ~20x faster than dynamo
    for the thousands of tiny block graphs the profiler exports)."""
    import onnx
    import torch

    module = module.eval()
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_spatial:
        axes[2], axes[3] = "height", "width"
    dyn = {input_name: axes} if axes else None
    if dyn is not None:
        dyn[output_name] = {0: "batch"} if dynamic_batch else {}
        if not dyn[output_name]:
            del dyn[output_name]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example_input,), buf, opset_version=opset, input_names=[input_name], output_names=[output_name],
            dynamic_axes=dyn, do_constant_folding=True, dynamo=False,
        )
    data = buf.getvalue()
    if metadata:
        model = onnx.load_from_string(data)
        for k, v in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        data = model.SerializeToString()
    return data


def export_onnx(
    module: "torch.nn.Module",
    example_input: "torch.Tensor",
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "logits",
    metadata: dict[str, str] | None = None,
    dynamic_spatial: bool = False,
) -> Path:
    """Export `module` to ONNX at `path`, written atomically; `metadata` goes into metadata_props."""
    data = export_onnx_bytes(
        module, example_input, dynamic_batch=dynamic_batch, dynamic_spatial=dynamic_spatial, opset=opset,
        input_name=input_name, output_name=output_name, metadata=metadata,
    )
    return write_bytes(path, data)


def fix_input_shape(model: bytes, shape: tuple[int, ...]) -> bytes:
    """Pin the (single) graph input of a model exported with dynamic axes to a static shape, so one
    export serves every resolution and ORT still optimises it with static shapes."""
    import onnx

    m = onnx.load_from_string(model)
    inp = m.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ValueError(f"input rank {len(dims)} != len(shape) {len(shape)}")
    for d, v in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    return m.SerializeToString()


# ---------------------------------------------------------------- sessions

def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def make_session(
    model: str | Path | bytes,
    *,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    dim_overrides: dict[str, int] | None = None,
) -> "onnxruntime.InferenceSession":
    """An InferenceSession with deployment options: ORT_ENABLE_ALL, `threads` intra-op threads, one
    inter-op thread, sequential execution (`dim_overrides` pins named free dimensions)."""
    check_target(threads, provider)
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise UserError(f"{p}: no such ONNX file")
        model = str(p)
    return ortbench.make_session(model, threads, provider, dim_overrides)


def check_target(threads: int, provider: str) -> None:
    """UserError for a thread count or execution provider this machine cannot use."""
    if threads < 1:
        raise UserError(f"--threads: must be >= 1, got {threads}")
    avail = available_providers()
    if provider not in avail:
        raise UserError(f"--provider: '{provider}' is not available in this onnxruntime build; available: {', '.join(avail)}")


def measure_latency(
    session: "onnxruntime.InferenceSession", input_shape: tuple[int, ...], *, protocol: MeasureProtocol | None = None
) -> LatencyStats:
    """Median latency (ms) of `session` on a random input of `input_shape`, with dispersion.

    The protocol's rounds run back to back here (the profiler interleaves them across graphs);
    a noisy result is re-measured and the least dispersed measurement kept."""
    p = (protocol or MeasureProtocol()).model_dump()
    fn = ortbench.bound_runner(session, ortbench.random_feed(session, input_shape))
    ortbench.warm_up(fn, p["warmup_runs"], p["warmup_s"])
    best: dict[str, Any] | None = None
    for _ in range(p["max_remeasure"] + 1):
        samples = ortbench.time_runs(fn, p["min_repeats"], p["min_time_s"], p["max_repeats"])
        st = ortbench.summarize(samples)
        if best is None or ortbench.rel_spread(st) < ortbench.rel_spread(best):
            best = st
        if ortbench.rel_spread(st) <= p["noisy_rel_mad"]:
            break
    assert best is not None
    return LatencyStats.model_validate(best)


# ---------------------------------------------------------------- quantisation

class _ArrayReader:
    """CalibrationDataReader over a list of input arrays (ORT's reader protocol)."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]):
        self._it = iter([{input_name: a.astype(np.float32)} for a in arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - some ORT versions call it
        pass


def quantize_static_qdq(
    model_in: str | Path,
    model_out: str | Path,
    calibration: list[np.ndarray] | np.ndarray,
    *,
    input_name: str = "input",
    per_channel: bool = True,
) -> Path:
    """Static INT8 quantisation in QDQ form, calibrated (MinMax) on `calibration` inputs.

    `calibration` is a list of input batches or one array whose first axis is split into batches of
    one. Weights are quantised per output channel (symmetric int8), activations as uint8. The float
    model is pre-processed (shape inference, optimisation) first, as ORT recommends."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    arrays = [calibration[i : i + 1] for i in range(len(calibration))] if isinstance(calibration, np.ndarray) else list(calibration)
    if not arrays:
        raise UserError("int8 quantisation needs at least one calibration input")

    class Reader(_ArrayReader, CalibrationDataReader):
        pass

    import tempfile

    model_in, model_out = Path(model_in), Path(model_out)
    with tempfile.TemporaryDirectory() as d, atomic_path(model_out) as tmp:
        pre = Path(d) / "pre.onnx"
        try:
            quant_pre_process(str(model_in), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:  # pre-processing is an optimisation; quantise the raw graph if it fails
            src = model_in
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(src), str(tmp), Reader(input_name, arrays), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    return model_out


def quantize_static_qdq_bytes(model: bytes, calibration: list[np.ndarray], *, input_name: str = "input", workdir: str | Path | None = None) -> bytes:
    """`quantize_static_qdq` on in-memory models (ORT's quantiser works on files; a temp dir holds them)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as d:
        src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
        src.write_bytes(model)
        quantize_static_qdq(src, dst, calibration, input_name=input_name)
        return dst.read_bytes()


