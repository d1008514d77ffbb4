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


def nmse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||S(x) - t||^2 / ||t - mean(t)||^2: 0 is perfect, 1 is no better than the mean."""
    error, spread = nmse_terms(prediction, target)
    return error / spread.clamp_min(1e-12)
