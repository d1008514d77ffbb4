"""Losses shared by block-wise distillation and the student's fine-tune."""

from __future__ import annotations

import torch


def nmse_terms(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error and the target's squared deviation from its per-channel mean.

    Their ratio is the normalised MSE; keeping both lets a caller sum them over batches.
    """
    dims = [d for d in range(target.ndim) if d != 1]
    error = (prediction - target).pow(2).sum()
    spread = (target - target.mean(dim=dims, keepdim=True)).pow(2).sum()
    return error, spread
