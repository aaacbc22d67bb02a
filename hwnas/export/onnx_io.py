"""Writing and reading the deployable ONNX file: graph export plus the metadata a
deployment needs (how to preprocess, what the classes are, where the model came from).

Everything a consumer must know to feed the model correctly travels inside the file,
so a model.onnx copied alone to a device is still self-describing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwnas.errors import UserError
from hwnas.fileio import format_validation_error

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
METADATA_KEY_PREFIX = "hwnas."


class Preprocessing(BaseModel):
    """How an RGB uint8 image becomes the model input (what `augment_batch(train=False)` does)."""

    model_config = ConfigDict(extra="forbid")
    resolution: int = Field(gt=0, description="bilinear resize (align_corners=False) to resolution x resolution")
    scale: float = Field(default=1.0 / 255.0, description="multiply uint8 pixels by this first")
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)
    layout: str = "NCHW float32 RGB"
    class_names: list[str] = Field(default_factory=list)


class ModelMetadata(BaseModel):
    """The hwnas facts stored as ONNX metadata_props (each value JSON-encoded, key prefixed `hwnas.`)."""

    model_config = ConfigDict(extra="forbid")
    version: str
    space: str
    subnet: dict[str, Any]
    preprocessing: Preprocessing
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    precision: Literal["fp32", "int8"] = "fp32"
    macs: int | None = None
    params: int | None = None
    predicted_latency_ms: float | None = None
    predicted_acc: float | None = None
    latency_target: dict[str, Any] | None = None
    val_acc: float | None = None
    space_definition: dict[str, Any] | None = None

    def to_props(self) -> dict[str, str]:
        d = self.model_dump(mode="json")
        return {METADATA_KEY_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in d.items() if v is not None}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelMetadata":
        raw: dict[str, Any] = {}
        for k, v in props.items():
            if not k.startswith(METADATA_KEY_PREFIX):
                continue
            try:
                raw[k[len(METADATA_KEY_PREFIX):]] = json.loads(v)
            except json.JSONDecodeError:
                raise UserError(f"{source}: metadata {k} is not valid JSON") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise UserError(format_validation_error(f"{source} metadata", e)) from None


def export_graph(module: torch.nn.Module, resolution: int, path: str | os.PathLike[str], channels: int = 3) -> Path:
    """Export `module` (eval mode, CPU, fp32) with a dynamic batch axis, input `input`, output `logits`."""
    module = module.eval().to("cpu", torch.float32)
    example = torch.zeros(1, channels, resolution, resolution)
    from hwnas.runtime import export_onnx

    export_onnx(module, example, str(path), dynamic_batch=True, opset=OPSET, input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    return Path(path)


def write_metadata(src: str | os.PathLike[str], dst: str | os.PathLike[str], meta: ModelMetadata) -> None:
    """Copy the ONNX file at `src` to `dst` with `meta` as its metadata_props (dst may equal src)."""
    import onnx

    model = onnx.load(str(src))
    keep = [p for p in model.metadata_props if not p.key.startswith(METADATA_KEY_PREFIX)]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.append(p)
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "hwnas"
    model.producer_version = meta.version
    onnx.save(model, str(dst))


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """The hwnas metadata of an exported model (UserError naming the file if absent or malformed)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file
        raise UserError(f"{p}: not a readable ONNX model ({e})") from None
    return ModelMetadata.from_props({m.key: m.value for m in model.metadata_props}, str(p))
