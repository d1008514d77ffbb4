"""Nodes of the ``distillation`` stage: one per model, each fine-tuned once per seed by the
same trainer (recipes: :mod:`compactkd.baselines`); a switched-off baseline yields none."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import baselines, distributed
from compactkd.data import input_shape
from compactkd.distillation import DistillationConfig, Recipe, finetune, run_tag
from compactkd.model_files import network_package
from compactkd.training import HISTORY_COLUMNS

Outputs = tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]
Run = tuple[dict[str, Any], dict[str, Any], str]  # distillation, training, checkpoint folder


def _run(name: str, recipe: Callable[[], Recipe], teacher: nn.Module, splits: dict[str, Any],
         spec: dict[str, Any], run: Run) -> Outputs:  # fmt: skip
    """``recipe()`` fine-tuned per seed: ``{"model", "packages"}``, history, summary.
    ``run``: the ``distillation`` and shared ``training`` parameters, the checkpoint folder."""
    params, training, folder = run
    config = DistillationConfig.from_params(params, training)
    if not config.runs(name):
        empty = pd.DataFrame(columns=["model", "seed", *HISTORY_COLUMNS])  # a CSV with a header
        return {"model": name, "packages": []}, empty, {"model": name, "skipped": True}
    # A baseline that cannot fit the budgets fails here, before any training.
    networks, history, summary = finetune(recipe(), teacher, splits, config, run_tag(spec), folder)
    return {"model": name, "packages": [network_package(n) for n in networks]}, history, summary


def finetune_student(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    table: pd.DataFrame,
    candidate_weights: dict[str, Any],
    params: dict[str, Any],
    training: dict[str, Any],
    checkpoints: str,
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """The chosen blocks with their block-wise weights, KD; also its first seed alone."""
    recipe = partial(baselines.student_recipe, teacher, input_shape(splits), spec, table,
                     candidate_weights)  # fmt: skip
    run = (params, training, checkpoints)
    finetuned, history, summary = _run("student", recipe, teacher, splits, spec, run)
    return finetuned, finetuned["packages"][0], history, summary


def finetune_scratch(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    table: pd.DataFrame,
    candidate_weights: dict[str, Any],
    params: dict[str, Any],
    training: dict[str, Any],
    checkpoints: str,
) -> Outputs:
    """The student's architecture from random weights, cross-entropy alone."""
    recipe = partial(baselines.scratch_recipe, teacher, input_shape(splits), spec, table,
                     candidate_weights)  # fmt: skip
    return _run("scratch", recipe, teacher, splits, spec, (params, training, checkpoints))


def finetune_uniform(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    params: dict[str, Any],
    training: dict[str, Any],
    checkpoints: str,
) -> Outputs:
    """The teacher's architecture at the one width multiplier that fits the budgets, KD."""
    recipe = partial(baselines.uniform_recipe, teacher, input_shape(splits), spec)
    return _run("uniform", recipe, teacher, splits, spec, (params, training, checkpoints))


def finetune_pruned(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    importance: list[torch.Tensor],
    params: dict[str, Any],
    training: dict[str, Any],
    checkpoints: str,
) -> Outputs:
    """The trained teacher cut to the one kept fraction that fits the budgets, KD."""
    recipe = partial(baselines.pruned_recipe, teacher, input_shape(splits), spec, importance)
    return _run("pruned", recipe, teacher, splits, spec, (params, training, checkpoints))


def finetune_torch_pruning(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    params: dict[str, Any],
    training: dict[str, Any],
    checkpoints: str,
) -> Outputs:
    """The trained teacher pruned by torch-pruning at the smallest ratio that fits, KD."""
    recipe = partial(baselines.torch_pruning_recipe, teacher, input_shape(splits), spec)
    return _run("torch_pruning", recipe, teacher, splits, spec, (params, training, checkpoints))


def gather_histories(*histories: pd.DataFrame) -> pd.DataFrame:
    """Every model's fine-tune history in one table (``student_history.csv``)."""
    return pd.concat([h for h in histories if len(h)], ignore_index=True)


def gather_summaries(*summaries: dict[str, Any]) -> dict[str, Any]:
    """Every model's fine-tune summary, by model (``distillation_summary.json``)."""
    ran = {s["model"]: s for s in summaries if not s.get("skipped")}
    return {"models": ran} | distributed.run_facts()
