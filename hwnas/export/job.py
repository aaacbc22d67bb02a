"""The state one export carries from stage to stage.

Export is a sequence of small stage functions `stage(job) -> None` (see `core.export_stages`);
each reads what earlier stages left on the job and adds its own part. A new output format
is one more stage appended to the list, not a branch inside a long function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hwnas.progress import log


@dataclass
class Staged:
    """One output file: checked in the job's work folder (`tmp`), moved to `dst` only at publish."""

    tmp: Path
    dst: Path


@dataclass
class ExportJob:
    """Inputs (validated before any expensive work), intermediate results and staged outputs of one export."""

    supernet: torch.nn.Module
    space: Any
    subnet: Any
    ds: Any
    out: Path
    int8_out: Path
    int8: bool
    ort_format: bool
    table: Any
    threads: int
    provider: str
    protocol: Any
    precision: str
    device: str
    calibration_images: int
    predicted_acc: float | None
    predicted_ms: float | None
    weights: torch.nn.Module | None
    macs: int
    params: int
    progress: bool = True
    workdir: Path = Path(".")
    net: torch.nn.Module | None = None
    folded: torch.nn.Module | None = None
    xv: torch.Tensor | None = None
    yv: np.ndarray | None = None
    ref: np.ndarray | None = None
    meta: Any = None
    files: dict[str, Staged] = field(default_factory=dict)
    """Staged outputs by role: `onnx` (fp32), `int8`, and with --ort-format `<role>.ort`, `<role>.ort_config`."""
    result: dict[str, Any] = field(default_factory=dict)
    """ExportResult fields the stages have measured so far."""
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.subnet.resolution)

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self.ds.mean]

    @property
    def std(self) -> list[float]:
        return [float(v) for v in self.ds.std]

    def log(self, msg: str) -> None:
        log(self.progress, msg)


Stage = Callable[[ExportJob], None]
