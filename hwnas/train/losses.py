"""Training losses: label-smoothed hard loss plus soft-target distillation from the largest net."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability vector per sample (OFA's `cross_entropy_loss_with_soft_target`)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft-target CE at temperature T, scaled by T^2 so its gradient size does not depend on T (Hinton et al.)."""
    t = float(temperature)
    target = F.softmax(teacher_logits.detach().float() / t, dim=1)
    return soft_target_ce(student_logits.float() / t, target) * (t * t)


def training_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    label_smoothing: float,
    kd_weight: float,
    kd_temperature: float,
) -> torch.Tensor:
    """hard (label-smoothed CE) + kd_weight * KD; the KD term only when a teacher is given."""
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if teacher_logits is not None and kd_weight > 0:
        loss = loss + kd_weight * kd_loss(logits, teacher_logits, kd_temperature)
    return loss
