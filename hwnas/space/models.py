"""Search spaces and subnets as validated data.

A `Space` is a compact description of a once-for-all MobileNetV3-style supernet
(in the spirit of timm's architecture strings, but typed). A `Subnet` is one
architecture of a space: resolution, depth per stage, kernel and expand ratio per
active block. Subnets are only ever created through `Space.validate_subnet`, so a
subnet object in hand is always valid for its space.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwnas.errors import UserError

Activation = Literal["relu", "hswish"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never dropping below 90% (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StemSpec(_Strict):
    out_channels: int = Field(gt=0)
    kernel: int = Field(default=3, gt=0)
    stride: int = Field(default=2, ge=1, le=4)
    act: Activation = "hswish"


class FixedBlockSpec(_Strict):
    """OFA's fixed first block: a depthwise-separable conv (expand 1) kept out of the search."""

    out_channels: int = Field(gt=0)
    kernel: int = Field(default=3, gt=0)
    stride: int = Field(default=1, ge=1, le=4)
    act: Activation = "relu"
    se: bool = False


class StageSpec(_Strict):
    out_channels: int = Field(gt=0)
    stride: int = Field(ge=1, le=4)
    act: Activation
    se: bool = False
    depths: list[int] = Field(min_length=1)
    kernels: list[int] = Field(min_length=1)
    expands: list[int] = Field(min_length=1)

    @field_validator("depths", "expands")
    @classmethod
    def _positive_sorted_unique(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError("choices must be positive integers")
        if sorted(set(v)) != v:
            raise ValueError(f"choices must be strictly increasing, got {v}")
        return v

    @field_validator("kernels")
    @classmethod
    def _odd_kernels(cls, v: list[int]) -> list[int]:
        if any(k <= 0 or k % 2 == 0 for k in v):
            raise ValueError(f"kernel sizes must be positive odd integers, got {v}")
        if sorted(set(v)) != v:
            raise ValueError(f"choices must be strictly increasing, got {v}")
        return v

    @property
    def max_depth(self) -> int:
        return self.depths[-1]


class HeadSpec(_Strict):
    """MobileNetV3 head: 1x1 expand (BN, act) -> global pool -> 1x1 feature mix (no BN) -> classifier."""

    final_expand: int = Field(gt=0)
    feature_mix: int | None = Field(default=None, gt=0)
    act: Activation = "hswish"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class Space(_Strict):
    """A once-for-all MBConv search space."""

    name: str = Field(min_length=1)
    in_channels: int = Field(default=3, gt=0)
    num_classes: int = Field(default=1000, ge=2)
    width_mult: float = Field(default=1.0, gt=0)
    se_reduction: int = Field(default=4, gt=0)
    stem: StemSpec
    first_block: FixedBlockSpec | None = None
    stages: list[StageSpec] = Field(min_length=1)
    head: HeadSpec
    resolutions: list[int] = Field(min_length=1)
    default_resolution: int | None = None

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, v: list[int]) -> list[int]:
        if any(r < 8 for r in v):
            raise ValueError(f"resolutions must be >= 8, got {v}")
        if sorted(set(v)) != v:
            raise ValueError(f"resolutions must be strictly increasing, got {v}")
        return v

    @model_validator(mode="after")
    def _default_res(self) -> "Space":
        if self.default_resolution is not None and self.default_resolution not in self.resolutions:
            raise ValueError(f"default_resolution {self.default_resolution} is not one of resolutions {self.resolutions}")
        return self

    # ---- derived widths (width multiplier applied once, here) ----
    def channels(self, c: int) -> int:
        return make_divisible(c * self.width_mult, 8) if self.width_mult != 1.0 else c

    @property
    def stem_channels(self) -> int:
        return self.channels(self.stem.out_channels)

    @property
    def first_block_channels(self) -> int | None:
        return self.channels(self.first_block.out_channels) if self.first_block else None

    def stage_channels(self, i: int) -> int:
        return self.channels(self.stages[i].out_channels)

    @property
    def head_channels(self) -> tuple[int, int | None]:
        h = self.head
        return self.channels(h.final_expand), (self.channels(h.feature_mix) if h.feature_mix else None)

    @property
    def max_blocks(self) -> list[int]:
        return [s.max_depth for s in self.stages]

    @property
    def eval_resolution(self) -> int:
        return self.default_resolution or self.resolutions[-1]

    # ---- counting ----
    def num_subnets_per_resolution(self) -> int:
        total = 1
        for s in self.stages:
            per_block = len(s.kernels) * len(s.expands)
            total *= sum(per_block**d for d in s.depths)
        return total

    # ---- subnets ----
    def validate_subnet(self, obj: Any) -> "Subnet":
        """dict / JSON text / Subnet -> Subnet valid for this space, or ValueError naming the field."""
        if isinstance(obj, Subnet):
            obj = obj.model_dump()
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise UserError(f"subnet: invalid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(obj, dict):
            raise UserError(f"subnet: expected a JSON object, got {type(obj).__name__}")
        obj = dict(obj)
        declared = obj.pop("space", None)
        if declared is not None and declared != self.name:
            raise UserError(f"subnet.space: subnet is for space '{declared}', not '{self.name}'")
        try:
            raw = _SubnetRaw.model_validate(obj)
        except ValidationError as e:
            from hwnas.fileio import format_validation_error

            raise UserError(format_validation_error("subnet", e)) from None
        _check_against_space(self, raw)
        return Subnet(space=self.name, **raw.model_dump())

    def sample(self, seed: int | None = None, rng: np.random.Generator | None = None,
               depth_weights: Mapping[int, Sequence[float]] | None = None) -> "Subnet":
        """Uniformly sample (per choice, as OFA does) a subnet; `depth_weights` (stage index -> relative
        weights of its depth choices) skews the depth of the stages it names."""
        rng = rng if rng is not None else np.random.default_rng(seed)
        probs = self.depth_probabilities(depth_weights or {})
        depths = [int(rng.choice(s.depths, p=probs.get(i))) for i, s in enumerate(self.stages)]
        kernels = [[int(rng.choice(s.kernels)) for _ in range(d)] for s, d in zip(self.stages, depths)]
        expands = [[int(rng.choice(s.expands)) for _ in range(d)] for s, d in zip(self.stages, depths)]
        res = int(rng.choice(self.resolutions))
        return self.validate_subnet(dict(resolution=res, depths=depths, kernels=kernels, expands=expands))

    def depth_probabilities(self, depth_weights: Mapping[int, Sequence[float]]) -> dict[int, list[float]]:
        """Normalised depth weights per named stage; ValueError names a stage that does not exist or
        a weight list whose length is not that stage's number of depth choices."""
        out = {}
        for i, w in depth_weights.items():
            if not 0 <= i < len(self.stages):
                raise ValueError(f"depth weights for stage {i}: the space has stages 0..{len(self.stages) - 1}")
            if len(w) != len(self.stages[i].depths):
                raise ValueError(f"depth weights for stage {i}: {len(w)} weights for its {len(self.stages[i].depths)} "
                                 f"open depth choices {self.stages[i].depths}")
            total = float(sum(w))
            if not total > 0:
                raise ValueError(f"depth weights for stage {i}: all 0")
            out[i] = [float(x) / total for x in w]
        return out

    def smallest(self, resolution: int | None = None) -> "Subnet":
        return self._uniform(0, resolution if resolution is not None else self.resolutions[0])

    def largest(self, resolution: int | None = None) -> "Subnet":
        return self._uniform(-1, resolution if resolution is not None else self.resolutions[-1])

    def _uniform(self, idx: int, resolution: int) -> "Subnet":
        depths = [s.depths[idx] for s in self.stages]
        return self.validate_subnet(
            dict(
                resolution=resolution,
                depths=depths,
                kernels=[[s.kernels[idx]] * d for s, d in zip(self.stages, depths)],
                expands=[[s.expands[idx]] * d for s, d in zip(self.stages, depths)],
            )
        )

    def to_file_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class _SubnetRaw(_Strict):
    resolution: int
    depths: list[int]
    kernels: list[list[int]]
    expands: list[list[int]]


def _check_against_space(space: Space, raw: _SubnetRaw) -> None:
    n = len(space.stages)
    if raw.resolution not in space.resolutions:
        raise UserError(f"subnet.resolution: {raw.resolution} is not one of {space.resolutions} (space '{space.name}')")
    for field in ("depths", "kernels", "expands"):
        got = len(getattr(raw, field))
        if got != n:
            raise UserError(f"subnet.{field}: needs one entry per stage ({n} stages), got {got}")
    for i, (s, d) in enumerate(zip(space.stages, raw.depths)):
        if d not in s.depths:
            raise UserError(f"subnet.depths.{i}: {d} is not one of {s.depths}")
        for field, choices in (("kernels", s.kernels), ("expands", s.expands)):
            row = getattr(raw, field)[i]
            if len(row) != d:
                raise UserError(f"subnet.{field}.{i}: stage depth is {d} but {len(row)} values were given")
            for j, v in enumerate(row):
                if v not in choices:
                    raise UserError(f"subnet.{field}.{i}.{j}: {v} is not one of {choices}")


class Subnet(_Strict):
    """One architecture of a space (always validated: build it with `Space.validate_subnet`)."""

    space: str
    resolution: int
    depths: list[int]
    kernels: list[list[int]]
    expands: list[list[int]]

    def to_json(self) -> str:
        """Canonical JSON: fixed key order, no whitespace variation; equal subnets give equal text."""
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        return self.to_json()

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """(stage, index in stage, kernel, expand) for every active block, in order."""
        return [
            (i, j, k, e)
            for i, (ks, es) in enumerate(zip(self.kernels, self.expands))
            for j, (k, e) in enumerate(zip(ks, es))
        ]

    def __hash__(self) -> int:
        return hash(self.to_json())


def subnet_count_log10(space: Space) -> float:
    return math.log10(space.num_subnets_per_resolution())
