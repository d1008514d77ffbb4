"""Nodes of the ``block_search`` stage: rank channels, make and train candidates, choose."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import distributed
from compactkd.baselines import pruned_fractions
from compactkd.config import config_from_params
from compactkd.data import input_shape
from compactkd.search.blockwise import plugin_drops, train_candidates
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import (
    CandidatePool,
    build_pool,
    candidate_scores,
    candidate_table,
    end_scores,
    feasible_budgets,
    interface_importance,
    interface_scores,
    measure_interface_losses,
    pinned_positions,
    search_metrics,
    selection_options,
    slots,
    student_spec,
    teacher_costs,
)
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
    pool: CandidatePool, splits: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Block-wise distillation of every candidate: their table, weights and history, and
    what narrowing the stem and the head loses (``interface_scores``)."""
    config = _config(params)
    history, nmse, active = train_candidates(
        pool.partition,
        pool.candidates,
        pool.keeps,
        splits,
        dict(enumerate(pool.costs)),
        config.training,
        config.resume_path,
        protected=pinned_positions(pool, config.pin),
    )
    device = resolve_device(config.training.device)
    drops = None
    if config.wants_plugin_drop:
        drops = plugin_drops(pool.partition, pool.candidates, pool.keeps, active, splits, device)
    losses = measure_interface_losses(pool, splits, device)
    weights = {
        "keeps": [dict(keeps) for keeps in pool.keeps],
        "weights": {c.name: c.module.state_dict() for c in pool.candidates},
    }
    table = candidate_table(pool, nmse, active, losses, drops)
    return table, weights, history, interface_scores(losses)


def select_students(
    pool: CandidatePool,
    table: pd.DataFrame,
    ends: dict[str, dict[Any, float]],
    params: dict[str, Any],
) -> tuple[dict[str, Any], ...]:
    """The exact choice under each budget of the sweep: one student spec per budget."""
    config = _config(params)
    scores = candidate_scores(table, config)
    options = selection_options(pool, scores, config.pin, end_scores(ends, config))
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
    teacher_metrics: dict[str, Any],
    *checks: dict[str, Any],
) -> dict[str, Any]:
    """``block_search_metrics.json``: the pool, the training, each budget's choice."""
    return search_metrics(pool, table, history, teacher_metrics, checks) | distributed.run_facts()
