"""Static QDQ INT8 quantisation with ONNX Runtime's quantiser, calibrated on real images."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

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
