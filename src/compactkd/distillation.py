"""Knowledge distillation for the fine-tunes of the student and the baselines (docs/method.md §6).

The objective plugs into :func:`compactkd.training.train`, so every model is trained by the
same loop (progress, checkpoints, resume, history) whatever its loss; :func:`finetune`
runs one model's recipe once per seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import distributed
from compactkd.blocks.assembly import Blueprint
from compactkd.blocks.partition import Partition, partition_model
from compactkd.config import config_from_params
from compactkd.data import BatchLoader, augments, make_loader
from compactkd.evaluation import evaluate, predict
from compactkd.losses import kd_loss, nmse, nmse_terms
from compactkd.training import HISTORY_COLUMNS, TrainConfig, placed, resolve_device, train

logger = logging.getLogger(__name__)


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
    (the uniform and torch_pruning baselines) are trained on the logits alone.

    ``fixed_inputs``: the training split, when training does not augment it. The teacher then
    sees each image once: its logits are computed on the first step and looked up by the
    images' positions after, instead of a teacher forward pass on every step of every epoch.
    """

    def __init__(
        self, teacher: nn.Module, config: KDConfig, fixed_inputs: BatchLoader | None = None
    ) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.config = config
        self._partition: Partition | None = None
        self._fixed_inputs = fixed_inputs
        self._logits: torch.Tensor | None = None

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.teacher.to(images.device)
        blueprint = getattr(model, "blueprint", None)
        if self.config.beta == 0 or not isinstance(blueprint, Blueprint):
            teacher_logits = self._teacher_logits(images, index)
            logits = model(images)
            loss = kd_loss(logits, teacher_logits, labels, self.config.alpha, self.config.tau)
            return loss, logits
        return self._with_hints(model, blueprint, images, labels)

    @torch.no_grad()
    def _teacher_logits(self, images: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if self._fixed_inputs is None or index is None:
            return self.teacher(images)
        if self._logits is None:
            self._logits = predict(self.teacher, self._fixed_inputs)[0].to(images.device)
        return self._logits[index]

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
            hint = hint + nmse(error, spread)
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


# What a run fine-tunes and compares.
MODELS = ("student", "scratch", "uniform", "pruned", "torch_pruning")


@dataclass(frozen=True)
class DistillationConfig:
    """``conf/base/parameters_distillation.yml``; ``training`` overrides the shared
    ``training`` block (``parameters_training.yml``)."""

    training: TrainConfig
    kd: KDConfig = field(default_factory=KDConfig)
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics of inherited networks
    recalibration_batches: int = 20
    seeds: int = 1
    baselines: Mapping[str, bool] = field(default_factory=dict)  # name -> run it (default yes)
    inherited_lr: float = 0.02  # for networks that start from trained weights

    def __post_init__(self) -> None:
        unknown = set(self.baselines) - set(MODELS[1:])
        if unknown:
            raise ValueError(f"unknown baseline(s) {sorted(unknown)}; valid: {list(MODELS[1:])}")
        if self.seeds < 1 or self.inherited_lr <= 0 or self.recalibration_batches < 1:
            raise ValueError("distillation.seeds and recalibration_batches must be at least 1 "
                             "and inherited_lr positive")  # fmt: skip
        if self.kd.beta > 0 and distributed.launched():
            # Hints run the student's parts one by one, around DistributedDataParallel's forward.
            raise ValueError("distillation.kd.beta > 0 (feature hints) needs a single process; "
                             "set beta: 0 to fine-tune under torchrun")  # fmt: skip

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], shared_training: Mapping[str, Any]
    ) -> DistillationConfig:
        training = {**shared_training, **(params.get("training") or {})}
        return config_from_params(cls, {**params, "training": training}, "distillation")

    def runs(self, model: str) -> bool:
        return model == "student" or bool(self.baselines.get(model, True))


