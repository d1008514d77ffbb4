"""Nodes of the ``evaluation`` stage: measure every model, export the student, gather tables
(the work: :mod:`compactkd.comparison`, :mod:`compactkd.export`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from torch import nn

from compactkd.comparison import (
    EvaluationConfig,
    compare,
    comparison_table,
    headline,
    measure,
    sweep_rows,
    sweep_table,
)
from compactkd.config import config_from_params
from compactkd.data import make_loader
from compactkd.export import export_checked
from compactkd.model_files import network_from_package, network_package


def _config(params: dict[str, Any]) -> EvaluationConfig:
    return config_from_params(EvaluationConfig, params, "evaluation")


def measure_teacher(
    teacher: nn.Module, splits: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """The teacher's figures, measured once for every budget."""
    return measure([network_package(teacher)], splits, _config(params))[0]


def evaluate_models(
    teacher: dict[str, Any],
    teacher_model: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    params: dict[str, Any],
    *finetuned: dict[str, Any],
) -> dict[str, Any]:
    """Every fine-tuned model measured beside the teacher (``evaluation.json``); latency
    timed interleaved with the teacher's."""
    package = network_package(teacher_model)
    return compare(teacher, package, finetuned, splits, spec, _config(params))


def export_student(
    student: dict[str, Any], splits: dict[str, Any], params: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """The student as ONNX, its logits checked against PyTorch's, its onnxruntime latency."""
    config = _config(params)
    images, _ = next(make_loader(splits, "test", 64).batches())
    model = network_from_package(student)
    repeats = config.latency_rounds * config.latency_repeats
    return export_checked(model, images, config.onnx_tolerance, config.latency_threads, repeats)


def summarise(
    evaluation: dict[str, Any], onnx_check: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``metrics.json`` and ``comparison.csv`` of the student's budget."""
    return headline(evaluation, onnx_check), comparison_table(evaluation)


def budget_rows(evaluation: dict[str, Any], spec: dict[str, Any]) -> pd.DataFrame:
    """One budget's rows of the sweep table."""
    return sweep_rows(evaluation, spec)


def gather_sweep(*rows: pd.DataFrame) -> pd.DataFrame:
    """``sweep.csv``: every budget of the sweep, every model."""
    return sweep_table(rows)
