"""Knowledge distillation for the fine-tunes of the student and the baselines (METHOD §6).

The objective plugs into :func:`compactkd.training.train`, so every model is trained by the
same loop (progress, checkpoints, resume, history) whatever its loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compactkd.blocks.assembly import Blueprint
from compactkd.blocks.partition import Partition, partition_model
from compactkd.data import BatchLoader
from compactkd.losses import kd_loss, nmse_terms


@dataclass(frozen=True)
class KDConfig:
    """``alpha * CE + (1 - alpha) * tau^2 * KL``, plus ``beta * sum_i NMSE_i`` feature hints."""

    alpha: float = 0.5
    tau: float = 4.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1 or self.tau <= 0 or self.beta < 0:
            raise ValueError(f"KD needs alpha in [0, 1], tau > 0 and beta >= 0, got {self}")


class KDObjective:
    """The training objective of a student distilled from a frozen ``teacher``.

    Feature hints (``beta > 0``) need an assembled network (one with a ``blueprint``): its
    interface ``i`` then learns the teacher's ``x_i`` at the channels it kept. Other networks
    (the uniform baseline) are trained on the logits alone.
    """

    def __init__(self, teacher: nn.Module, config: KDConfig) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.config = config
        self._partition: Partition | None = None

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.teacher.to(images.device)
        blueprint = getattr(model, "blueprint", None)
        if self.config.beta == 0 or not isinstance(blueprint, Blueprint):
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            logits = model(images)
            loss = kd_loss(logits, teacher_logits, labels, self.config.alpha, self.config.tau)
            return loss, logits
        return self._with_hints(model, blueprint, images, labels)

    def _with_hints(
        self, model: nn.Module, blueprint: Blueprint, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._partition is None:
            self._partition = partition_model(
                self.teacher, blueprint.input_shape, blueprint.granularity
            )
        with torch.no_grad():
            targets = self._partition.interface_tensors(images)
            teacher_logits = self._partition.head(targets[-1])
        fractions = [blueprint.blocks[0].in_fraction] + [b.out_fraction for b in blueprint.blocks]
        *parts, head = model.children()
        hint, x = images.new_zeros(()), images
        for part, target, keep in zip(parts, targets, _keeps(blueprint, fractions), strict=True):
            x = part(x)
            error, spread = nmse_terms(x, target[:, keep.to(x.device)])
            hint = hint + error / spread.clamp_min(1e-12)
        logits = head(x)
        loss = kd_loss(logits, teacher_logits, labels, self.config.alpha, self.config.tau)
        return loss + self.config.beta * hint, logits


def _keeps(blueprint: Blueprint, fractions: list[float]) -> list[torch.Tensor]:
    return [keeps[f] for keeps, f in zip(blueprint.keeps, fractions, strict=True)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, loader: BatchLoader, batches: int, generator: torch.Generator
) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``batches`` training batches.

    An assembled student's blocks were trained on the teacher's features, not on each
    other's: their statistics are stale until measured on the network as assembled.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches seen
    model.train()
    for _, (images, _) in zip(range(batches), loader.batches(generator), strict=False):
        model(images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Fresh random weights, initialised as the zoo initialises its models (for ``scratch``)."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm | nn.Linear):
            module.reset_parameters()
    return model
