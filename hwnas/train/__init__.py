"""Supernet training with progressive shrinking (Once-for-All), as one resumable run.

Public API: `train_supernet` (api), `TrainConfig` / `default_config` (config),
`save_checkpoint` / `load_checkpoint` / `load_supernet` / `SupernetMeta` (checkpoint),
`recalibrate_bn` (bn), `accuracy` / `evaluate_subnet` / `inherited_subnet` (evaluate).
Submodules import torch; importing this package does not pull in the trainer loop.
"""

from __future__ import annotations

__all__ = [
    "PHASES", "SupernetMeta", "TrainConfig", "accuracy", "default_config", "evaluate_subnet", "inherited_subnet", "load_checkpoint",
    "load_supernet", "recalibrate_bn", "save_checkpoint", "train_supernet",
]


def __getattr__(name: str):  # lazy: keep `import hwnas.train` cheap
    if name in {"TrainConfig", "default_config", "PHASES"}:
        from hwnas.train import config

        return getattr(config, name)
    if name in {"SupernetMeta", "load_checkpoint", "load_supernet", "save_checkpoint"}:
        from hwnas.train import checkpoint

        return getattr(checkpoint, name)
    if name == "recalibrate_bn":
        from hwnas.train.bn import recalibrate_bn

        return recalibrate_bn
    if name in {"accuracy", "evaluate_subnet", "inherited_subnet"}:
        from hwnas.train import evaluate

        return getattr(evaluate, name)
    if name == "train_supernet":
        from hwnas.train.api import train_supernet

        return train_supernet
    raise AttributeError(name)
