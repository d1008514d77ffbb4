"""Accuracy with confidence intervals, computed on in-memory batches."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compactkd.data import BatchLoader


@torch.inference_mode()
def predict(model: nn.Module, loader: BatchLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every sample of ``loader``, in order, on the CPU."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, targets in loader.batches():
        logits.append(model(images).float().cpu())
        labels.append(targets.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def wilson_interval(successes: int, total: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion, in percent (sound near 0% and 100%)."""
    if total == 0:
        return [0.0, 100.0]
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)]


def accuracy_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Top-1 (with its 95% interval), top-5 where there are more than 5 classes, and CE loss."""
    correct = int((logits.argmax(dim=1) == labels).sum())
    total = len(labels)
    metrics: dict[str, Any] = {
        "top1": 100.0 * correct / total,
        "top1_ci95": wilson_interval(correct, total),
        "top5": None,
        "loss": float(F.cross_entropy(logits, labels)),
        "samples": total,
    }
    if logits.shape[1] > 5:
        top5 = logits.topk(5, dim=1).indices.eq(labels[:, None]).any(dim=1)
        metrics["top5"] = 100.0 * int(top5.sum()) / total
    return metrics


def evaluate(model: nn.Module, loader: BatchLoader) -> dict[str, Any]:
    """:func:`accuracy_metrics` of ``model`` on every sample of ``loader``."""
    return accuracy_metrics(*predict(model, loader))
