"""Nodes of the ``block_search`` stage: candidates, their block-wise training, the choice."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import distributed
from compactkd.data import make_loader
from compactkd.evaluation import evaluate
from compactkd.pipelines.sweep import budget_list
from compactkd.search.blockwise import (
    BlockTrainConfig,
    block_index,
    importance_loader,
    plugin_accuracy,
    train_candidates,
)
from compactkd.search.pool import (
    CandidatePool,
    assemble_student,
    build_pool,
    candidate_table,
    pinned_positions,
    selection_options,
    slots,
    student_spec,
    teacher_costs,
)
from compactkd.search.select import resolve_budgets, select
from compactkd.training import config_from_params, resolve_device

SETTINGS = {
    "granularity", "interface_fractions", "space", "blocks", "pin", "score", "block_weights",
    "latency", "plugin_drop", "budgets", "importance_samples", "training", "resume_path",
}  # fmt: skip
SCORES = ("nmse", "weighted_nmse", "plugin_drop")


def check_settings(params: dict[str, Any]) -> BlockTrainConfig:
    unknown = set(params) - SETTINGS
    if unknown:
        raise ValueError(f"unknown block_search setting(s) {sorted(unknown)}; "
                         f"valid: {sorted(SETTINGS)}")  # fmt: skip
    if params["score"] not in SCORES:
        raise ValueError(f"block_search.score must be one of {SCORES}, got {params['score']!r}")
    if params["importance_samples"] < 1:
        raise ValueError("block_search.importance_samples must be at least 1")
    if any("latency" in b for b in budget_list(params["budgets"])) and not params["latency"]:
        raise ValueError("a latency budget needs block_search.latency: true (to measure it)")
    return config_from_params(BlockTrainConfig, params["training"])


def prepare_candidates(
    teacher: nn.Module, splits: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Partition, candidates and costs; fails here, before training, on a bad setting or budget."""
    started = time.perf_counter()
    config = check_settings(params)
    loader = importance_loader(splits, params["importance_samples"], config.seed, config.batch_size)
    input_shape = tuple(splits["train"]["images"].shape[1:])
    torch.manual_seed(config.seed)  # randomly initialised families: a rerun resumes the same run
    pool = build_pool(teacher, input_shape, loader, params)
    unknown = set(params["block_weights"] or {}) - set(pool.partition.block_names)
    if unknown:
        raise ValueError(f"block_weights name unknown block(s) {sorted(unknown)}; "
                         f"the blocks are {pool.partition.block_names}")  # fmt: skip
    reference = teacher_costs(pool)
    budgets = [resolve_budgets(b, reference) for b in budget_list(params["budgets"])]
    # The structure alone decides feasibility: choose with every score zero.
    unscored = {position: 0.0 for position in range(len(pool.candidates))}
    for budget in budgets:
        select(selection_options(pool, unscored, params["pin"]), slots(pool), budget, reference)
    return {
        "pool": pool,
        "config": config,
        "pinned": pinned_positions(pool, params["pin"]),
        "reference": reference,
        "budgets": budgets,
        "seconds": time.perf_counter() - started,
    }


def train_block_candidates(
    prepared: dict[str, Any], splits: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, float]:
    """Block-wise distillation of every candidate; their table, weights and history.

    Also returns the seconds spent scoring beyond the epochs (the plug-in drops); the
    epochs' own seconds are in the history, across resumed runs too.
    """
    pool: CandidatePool = prepared["pool"]
    config: BlockTrainConfig = prepared["config"]
    history, nmse, active = train_candidates(
        pool.partition,
        pool.candidates,
        pool.keeps,
        splits,
        dict(enumerate(pool.costs)),
        config,
        params["resume_path"],
        protected=prepared["pinned"],
    )
    started = time.perf_counter()
    drops = _plugin_drops(pool, active, splits, config) if _wants_plugin(params) else None
    scoring_seconds = time.perf_counter() - started
    weights = {
        "keeps": [dict(keeps) for keeps in pool.keeps],
        "weights": {c.name: c.module.state_dict() for c in pool.candidates},
    }
    table = candidate_table(pool, nmse, active, drops)
    return table, weights, history, scoring_seconds


