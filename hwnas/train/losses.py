"""Training losses: label-smoothed hard loss plus soft-target distillation from the largest net.

Distillation measures the student against the teacher with KL(teacher || student) (Hinton et al.,
OFA, BigNAS) or with AlphaNet's adaptive alpha-divergence (Wang et al., ICML 2021): per sample the
larger of D_alpha at a negative and at a positive alpha, so a student is pulled back both where it
is more certain than the teacher and where it is less; the importance weights are clipped.
"""

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


ALPHA_RANGE = (-1.0, 1.0)
"""AlphaNet's alpha pair: D_1 = KL(teacher || student) (mass covering), D_-1 (mode seeking)."""
ALPHA_CLIP = 5.0
"""The bound on the importance weights (teacher / student)^alpha: AlphaNet's beta, which keeps one
confident wrong class from dominating the step."""


def alpha_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float,
                     clip: float = ALPHA_CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: D_alpha(p || q) = sum_i q_i ((p_i / q_i)^alpha - 1) / (alpha (alpha - 1)) for the
    teacher p and the student q, and a surrogate whose gradient is the divergence's (with the weights
    (p / q)^alpha clipped at `clip`): -sum_i q_i (p_i / q_i)^alpha / alpha * grad log q_i. alpha = 1 is
    KL(p || q), alpha = 0 KL(q || p); the value uses the same clipped weights."""
    if abs(alpha) < 1e-6:
        raise ValueError("alpha = 0 (KL(student || teacher)) is not supported; use a small nonzero alpha")
    log_q = F.log_softmax(student_logits.float(), dim=1)
    log_p = F.log_softmax(teacher_logits.detach().float(), dim=1)
    q = log_q.detach().exp()
    if abs(alpha - 1.0) < 1e-6:  # the limit: KL(p || q), its gradient -sum p grad log q
        p = log_p.exp()
        value = (p * (log_p - log_q.detach())).sum(dim=1)
        surrogate = -(p * log_q).sum(dim=1)
        return value, surrogate
    w = torch.exp(alpha * (log_p - log_q.detach())).clamp(max=clip)  # (p / q)^alpha, computed in logs
    value = (q * (w - 1.0)).sum(dim=1) / (alpha * (alpha - 1.0))
    surrogate = -((q * w / alpha) * log_q).sum(dim=1)
    return value, surrogate


def adaptive_alpha_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        alphas: tuple[float, float] = ALPHA_RANGE, clip: float = ALPHA_CLIP) -> torch.Tensor:
    """AlphaNet's distillation term: per sample the larger of the two divergences (value and
    gradient of that one), averaged over the batch. The value returned is the divergence; the
    gradient is the surrogate's."""
    v_lo, s_lo = alpha_divergence(student_logits, teacher_logits, alphas[0], clip)
    v_hi, s_hi = alpha_divergence(student_logits, teacher_logits, alphas[1], clip)
    pick_lo = v_lo > v_hi
    value = torch.where(pick_lo, v_lo, v_hi)
    surrogate = torch.where(pick_lo, s_lo, s_hi)
    return (value.detach() + surrogate - surrogate.detach()).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                      divergence: str = "kl") -> torch.Tensor:
    """The soft-target term at temperature T (scaled by T^2): `kl` (soft-target CE, the KL to the
    teacher plus its constant entropy) or `alpha` (AlphaNet's adaptive alpha-divergence)."""
    if divergence == "kl":
        return kd_loss(student_logits, teacher_logits, temperature)
    if divergence != "alpha":
        raise ValueError(f"unknown divergence {divergence!r}: kl or alpha")
    t = float(temperature)
    return adaptive_alpha_loss(student_logits.float() / t, teacher_logits.detach().float() / t) * (t * t)


def training_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    label_smoothing: float,
    kd_weight: float,
    kd_temperature: float,
    kd_divergence: str = "kl",
) -> torch.Tensor:
    """hard (label-smoothed CE) + kd_weight * KD; the KD term only when a teacher is given."""
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if teacher_logits is not None and kd_weight > 0:
        loss = loss + kd_weight * distillation_loss(logits, teacher_logits, kd_temperature, kd_divergence)
    return loss
