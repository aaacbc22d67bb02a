"""The `.ort` stage: ONNX Runtime Mobile's model format and the operator list of a reduced build.

Conversion is ONNX Runtime's own (`onnxruntime.tools.convert_onnx_models_to_ort`, fixed
optimisation style, portable: no x86-only NCHWc layout), so the file is exactly what ORT's
documented mobile workflow produces. The required-operators config is what a reduced build
takes (`build.sh --include_ops_by_config`). Each `.ort` must load and reproduce its ONNX
model's outputs on the validation images before it is published.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.export.check import ort_logits
from hwnas.export.job import ExportJob, Staged
from hwnas.export.onnx_stages import staged_onnx

ORT_RTOL = 1e-5
"""fp32: max |ort - onnx| / max |onnx| must not exceed this; INT8 outputs must be identical."""
CONFIG_SUFFIX = ".required_operators.config"


class OrtFormatError(HwnasError):
    """The converted .ort model does not reproduce its ONNX model (a bug or an ORT problem: exit 1)."""


def ort_path(onnx_path: str | Path) -> Path:
    """model.onnx -> model.ort (model.fp32.onnx -> model.fp32.ort)."""
    return Path(onnx_path).with_suffix(".ort")


def config_path(onnx_path: str | Path) -> Path:
    """model.onnx -> model.required_operators.config (ORT's own naming)."""
    p = Path(onnx_path)
    return p.with_name(p.stem + CONFIG_SUFFIX)


def convert_to_ort(onnx_file: Path, out_dir: Path) -> tuple[Path, Path]:
    """Convert one ONNX file with ORT's converter into `out_dir`: (the .ort file, its required-operators config).

    The converter prints progress: it goes to stderr so `--json` keeps stdout to one line."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):
        convert_onnx_models_to_ort(onnx_file, output_dir=out_dir, optimization_styles=[OptimizationStyle.Fixed])
    ort_file, config = out_dir / (onnx_file.stem + ".ort"), out_dir / (onnx_file.stem + CONFIG_SUFFIX)
    if not (ort_file.is_file() and config.is_file()):
        raise OrtFormatError(f"ONNX Runtime's converter did not write {ort_file.name} and {config.name}")
    return ort_file, config


def compare_outputs(onnx_file: Path, ort_file: Path, x: np.ndarray, int8: bool) -> float:
    """Run both files in ONNX Runtime on `x`; raise OrtFormatError unless they agree. Returns the max relative diff."""
    import onnxruntime as ort

    def session(path: Path) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the converter leaves NCHWc out (x86-only layout) and QDQ as uint8; the ONNX side runs the same way
        so.add_session_config_entry("session.qdqisint8allowed", "0")
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"])

    a, b = ort_logits(session(onnx_file), x), ort_logits(session(ort_file), x)
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
    rel = diff / max(float(np.abs(a).max()) if a.size else 0.0, 1e-12)
    if (int8 and diff != 0.0) or rel > ORT_RTOL:
        kind = "INT8 outputs must be identical" if int8 else f"more than {ORT_RTOL:g} relative"
        raise OrtFormatError(f"{ort_file.name} differs from {onnx_file.name}: max |diff| {diff:.2e} ({rel:.2e} relative; {kind})")
    return rel


def _name_source(config: Path, ort_name: str) -> None:
    """The converter's header names the temporary .ort it read; name the published file instead."""
    lines = config.read_text().splitlines()
    kept = [ln for ln in lines if not ln.startswith("# - ")]
    config.write_text("\n".join(kept[:1] + [f"# - {ort_name}"] + kept[1:]) + "\n")


def ort_stage(job: ExportJob) -> None:
    """Convert every ONNX model of the export to .ort with its reduced-build operator config; prove each .ort."""
    x = job.xv.numpy()
    checks: dict[str, float] = {}
    for role, tmp in staged_onnx(job):
        ort_tmp, config = convert_to_ort(tmp, job.workdir / f"ort-{role}")
        dst = job.files[role].dst
        checks[str(ort_path(dst))] = compare_outputs(tmp, ort_tmp, x, int8=(role == "int8"))
        job.files[f"{role}.ort"] = Staged(ort_tmp, ort_path(dst))
        _name_source(config, ort_path(dst).name)
        job.files[f"{role}.ort_config"] = Staged(config, config_path(dst))
    deployed = "int8" if job.precision == "int8" else "onnx"
    job.result.update(ort=str(job.files[f"{deployed}.ort"].dst), ort_config=str(job.files[f"{deployed}.ort_config"].dst),
                      ort_files=sorted(checks), ort_max_rel_diff=max(checks.values()))
    job.log(f"ort: {', '.join(Path(p).name for p in checks)} match their ONNX models on {len(x)} validation images "
            f"(max relative difference {max(checks.values()):.1e}); reduced-build operators in "
            f"{job.files[f'{deployed}.ort_config'].dst.name}")
