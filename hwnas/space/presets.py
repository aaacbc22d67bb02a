"""Preset spaces and `load_space` (preset name or JSON/YAML path)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from hwnas.errors import UserError
from hwnas.fileio import format_validation_error, read_structured
from hwnas.space.models import Space

_OFA = dict(depths=[2, 3, 4], kernels=[3, 5, 7], expands=[3, 4, 6])


def _mbv3_stages(strides: list[int]) -> list[dict]:
    widths = [24, 40, 80, 112, 160]
    acts = ["relu", "relu", "hswish", "hswish", "hswish"]
    ses = [False, True, False, True, True]
    return [dict(out_channels=w, stride=s, act=a, se=e, **_OFA) for w, s, a, e in zip(widths, strides, acts, ses)]


def mbv3_imagenet() -> Space:
    """OFA MobileNetV3 w1.0, as published (Cai et al., ICLR 2020): `ofa_mbv3_d234_e346_k357_w1.0`."""
    return _mbv3_imagenet("mbv3-imagenet", 1.0)


def mbv3_imagenet_w12() -> Space:
    """OFA MobileNetV3 w1.2 (`ofa_mbv3_d234_e346_k357_w1.2`): every width, head included, times 1.2,
    rounded by make_divisible(., 8) as OFA does."""
    return _mbv3_imagenet("mbv3-imagenet-w1.2", 1.2)


def _mbv3_imagenet(name: str, width_mult: float) -> Space:
    return Space.model_validate(
        dict(
            name=name,
            num_classes=1000,
            width_mult=width_mult,
            stem=dict(out_channels=16, kernel=3, stride=2, act="hswish"),
            first_block=dict(out_channels=16, kernel=3, stride=1, act="relu"),
            stages=_mbv3_stages([2, 2, 2, 1, 2]),
            head=dict(final_expand=960, feature_mix=1280, act="hswish", dropout=0.1),
            resolutions=list(range(128, 225, 4)),
            default_resolution=224,
        )
    )


def mbv3_cifar() -> Space:
    """The same choices for 32x32 inputs: stride-1 stem, three downsamplings (32 -> 4)."""
    return Space.model_validate(
        dict(
            name="mbv3-cifar",
            num_classes=10,
            stem=dict(out_channels=16, kernel=3, stride=1, act="hswish"),
            first_block=dict(out_channels=16, kernel=3, stride=1, act="relu"),
            stages=_mbv3_stages([2, 2, 2, 1, 1]),
            head=dict(final_expand=960, feature_mix=1280, act="hswish", dropout=0.1),
            resolutions=[24, 28, 32, 36, 40],
            default_resolution=32,
        )
    )


def mbv3_tiny() -> Space:
    """A narrow, shallow space for tests and the embedded digits demo (every code path, little compute)."""
    ch = dict(depths=[1, 2, 3], kernels=[3, 5, 7], expands=[2, 4, 6])
    return Space.model_validate(
        dict(
            name="mbv3-tiny",
            num_classes=10,
            stem=dict(out_channels=8, kernel=3, stride=1, act="hswish"),
            first_block=dict(out_channels=8, kernel=3, stride=1, act="relu"),
            stages=[
                dict(out_channels=16, stride=2, act="relu", se=False, **ch),
                dict(out_channels=24, stride=2, act="hswish", se=True, **ch),
                dict(out_channels=32, stride=1, act="hswish", se=True, **ch),
            ],
            head=dict(final_expand=96, feature_mix=128, act="hswish", dropout=0.0),
            resolutions=[12, 16, 20, 24],
            default_resolution=16,
        )
    )


PRESETS: dict[str, Callable[[], Space]] = {
    "mbv3-imagenet": mbv3_imagenet,
    "mbv3-imagenet-w1.2": mbv3_imagenet_w12,
    "mbv3-cifar": mbv3_cifar,
    "mbv3-tiny": mbv3_tiny,
}


def load_space(spec: str | Path | Space) -> Space:
    """A preset name or a path to a JSON/YAML space file -> validated Space."""
    if isinstance(spec, Space):
        return spec
    s = str(spec)
    if s in PRESETS:
        return PRESETS[s]()
    p = Path(s)
    if not p.exists():
        raise UserError(f"--space: '{s}' is neither a preset ({', '.join(PRESETS)}) nor an existing file")
    data = read_structured(p)
    if not isinstance(data, dict):
        raise UserError(f"{p}: a space file must hold a mapping, got {type(data).__name__}")
    try:
        return Space.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(str(p), e)) from None


def with_classes(space: Space, num_classes: int) -> Space:
    """The same space with a classifier for `num_classes` (set from the data at train time)."""
    return space if space.num_classes == num_classes else space.model_copy(update={"num_classes": num_classes})
