"""PyTorch -> ONNX export with the settings every hwnas graph uses (opset, names, fixed shapes)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING


from hwnas.fileio import write_bytes

if TYPE_CHECKING:  # heavy imports stay lazy: `hwnas latency predict` must not need torch
    import torch


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
