"""Whole-batch augmentation on whatever device the batch lives on.

Per-image PIL transforms would make the CPU the bottleneck of supernet training;
instead one `affine_grid` + `grid_sample` call does random crop (translation within
a padded frame), optional horizontal flip and the resize to the sampled resolution
for the whole batch at once.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Disable autocast so augmentation is always computed and returned in float32."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        return contextlib.nullcontext()


def _stats(values: Sequence[float] | torch.Tensor, channels: int, device: torch.device, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() != channels:
        raise ValueError(f"{what} has {t.numel()} values for {channels} channels")
    return t.view(1, channels, 1, 1)


def augment_batch(
    x_uint8: torch.Tensor,
    resolution: int,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    flip: bool = True,
    cutout: float = 0.0,
) -> torch.Tensor:
    """uint8 [B,C,H,W] -> normalised float32 [B,C,resolution,resolution] on the same device.

    train=True: per-image random crop from the image zero-padded by H//8 on each side,
    random horizontal flip (only when `flip`; pass flip=False for data such as digits
    that are not mirror-invariant), bilinear resize to `resolution`, and with `cutout` > 0 one
    square of side `cutout` x resolution at a random centre (clipped at the border) set to the
    data's mean (DeVries & Taylor 2017). train=False: plain
    bilinear resize. Random draws come from `generator` (on its own device), so a
    seeded generator gives identical output on any device.
    """
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise TypeError(f"augment_batch expects a uint8 [B,C,H,W] tensor, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    device = x_uint8.device
    b, c, h, w = x_uint8.shape
    with _no_autocast(device):
        mean_t = _stats(mean, c, device, "mean")
        std_t = _stats(std, c, device, "std")
        x = x_uint8.to(torch.float32).mul_(1.0 / 255.0)
        if b == 0:
            return torch.empty(0, c, resolution, resolution, dtype=torch.float32, device=device)
        if train:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            pad_y, pad_x = h // 8, w // 8
            # Whole-pixel offsets in [-pad, pad]: a random crop of the padded image.
            tx = torch.randint(-pad_x, pad_x + 1, (b,), generator=generator, device=gen_device)
            ty = torch.randint(-pad_y, pad_y + 1, (b,), generator=generator, device=gen_device)
            tx = tx.to(device=device, dtype=torch.float32)
            ty = ty.to(device=device, dtype=torch.float32)
            if flip:
                coin = torch.randint(0, 2, (b,), generator=generator, device=gen_device)
                sx = (1 - 2 * coin).to(device=device, dtype=torch.float32)
            else:
                sx = torch.ones(b, device=device)
            # Normalised coords (align_corners=False): identity theta == bilinear resize;
            # adding 2*t/W shifts the sampling window by t whole input pixels; sx=-1 mirrors.
            theta = torch.zeros(b, 2, 3, device=device)
            theta[:, 0, 0] = sx
            theta[:, 0, 2] = 2.0 * tx / w
            theta[:, 1, 1] = 1.0
            theta[:, 1, 2] = 2.0 * ty / h
            grid = F.affine_grid(theta, [b, c, resolution, resolution], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        elif (h, w) != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)
        x = x.sub_(mean_t).div_(std_t)
        return _cutout(x, cutout, generator, gen_device) if train and cutout > 0 else x


def cutout_batch(x: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """`augment_batch`'s cutout on a batch it returned (normalised float, in place): one square of side
    `fraction` x size per image at a random centre set to 0 (the data's mean), so a view can be shared
    with and without it."""
    if not 0 < fraction < 1:
        raise ValueError(f"cutout fraction must be in (0, 1), got {fraction}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    with _no_autocast(x.device):
        return _cutout(x, fraction, generator, gen_device)


def _cutout(x: torch.Tensor, fraction: float, generator: torch.Generator | None, gen_device: torch.device) -> torch.Tensor:
    """Zero (the mean, after normalisation) one square of side `fraction` x size per image, at a random centre."""
    b, _, h, w = x.shape
    side = max(1, round(fraction * min(h, w)))
    cy = torch.randint(0, h, (b,), generator=generator, device=gen_device).to(x.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=gen_device).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    lo_y, lo_x = (cy - side // 2).view(b, 1, 1), (cx - side // 2).view(b, 1, 1)
    hole = (ys >= lo_y) & (ys < lo_y + side) & (xs >= lo_x) & (xs < lo_x + side)
    return x.masked_fill_(hole.unsqueeze(1), 0.0)
