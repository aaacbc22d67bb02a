"""Accuracy of a network and of one subnet inherited from the supernet (BN recalibrated)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.data import augment_batch, calibration_subset
from hwnas.space.models import Subnet
from hwnas.train.bn import recalibrate_bn
from hwnas.train.distributed import memory_format_for
from hwnas.train.plan import SubnetEvalCost

if TYPE_CHECKING:
    from hwnas.data import Dataset
    from hwnas.supernet import Supernet


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    resolution: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy (0..1) in eval mode at `resolution`; the model's train/eval mode is restored."""
    if x_uint8.shape[0] == 0:
        raise ValueError("accuracy needs at least one image")
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    correct = 0
    try:
        for i in range(0, x_uint8.shape[0], batch_size):
            xb = augment_batch(x_uint8[i : i + batch_size].to(dev), resolution, mean, std, train=False)
            xb = xb.contiguous(memory_format=memory_format_for(dev))
            pred = model(xb).argmax(1)
            correct += int((pred.cpu() == y[i : i + batch_size].cpu()).sum())
    finally:
        model.train(was_training)
    return correct / x_uint8.shape[0]


@torch.no_grad()
def forward_seconds_per_image(net: nn.Module, x_uint8: torch.Tensor, resolution: int, mean: Sequence[float],
                              std: Sequence[float], device: str | torch.device = "cpu", passes: int = 3) -> float:
    """Eval-mode forward time per image of `net` on these images (one warm-up pass, then the median of
    `passes` timed ones): what evaluation, BN recalibration and the export's checks cost, for planning
    them. One timed pass read 1.6-2.9 ms an image for the same network on a 2-core CPU (BENCHMARKS.md)."""
    dev = torch.device(device)
    net = net.to(device=dev, memory_format=memory_format_for(dev)).eval()
    x = augment_batch(x_uint8.to(dev), resolution, mean, std, train=False).contiguous(memory_format=memory_format_for(dev))
    times = []
    for i in range(passes + 1):  # the first is a warm-up: allocators, kernel selection
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        net(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i > 0:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) / x.shape[0]


def evaluation_costs(supernet: "Supernet", subnets: Sequence[Subnet], ds: "Dataset", *, images: int = 128,
                     device: str | torch.device = "cpu", batch_size: int = 500) -> list[SubnetEvalCost]:
    """Seconds per image of each subnet's evaluation as `evaluate_subnet` runs it (extraction and BN
    recalibration per calibration image; accuracy per validation image), timed on `images` training
    images after one untimed evaluation of the largest subnet (allocators, kernel selection). For planning
    a run's evaluations: scaling one forward of the largest subnet gave half the real cost."""
    n = min(images, ds.train_x.shape[0])
    x, y = ds.train_x[:n], ds.train_y[:n]
    costs = []
    for i, sub in enumerate([supernet.space.largest(), *subnets] if subnets else []):
        t0 = time.perf_counter()
        net = inherited_subnet(supernet, sub, ds, calib=x, device=device, batch_size=min(batch_size, 256))
        t1 = time.perf_counter()
        accuracy(net, x, y, sub.resolution, ds.mean, ds.std, batch_size=batch_size, device=device)
        t2 = time.perf_counter()
        if i > 0:
            costs.append(SubnetEvalCost(calib_s=(t1 - t0) / n, val_s=(t2 - t1) / n))
    return costs


def inherited_subnet(
    supernet: "Supernet",
    subnet: Subnet | dict | str,
    ds: "Dataset",
    *,
    calib: torch.Tensor | None = None,
    calib_images: int = 2000,
    device: str | torch.device = "cpu",
    memory_format: torch.memory_format | None = None,
    batch_size: int = 256,
) -> nn.Module:
    """The subnet with the supernet's weights and its BN statistics recalibrated on `calib` (default: the
    fixed `calibration_subset(ds)`): the shared statistics are wrong for any one subnet. Evaluation and
    export both start from it; `memory_format` defaults to the device's training layout (export passes
    contiguous)."""
    sub = supernet.space.validate_subnet(subnet)
    net = supernet.extract(sub).to(device=device, memory_format=memory_format or memory_format_for(device))
    if calib is None:
        calib = calibration_subset(ds, n=calib_images)
    recalibrate_bn(net, calib, sub.resolution, ds.mean, ds.std, batch_size=batch_size, device=device)
    return net


def evaluate_subnet(
    supernet: "Supernet",
    subnet: Subnet | dict | str,
    ds: "Dataset",
    *,
    calib: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    calib_images: int = 2000,
    batch_size: int = 500,
) -> float:
    """Validation accuracy of `subnet` with inherited weights (`inherited_subnet`), on ds.val. The
    supernet is untouched."""
    sub = supernet.space.validate_subnet(subnet)
    net = inherited_subnet(supernet, sub, ds, calib=calib, calib_images=calib_images, device=device, batch_size=min(batch_size, 256))
    return accuracy(net, ds.val_x, ds.val_y, sub.resolution, ds.mean, ds.std, batch_size=batch_size, device=device)
