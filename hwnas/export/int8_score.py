"""A candidate's accuracy as the INT8 export would deliver it, without exporting it.

The search ranks subnets by their fp32 accuracy with the supernet's weights, but quantisation costs some
subnets more than others. `score_int8` builds the fp32 and QDQ INT8 graphs of one subnet exactly as
`export_subnet(..., int8=True)` does (recalibrated BN, folded, the same INT8 calibration images) and
scores both through ONNX Runtime, so generate --int8 can rank its finalists by what it would ship.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas.export.check import ort_accuracy, preprocess
from hwnas.export.core import inherited_network
from hwnas.export.fold import fold_batchnorm
from hwnas.export.onnx_io import export_graph
from hwnas.export.onnx_stages import quantize_calibrated


@dataclass(frozen=True)
class Int8Score:
    """Validation accuracy (0..1, ONNX Runtime) of one subnet's fp32 and INT8 models, and on how many images."""

    fp32_acc: float
    int8_acc: float
    val_images: int


def score_int8(net: Any, subnet: Any, ds: Any, *, val_images: int | None = None, seed: int = 0) -> Int8Score:
    """fp32 and INT8 ONNX Runtime accuracy of `subnet` with the supernet `net`'s weights, built as the export
    builds them. `val_images` scores on that fixed, class-stratified subset (`Dataset.with_val_subset`, as the
    search's --val-images) instead of every validation image; the model files are temporary."""
    sub = net.space.validate_subnet(subnet)
    val = ds.with_val_subset(val_images, seed=seed) if val_images is not None else ds
    x, y = preprocess(val.val_x, sub.resolution, ds.mean, ds.std).numpy(), val.val_y.numpy()
    folded = fold_batchnorm(inherited_network(net, sub, ds).eval().cpu().float())
    with tempfile.TemporaryDirectory(prefix="hwnas-int8-score-") as tmpd:
        fp32 = export_graph(folded, sub.resolution, Path(tmpd) / "model.onnx", channels=net.space.in_channels)
        int8 = quantize_calibrated(fp32, Path(tmpd) / "model.int8.onnx", ds, sub.resolution)
        return Int8Score(fp32_acc=ort_accuracy(fp32, x, y), int8_acc=ort_accuracy(int8, x, y), val_images=len(y))
