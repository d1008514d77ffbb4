"""Item 1: training throughput of ``compactkd.training.train`` against a bare PyTorch loop.

Both train the same initial weights with the same SGD, cosine schedule and batches
(``compactkd.data.make_loader``, each epoch seeded as the trainer seeds it), and both
validate once per epoch, as the trainer does; only the loop differs. They end with the
same weights, which the result records as a check that they did the same work.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_common import ROOT, Spread, log
from torch import nn

from compactkd import training
from compactkd.data import make_loader
from compactkd.models import build_model
from compactkd.pipelines.data_processing.nodes import load_raw_dataset, split_raw_dataset
from compactkd.training import TrainConfig, epoch_seed, resolve_device, train


@dataclass(frozen=True)
class Throughput:
    """Images per second of each loop, over interleaved rounds."""

    trainer: Spread
    bare: Spread
    setting: dict[str, Any]
    max_weight_difference: float

    @property
    def ratio(self) -> float:
        return self.trainer.median / self.bare.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "trainer_images_per_s": self.trainer.to_dict(),
            "bare_images_per_s": self.bare.to_dict(),
            "ratio_of_medians": self.ratio,
            "max_weight_difference": self.max_weight_difference,
            **self.setting,
        }


def default_splits(params: Mapping[str, Any], root: Path = ROOT) -> dict[str, Any]:
    """The splits the ``data_processing`` stage would write for these parameters."""
    data = params["data_processing"]
    raw = load_raw_dataset({**data, "raw_dir": root / data["raw_dir"]})
    return split_raw_dataset(raw, data)


def bare_train(model: nn.Module, splits: Mapping[str, Any], config: TrainConfig) -> nn.Module:
    """The loop anyone would write: zero_grad, forward, CE, backward, step, scheduler step."""
    device = resolve_device(config.device)
    model.to(device)
    train_loader = make_loader(splits, "train", config.batch_size, device, augment=True)
    val_loader = make_loader(splits, "val", config.batch_size, device)
    # The same optimiser and schedule as the trainer's: only the loop around them differs.
    optimizer, scheduler = training.optimizer_with_cosine(
        model.parameters(), config, config.epochs * len(train_loader)
    )
    autocast = training.autocast(config.mixed_precision, device)  # the trainer's own
    for epoch in range(config.epochs):
        seed = epoch_seed(config.seed, epoch)
        torch.manual_seed(seed)
        model.train()
        for images, labels in train_loader.batches(torch.Generator().manual_seed(seed)):
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.inference_mode():
            for images, _ in val_loader.batches():
                model(images)
    return model.cpu()


def _project_train(model: nn.Module, splits: Mapping[str, Any], config: TrainConfig) -> nn.Module:
    trained, _ = train(model, splits, config, checkpoint_path=None, name="throughput")
    return trained


def _max_difference(a: nn.Module, b: nn.Module) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max(float((x.double() - y.double()).abs().max()) for x, y in pairs)


def measure_throughput(params: Mapping[str, Any], repeats: int, epochs: int = 1) -> Throughput:
    """Train the default teacher for ``epochs`` with each loop, ``repeats`` rounds, alternating
    which loop goes first; images/s counts training images over the whole call."""
    teacher = params["teacher"]
    shared = TrainConfig.from_params(params["training"], teacher["training"], "teacher.training")
    config = dataclasses.replace(shared, epochs=epochs)
    splits = default_splits(params)
    spec = {
        **teacher["model"],
        "num_classes": len(splits["classes"]),
        "in_channels": int(splits["train"]["images"].shape[1]),
    }
    torch.manual_seed(config.seed)
    initial = build_model(spec)
    images = epochs * len(splits["train"]["labels"])
    loops = {"trainer": _project_train, "bare": bare_train}
    _project_train(copy.deepcopy(initial), splits, dataclasses.replace(config, epochs=1))  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in loops}
    finals: dict[str, nn.Module] = {}
    for round_ in range(repeats):
        order = list(loops) if round_ % 2 == 0 else list(reversed(loops))
        for name in order:
            model = copy.deepcopy(initial)
            started = time.perf_counter()
            finals[name] = loops[name](model, splits, config)
            rates[name].append(images / (time.perf_counter() - started))
        log(f"throughput round {round_ + 1}/{repeats}: " + ", ".join(
            f"{name} {rates[name][-1]:.0f} images/s" for name in loops))  # fmt: skip
    setting = {
        "model": spec,
        "dataset": splits["name"],
        "train_images": len(splits["train"]["labels"]),
        "val_images": len(splits["val"]["labels"]),
        "epochs_per_run": epochs,
        "batch_size": config.batch_size,
        "device": str(resolve_device(config.device)),
        "torch_threads": torch.get_num_threads(),
    }
    return Throughput(
        Spread.of(rates["trainer"]),
        Spread.of(rates["bare"]),
        setting,
        _max_difference(finals["trainer"], finals["bare"]),
    )
