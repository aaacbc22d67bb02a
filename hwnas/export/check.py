"""Proving an exported model: ONNX Runtime against PyTorch on real images, and accuracy.

The parity check runs the file in a fresh ONNX Runtime session (not the exporter's
in-memory graph), so what is checked is exactly what the user deploys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hwnas.export.onnx_io import INPUT_NAME, OUTPUT_NAME


def preprocess(x_uint8: torch.Tensor, resolution: int, mean: Sequence[float], std: Sequence[float], batch_size: int = 1000) -> torch.Tensor:
    """uint8 images -> the float32 tensor the exported model takes (the documented preprocessing)."""
    from hwnas.data import augment_batch

    parts = [augment_batch(x_uint8[i:i + batch_size], resolution, mean, std, train=False) for i in range(0, len(x_uint8), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, x_uint8.shape[1], resolution, resolution)


@torch.no_grad()
def torch_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    model.eval()
    ref = next(model.parameters())
    out = [model(x[i:i + batch_size].to(ref.device, ref.dtype)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def open_session(path: str | os.PathLike[str], threads: int = 1, provider: str = "CPUExecutionProvider"):
    """A fresh ONNX Runtime session on the file (the shared runtime helper decides session options)."""
    from hwnas.runtime import make_session

    return make_session(str(path), threads=threads, provider=provider)


def ort_logits(session, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)})[0]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def accuracy_from_logits(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean()) if len(y) else float("nan")


def ort_accuracy(path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a model file on (x, y) in a fresh ONNX Runtime session (as many threads as torch uses)."""
    return accuracy_from_logits(ort_logits(open_session(path, threads=max(1, torch.get_num_threads())), x), y)


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    max_rel_diff: float  # max |ort - torch| / max |torch|
    argmax_agreement: float


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    mad = float(diff.max()) if diff.size else 0.0
    return Parity(
        max_abs_diff=mad,
        max_rel_diff=mad / max(scale, 1e-12),
        argmax_agreement=float((reference.argmax(1) == candidate.argmax(1)).mean()) if len(reference) else 1.0,
    )
