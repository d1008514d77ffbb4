"""Accuracy with confidence intervals, computed on in-memory batches."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from scipy import stats
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


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, classes: int) -> list:
    """``matrix[true][predicted]``: counts of test images, as nested lists."""
    flat = labels * classes + predictions
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes).tolist()


def per_class_accuracy(matrix: list) -> list[float]:
    """Percent of each class's images classified right (None for a class with no images)."""
    return [100.0 * row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]


def difference_interval(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict[str, Any]:
    """Mean top-1 difference of model A over model B (points) with a 95% interval.

    ``correct_*`` are (seeds, images) 0/1 tensors on the same test images. The interval adds
    the paired test-sampling error of the seed-averaged predictions to the seed-to-seed
    error of each model's mean (zero with one seed), so a difference outside it is neither
    luck of the test set nor of one training run. With few seeds the seed-to-seed variances
    are themselves uncertain: the half-width uses Student's t with the Welch-Satterthwaite
    degrees of freedom of the summed variances, not the normal 1.96.
    """
    a, b = correct_a.double(), correct_b.double()
    paired = a.mean(dim=0) - b.mean(dim=0)
    # Each part: (variance of the mean difference, its degrees of freedom).
    parts = [(float(paired.var(unbiased=True)) / paired.numel(), paired.numel() - 1)]
    for x in (a, b):
        seeds = x.mean(dim=1)
        if len(seeds) > 1:
            parts.append((float(seeds.var(unbiased=True)) / len(seeds), len(seeds) - 1))
    variance = sum(v for v, _ in parts)
    difference = 100.0 * float(paired.mean())
    if variance == 0:
        return {"difference": difference, "ci95": [difference, difference]}
    dof = variance**2 / sum(v**2 / d for v, d in parts if v > 0)
    half = 100.0 * float(stats.t.ppf(0.975, dof)) * math.sqrt(variance)
    return {"difference": difference, "ci95": [difference - half, difference + half]}
