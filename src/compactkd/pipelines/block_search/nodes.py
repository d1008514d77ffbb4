"""Nodes of the ``block_search`` stage: rank channels, make and train candidates, choose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import distributed
from compactkd.baselines import pruned_fractions
from compactkd.config import config_from_params
from compactkd.data import input_shape
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import (
    CandidatePool,
    build_pool,
    feasible_budgets,
    interface_importance,
    scored_options,
    search_metrics,
    slots,
    student_spec,
    teacher_costs,
    train_pool,
)
from compactkd.search.predictor import LinearPredictor, fit_predictor, predicted_options
from compactkd.search.select import select
from compactkd.training import resolve_device


def _config(params: dict[str, Any]) -> BlockSearchConfig:
    return config_from_params(BlockSearchConfig, params, "block_search")


def rank_interface_channels(
    teacher: nn.Module, splits: dict[str, Any], params: dict[str, Any]
) -> list[torch.Tensor]:
    """How active each channel of each interface is: what narrowed interfaces keep."""
    return interface_importance(teacher, splits, _config(params))  # bad settings fail here


def prepare_candidates(
    teacher: nn.Module,
    importance: list[torch.Tensor],
    splits: dict[str, Any],
    params: dict[str, Any],
) -> CandidatePool:
    """Partition, candidates and costs; an infeasible budget fails here, before training."""
    config, shape = _config(params), input_shape(splits)
    cuts = pruned_fractions(teacher, shape, importance, config)  # the uniform cut, if asked
    torch.manual_seed(config.training.seed)  # random initial weights: a rerun resumes the run
    pool = build_pool(teacher, shape, importance, config, cuts)
    feasible_budgets(pool, config)
    return pool


def train_block_candidates(
    pool: CandidatePool, splits: dict[str, Any], params: dict[str, Any], checkpoints: str
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Block-wise distillation of every candidate: their table, weights and history, and
    what narrowing the stem and the head loses (``interface_scores``)."""
    return train_pool(pool, splits, _config(params), Path(checkpoints) / "block_search.ckpt")


def fit_accuracy_predictor(
    teacher: nn.Module,
    pool: CandidatePool,
    table: pd.DataFrame,
    weights: dict[str, Any],
    ends: dict[str, dict[Any, float]],
    splits: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """``score: predicted_accuracy``: structures measured, the linear fit and its ranking."""
    config = _config(params)
    if config.score != "predicted_accuracy":
        return {"score": config.score, "fitted": False}
    options = scored_options(pool, table, ends, config)
    device = resolve_device(config.training.device)
    budgets = feasible_budgets(pool, config)
    fit = fit_predictor(teacher, pool, table, weights, options, splits, config, budgets, device)
    return {"score": config.score, "fitted": True, **fit}


def select_students(
    pool: CandidatePool,
    table: pd.DataFrame,
    ends: dict[str, dict[Any, float]],
    predictor: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], ...]:
    """The exact choice under each budget of the sweep: one student spec per budget."""
    config = _config(params)
    options = scored_options(pool, table, ends, config)
    if predictor.get("fitted"):
        options = predicted_options(options, LinearPredictor.from_dict(predictor["predictor"]))
    reference = teacher_costs(pool)
    return tuple(
        student_spec(
            pool, select(options, slots(pool), budget, reference), reference, budget, config
        )
        for budget in feasible_budgets(pool, config)
    )


def summarise_block_search(
    pool: CandidatePool,
    table: pd.DataFrame,
    history: pd.DataFrame,
    predictor: dict[str, Any],
    teacher_metrics: dict[str, Any],
    *checks: dict[str, Any],
) -> dict[str, Any]:
    """``block_search_metrics.json``: pool, training, predictor and each budget's choice."""
    metrics = search_metrics(pool, table, history, predictor, teacher_metrics, checks)
    return metrics | distributed.run_facts()
