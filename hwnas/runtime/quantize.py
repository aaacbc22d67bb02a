"""Static QDQ INT8 quantisation with ONNX Runtime's quantiser: exported models calibrated on real images, latency
graphs on random inputs of their shape (`quantize_many`, in parallel processes)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from hwnas.errors import UserError
from hwnas.fileio import atomic_path

if TYPE_CHECKING:  # heavy imports stay lazy: `hwnas latency predict` must not need torch
    pass


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


def calibration_inputs(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """The `n` random-normal inputs a latency graph is calibrated on: its latency, not its accuracy, is what the
    profiler measures, so any input of the right shape gives the graph its real QDQ structure."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _quantize_job(job: tuple[bytes, tuple[int, ...]]) -> bytes:
    model, shape = job
    return quantize_static_qdq_bytes(model, calibration_inputs(tuple(shape)))


def quantize_workers(jobs: int) -> int:
    """Processes for `quantize_many`: one per CPU this process may use (at most 8), never more than the jobs."""
    from hwnas.runtime.load import usable_cpus

    return max(1, min(usable_cpus(), 8, jobs))


def quantize_many(models: list[tuple[bytes, tuple[int, ...]]], *, workers: int | None = None,
                  on_done: Callable[[], None] | None = None) -> list[bytes]:
    """`quantize_static_qdq_bytes` of each (model, input shape), calibrated on `calibration_inputs`, in order.

    Why in processes: ORT's quantiser is pure Python for the most part (per-channel scales, graph rewrites) and
    held three quarters of an INT8 profile's time, one graph after another on one core. Each graph is independent,
    so `workers` processes (default `quantize_workers`) share them; the bytes are the same as one process makes.
    Processes are spawned, not forked: the parent may hold torch's thread pools. Nothing is measured meanwhile
    (the profiler times graphs only after all are made)."""
    n = quantize_workers(len(models)) if workers is None else max(1, min(int(workers), len(models)))
    out: list[bytes] = []
    if n > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        try:
            with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
                for data in pool.map(_quantize_job, models, chunksize=1):
                    out.append(data)
                    if on_done is not None:
                        on_done()
            return out
        except (OSError, ImportError, BrokenProcessPool):  # no process pools here (e.g. Android's Python): go on in this one
            pass
    for job in models[len(out):]:
        out.append(_quantize_job(job))
        if on_done is not None:
            on_done()
    return out
