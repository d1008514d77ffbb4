"""Losses shared by block-wise distillation and the student's fine-tune."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nmse_terms(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error and the target's squared deviation from its per-channel mean.

    Their ratio is the normalised MSE; keeping both lets a caller sum them over batches.
    """
    dims = [d for d in range(target.ndim) if d != 1]
    error = (prediction - target).pow(2).sum()
    spread = (target - target.mean(dim=dims, keepdim=True)).pow(2).sum()
    return error, spread


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    tau: float,
) -> torch.Tensor:
    """``alpha * CE(y, s) + (1 - alpha) * tau^2 * KL(softmax(t / tau) || softmax(s / tau))``.

    The ``tau^2`` keeps the soft term's gradients on the scale of the hard term's (Hinton
    et al., 2015). At ``alpha = 1`` this is plain cross-entropy.
    """
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 1:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / tau, dim=1),
        F.log_softmax(teacher_logits / tau, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * hard + (1 - alpha) * tau**2 * soft
