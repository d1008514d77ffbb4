"""Losses shared by block-wise distillation and the student's fine-tune."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_TINY = 1e-12  # an interface that never varies: its NMSE is its squared error


def nmse_terms(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error and the target's squared deviation from its per-channel mean.

    Their ratio is the normalised MSE; keeping both lets a caller sum them over batches.
    """
    dims = [d for d in range(target.ndim) if d != 1]
    error = (prediction - target).pow(2).sum()
    spread = (target - target.mean(dim=dims, keepdim=True)).pow(2).sum()
    return error, spread


def nmse(error: Tensor | float, spread: Tensor | float) -> Tensor | float:
    """The normalised MSE from :func:`nmse_terms` (summed over batches, or of one batch).

    0 is a perfect copy of the target; 1 is no better than predicting its per-channel mean.
    """
    if isinstance(spread, Tensor):
        return error / spread.clamp_min(_TINY)
    return error / max(spread, _TINY)


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
