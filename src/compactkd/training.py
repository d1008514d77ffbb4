"""One trainer for every model compactkd trains: teacher, student and baselines.

SGD with Nesterov momentum and a per-step cosine schedule. A checkpoint is written
after every epoch; a rerun with the same configuration resumes from it and ends
with exactly the weights an uninterrupted run would have, because each epoch's
randomness (shuffling, augmentation, dropout) is seeded from the epoch number alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from compactkd import distributed
from compactkd.config import config_from_params
from compactkd.data import BatchLoader, make_loader
from compactkd.evaluation import evaluate
from compactkd.serialization import CheckpointError, atomic_save, safe_load

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
]
# (model, images, labels, index) -> (loss, logits): CE for the teacher, KD for students.
# ``index``: the images' positions in the training split (what a cached target is looked up by).
Objective = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True)
class OptimizerConfig:
    """What every trainer here is given: the optimiser and its run's length, seed and device."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"  # auto (bf16 on CUDA that supports it) | bf16 | off
    channels_last: bool = True  # convolution weights in NHWC order while training

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive, got {self}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {self}")
        check_precision(self.mixed_precision)


@dataclass(frozen=True)
class TrainConfig(OptimizerConfig):
    """Hyper-parameters of one training run (``conf/base/parameters_*.yml``)."""

    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self}")

    @classmethod
    def from_params(
        cls, shared: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str
    ) -> TrainConfig:
        """The shared ``training`` block with a stage's own keys over it."""
        return config_from_params(cls, {**shared, **(overrides or {})}, where)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness: a resumed run replays exactly the same epochs."""
    return seed * 1_000_003 + epoch


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available (this process's GPU under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_device_index())
        return torch.device("cpu")
    return torch.device(name)


def placed(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``module`` on ``device``, its 4-D weights in channels-last (NHWC) order or back in the
    default one. Convolutions run faster channels-last: on 2 CPU cores, training steps of
    ResNet-20 about 1.2-1.4x, of MobileNetV2 1.6-1.8x (docs/guide.md, "GPUs"); on a GPU it
    is the layout of bf16 tensor-core kernels."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return module.to(device).to(memory_format=layout)


PRECISIONS = ("auto", "bf16", "off")


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {name!r}")


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when asked, or on ``auto`` where the GPU supports it; else a no-op."""
    wanted = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=wanted)


def cross_entropy_objective(label_smoothing: float = 0.0) -> Objective:
    def objective(
        model: nn.Module, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits

    return objective


def _digest(*parts: Any) -> str:
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            sha.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            sha.update(json.dumps(part, sort_keys=True, default=str).encode())
    return sha.hexdigest()


def run_fingerprint(
    model: nn.Module,
    splits: Mapping[str, Any],
    config: TrainConfig,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Identifies a run, so that a checkpoint is only ever resumed by the same run."""
    settings = dataclasses.asdict(config) | {"device": None, "extra": dict(extra or {})}
    weights = [t for _, t in sorted(model.state_dict().items())]
    train = splits["train"]
    return _digest(settings, *weights, train["images"], train["labels"], splits["augmentation"])


class Checkpoint:
    """The state after an epoch, in one file, valid only for the run that wrote it."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> list[dict[str, float]]:
        """Load the last saved state into the given objects; return the history so far."""
        if not self.path.is_file():
            return []
        try:
            state = safe_load(self.path)
        except CheckpointError as error:  # a checkpoint is a cache: a damaged one is retrained
            logger.warning("%s; starting afresh", error)
            return []
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            logger.info("Checkpoint %s belongs to another run; starting afresh", self.path)
            return []
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        logger.info("Resuming from %s after epoch %d", self.path, len(state["history"]))
        return state["history"]

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        history: list[dict[str, float]],
    ) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
        }
        atomic_save(state, self.path)


def _train_one_epoch(
    model: nn.Module,
    loader: BatchLoader,
    generator: torch.Generator,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: torch.autocast,
    description: str,
) -> tuple[float, float]:
    """One pass over the training split; mean loss and accuracy (percent) over every rank."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    batches = loader.indexed_batches(generator)
    # disable=None: a bar on a terminal, silence in CI logs; one bar per run, not per rank.
    quiet = None if distributed.is_main() else True
    progress = tqdm(batches, total=len(loader), desc=description, leave=False, disable=quiet)
    for images, labels, index in progress:
        with precision:
            loss, logits = objective(model, images, labels, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
    loss_sum, correct, seen = distributed.sum_over_ranks(loss_sum, correct, seen)
    return loss_sum / seen, 100.0 * correct / seen


OPTIMIZERS = ("sgd", "adam")


def check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def optimizer_with_cosine(
    parameters: Iterable[nn.Parameter], config: Any, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """The optimiser ``config`` names and a per-step cosine schedule over ``steps`` steps.

    ``config`` is a :class:`TrainConfig` or any settings with ``optimizer``, ``lr``,
    ``momentum``, ``nesterov`` and ``weight_decay`` (the block search's).
    """
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def train(
    model: nn.Module,
    splits: Mapping[str, Any],
    config: TrainConfig,
    objective: Objective | None = None,
    checkpoint_path: str | Path | None = None,
    fingerprint_extra: Mapping[str, Any] | None = None,
    name: str = "model",
) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``model`` on ``splits["train"]``, validating on ``splits["val"]`` each epoch.

    Returns the trained model (on the CPU) and its history: one row per epoch with
    train loss and accuracy, validation loss and accuracy, learning rate and seconds.
    ``fingerprint_extra`` names whatever else defines the run (e.g. the objective's
    parameters) so a checkpoint of a different run is never resumed.
    """
    device = resolve_device(config.device)
    objective = objective or cross_entropy_objective(config.label_smoothing)
    fingerprint = run_fingerprint(model, splits, config, fingerprint_extra)
    placed(model, device, config.channels_last)
    shard = distributed.current()
    train_loader = make_loader(splits, "train", config.batch_size, device, True, shard)
    val_loader = make_loader(splits, "val", config.batch_size, device)
    optimizer, scheduler = optimizer_with_cosine(
        model.parameters(), config, config.epochs * len(train_loader)
    )
    checkpoint = Checkpoint(Path(checkpoint_path), fingerprint) if checkpoint_path else None
    history = checkpoint.restore(model, optimizer, scheduler) if checkpoint else []
    replica = distributed.replicate(model, device)  # the model itself in a single process
    precision = autocast(config.mixed_precision, device)
    for epoch in range(len(history), config.epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        seed = epoch_seed(config.seed, epoch)
        torch.manual_seed(seed)  # dropout and other global-RNG users
        train_loss, train_acc = _train_one_epoch(
            replica,
            train_loader,
            torch.Generator().manual_seed(seed),
            objective,
            optimizer,
            scheduler,
            precision,
            f"{name} {epoch + 1}/{config.epochs}",
        )
        val = evaluate(model, val_loader)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "val_loss": val["loss"],
                "val_accuracy": val["top1"],
                "lr": lr,
                "seconds": time.perf_counter() - started,
            }
        )
        logger.info(
            "%s epoch %d/%d: train loss %.4f acc %.2f%%, val loss %.4f acc %.2f%% (%.1fs)",
            name, epoch + 1, config.epochs, train_loss, train_acc, val["loss"], val["top1"],
            history[-1]["seconds"],
        )  # fmt: skip
        if checkpoint and distributed.is_main():
            checkpoint.save(model, optimizer, scheduler, history)
    return placed(model, torch.device("cpu"), False), pd.DataFrame(history, columns=HISTORY_COLUMNS)
