"""Nodes of the ``teacher`` stage: train (or load) the teacher, then measure it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import distributed
from compactkd.costs import count_flops, count_params
from compactkd.data import make_loader
from compactkd.evaluation import evaluate
from compactkd.model_files import load_model
from compactkd.models import build_model
from compactkd.training import HISTORY_COLUMNS, TrainConfig, resolve_device, train

logger = logging.getLogger(__name__)


def _model_spec(splits: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The configured architecture, sized for the data's channels and classes."""
    return {
        **params["model"],
        "num_classes": len(splits["classes"]),
        "in_channels": int(splits["train"]["images"].shape[1]),
    }


def _check_fits_data(model: nn.Module, splits: dict[str, Any], source: str) -> None:
    shape = tuple(splits["train"]["images"].shape[1:])
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *shape))
    if out.shape[1] != len(splits["classes"]):
        raise ValueError(
            f"the teacher from {source} has {out.shape[1]} outputs, "
            f"but the data has {len(splits['classes'])} classes"
        )


def _config(params: dict[str, Any], training: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_params(training, params.get("training"), "teacher.training")


def train_teacher(
    splits: dict[str, Any], params: dict[str, Any], training: dict[str, Any], checkpoints: str
) -> tuple[nn.Module, pd.DataFrame]:
    """Train the configured teacher, or load the user's own when ``checkpoint`` is set."""
    config = _config(params, training)  # bad parameters fail before any work
    spec = _model_spec(splits, params)
    if params.get("checkpoint"):
        model = load_model(params["checkpoint"], spec=spec)
        _check_fits_data(model, splits, params["checkpoint"])
        logger.info("Using the trained teacher in %s; no training", params["checkpoint"])
        return model, pd.DataFrame(columns=HISTORY_COLUMNS)
    torch.manual_seed(config.seed)  # the initial weights are part of the run's identity
    model = build_model(spec)
    checkpoint = Path(checkpoints) / "teacher.ckpt"
    return train(model, splits, config, checkpoint_path=checkpoint, name="teacher")


def evaluate_teacher(
    model: nn.Module,
    splits: dict[str, Any],
    history: pd.DataFrame,
    params: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """Test accuracy, cost and training time: ``data/08_reporting/teacher_metrics.json``."""
    config = _config(params, training)
    device, batch_size = resolve_device(config.device), config.batch_size
    test = evaluate(model.to(device), make_loader(splits, "test", batch_size, device))
    val = evaluate(model, make_loader(splits, "val", batch_size, device))
    model.cpu()
    return {
        "model": model.spec,
        "test_top1": test["top1"],
        "test_top1_ci95": test["top1_ci95"],
        "test_top5": test["top5"],
        "test_samples": test["samples"],
        "val_top1": val["top1"],
        "flops": count_flops(model, splits["train"]["images"].shape[1:]),
        "params": count_params(model),
        "epochs": len(history),
        "train_seconds": float(history["seconds"].sum()) if len(history) else 0.0,
        "device": str(device),
        **distributed.run_facts(),
    }