def _wants_plugin(params: dict[str, Any]) -> bool:
    return bool(params["plugin_drop"]) or params["score"] == "plugin_drop"


def _plugin_drops(
    pool: CandidatePool, active: list[int], splits: dict[str, Any], config: BlockTrainConfig
) -> dict[int, float]:
    """Teacher validation accuracy minus its accuracy with one block swapped (points)."""
    device = resolve_device(config.device)
    loader = make_loader(splits, "val", 256, device)
    parts = nn.Sequential(pool.partition.stem, *pool.partition.blocks, pool.partition.head)
    parts.to(device).eval()  # eval first, so evaluate() leaves the teacher in eval mode
    teacher_accuracy = evaluate(parts, loader)["top1"]
    index_of = block_index(pool.partition)
    drops = {}
    for c in active:
        candidate = pool.candidates[c]
        candidate.module.to(device)
        swapped = plugin_accuracy(
            pool.partition, index_of[candidate.block], candidate, pool.keeps, loader
        )
        drops[c] = teacher_accuracy - swapped
        candidate.module.cpu()
    parts.cpu()
    return drops


def _scores(table: pd.DataFrame, params: dict[str, Any]) -> dict[int, float]:
    active = table[table["active"]]
    if params["score"] == "plugin_drop":
        return dict(active["plugin_drop"].astype(float))
    weights = params["block_weights"] if params["score"] == "weighted_nmse" else {}
    return {i: row.nmse * weights.get(row.block, 1.0) for i, row in active.iterrows()}


def select_students(
    prepared: dict[str, Any],
    table: pd.DataFrame,
    history: pd.DataFrame,
    scoring_seconds: float,
    teacher_metrics: dict[str, Any],
    splits: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], ...]:
    """The exact choice under each budget (one spec per budget), then the stage's metrics.

    The metrics include each assembled student's validation accuracy before any
    fine-tuning: the cheapest end-to-end check of how good a choice is.
    """
    started = time.perf_counter()
    pool: CandidatePool = prepared["pool"]
    options = selection_options(pool, _scores(table, params), params["pin"])
    val_loader = make_loader(splits, "val", 256)
    specs, choices = [], []
    for budgets in prepared["budgets"]:
        selection = select(options, slots(pool), budgets, prepared["reference"])
        spec = student_spec(selection, prepared["reference"], budgets)
        spec["score_kind"] = params["score"]
        spec["interfaces"] = [list(shape) for shape in pool.partition.interfaces]
        specs.append(spec)
        choices.append(
            {
                "budgets": {k: budgets[k] / prepared["reference"][k] for k in budgets},
                "predicted_flops_ratio": spec["ratios"]["flops"],
                "predicted_params_ratio": spec["ratios"]["params"],
                "assembled_val_top1": evaluate(assemble_student(pool, selection), val_loader)[
                    "top1"
                ],
                "chosen": {slot: choice["candidate"] for slot, choice in spec["blocks"].items()},
            }
        )
    selection_seconds = time.perf_counter() - started
    seconds = prepared["seconds"] + history["seconds"].sum() + scoring_seconds + selection_seconds
    # A teacher given as a checkpoint was not trained here: no ratio to report.
    teacher_seconds = teacher_metrics.get("train_seconds") or None
    metrics = {
        "blocks": len(pool.partition.block_names),
        "candidates": len(pool.candidates),
        "active_candidates": int(table["active"].sum()),
        "block_epochs": len(history),
        "seconds": float(seconds),
        "teacher_train_seconds": teacher_seconds,
        "overhead_vs_teacher": seconds / teacher_seconds if teacher_seconds else None,
        **choices[0],
        "teacher_val_top1": teacher_metrics.get("val_top1"),
        **distributed.run_facts(),
        "sweep": choices[1:],
    }
    return (*specs, metrics)