@dataclass
class Recipe:
    """How one model starts (per seed) and how it is fine-tuned."""

    name: str
    initial: Callable[[int], nn.Module]  # seed -> the network before fine-tuning
    distilled: bool  # KD from the teacher, or cross-entropy alone
    inherited: bool = False  # starts from trained weights: recalibrated, fine-tuned gently
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. the width a baseline was cut to


def run_tag(spec: Mapping[str, Any]) -> str:
    """Tells checkpoints of different budgets apart (each run also checks its fingerprint)."""
    chosen = {slot: c["candidate"] for slot, c in spec["blocks"].items()}
    return hashlib.sha256(json.dumps([spec["budgets"], chosen]).encode()).hexdigest()[:10]


def finetune(
    recipe: Recipe,
    teacher: nn.Module,
    splits: Mapping[str, Any],
    config: DistillationConfig,
    tag: str,
    checkpoint_dir: str | Path | None = None,
) -> tuple[list[nn.Module], pd.DataFrame, dict[str, Any]]:
    """Fine-tune one model once per seed: the networks, their histories and a summary
    (seconds, BatchNorm recalibration's effect on the first seed). Each seed resumes from
    its own checkpoint in ``checkpoint_dir`` (``<tag>_<model>_<seed>.ckpt``) when given."""
    started = time.perf_counter()
    networks, histories = [], []
    summary = {"model": recipe.name, "seeds": config.seeds, **recipe.facts}
    for offset in range(config.seeds):
        training = dataclasses.replace(config.training, seed=config.training.seed + offset)
        model = recipe.initial(training.seed)
        if recipe.inherited:
            if config.recalibrate_bn:
                effect = _recalibrate(model, splits, training, config.recalibration_batches)
                summary.setdefault("recalibration", effect)
            training = dataclasses.replace(training, lr=config.inherited_lr)
        model, history = train(
            model,
            splits,
            training,
            objective=_kd_objective(teacher, splits, training, config.kd)
            if recipe.distilled
            else None,
            checkpoint_path=Path(checkpoint_dir) / f"{tag}_{recipe.name}_{offset}.ckpt"
            if checkpoint_dir
            else None,
            fingerprint_extra={
                "model": recipe.name,
                "kd": dataclasses.asdict(config.kd) if recipe.distilled else None,
            },
            name=f"{recipe.name} (seed {training.seed})",
        )
        networks.append(model)
        histories.append(history.assign(model=recipe.name, seed=training.seed))
    summary["seconds"] = time.perf_counter() - started
    history = pd.concat(histories, ignore_index=True)[["model", "seed", *HISTORY_COLUMNS]]
    return networks, history, summary


def _kd_objective(
    teacher: nn.Module, splits: Mapping[str, Any], training: TrainConfig, kd: KDConfig
) -> KDObjective:
    """KD from ``teacher``; its logits computed once where the training images never change."""
    placed(teacher, torch.device("cpu"), training.channels_last)  # as its students train
    if augments(splits["augmentation"]):
        return KDObjective(teacher, kd)
    return KDObjective(
        teacher, kd, make_loader(splits, "train", 256, resolve_device(training.device))
    )


def _recalibrate(
    model: nn.Module, splits: Mapping[str, Any], config: TrainConfig, batches: int
) -> dict[str, float]:
    """Validation accuracy before and after recalibrating BatchNorm statistics."""
    device = resolve_device(config.device)
    val = make_loader(splits, "val", 256, device)
    train_loader = make_loader(splits, "train", config.batch_size, device, augment=True)
    model.to(device)
    before = evaluate(model, val)["top1"]
    generator = torch.Generator().manual_seed(config.seed)
    after = evaluate(recalibrate_batchnorm(model, train_loader, batches, generator), val)["top1"]
    logger.info("BatchNorm recalibrated: validation top-1 %.2f%% -> %.2f%%", before, after)
    return {"val_top1_before": before, "val_top1_after": after}
