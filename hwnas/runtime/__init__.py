"""Low-level ONNX / ONNX Runtime helpers shared by the latency profiler and the export stage.

One place decides how a graph is exported, how a session is configured and how a
latency is measured, so that a block measured by the profiler, a whole subnet
measured by `latency validate` and the model `hwnas export` ships all run under the
same conditions (graph optimisation ALL, fixed thread counts, sequential execution).
"""
from __future__ import annotations

from hwnas.runtime import ortbench
from hwnas.runtime.measure import (
    LatencyStats,
    MeasureProtocol,
    available_providers,
    legacy_protocol,
    check_target,
    make_session,
    measure_latency,
    stats_from_samples,
)
from hwnas.runtime.onnx_export import export_onnx, export_onnx_bytes, fix_input_shape
from hwnas.runtime.quantize import quantize_static_qdq, quantize_static_qdq_bytes

__all__ = [
    "LatencyStats", "MeasureProtocol", "export_onnx", "export_onnx_bytes", "fix_input_shape", "make_session",
    "measure_latency", "quantize_static_qdq", "quantize_static_qdq_bytes", "stats_from_samples", "available_providers",
    "check_target", "legacy_protocol", "ortbench",
]
