"""The project's pipelines: one per stage, the later ones repeated per budget of a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines as project_pipelines
from kedro.framework.project import settings
from kedro.pipeline import Pipeline
from kedro.utils import find_kedro_project

from compactkd.pipelines import (
    block_search,
    data_processing,
    distillation,
    evaluation,
    reporting,
    teacher,
)
from compactkd.pipelines.sweep import budget_namespaces
from compactkd.search.select import budget_list

_budget_count: int | None = None  # set from the run's parameters by BudgetSweepHooks


def use_budgets(budgets: Any) -> None:
    """Build the pipelines for these budgets (reloading them if built for others)."""
    global _budget_count
    count = len(budget_list(budgets))
    if count != _budget_count:
        _budget_count = count
        project_pipelines.configure(__name__)


def _budget_count_from_conf() -> int:
    """Outside a run (e.g. ``kedro registry list``): the default environment's budgets."""
    project = find_kedro_project(Path.cwd()) or Path.cwd()  # e.g. a notebook in notebooks/
    loader = OmegaConfigLoader(
        conf_source=str(project / settings.CONF_SOURCE), **settings.CONFIG_LOADER_ARGS
    )
    return len(budget_list(loader["parameters"]["block_search"]["budgets"]))


def register_pipelines() -> dict[str, Pipeline]:
    """Every stage by name, and ``__default__`` running all of them."""
    namespaces = budget_namespaces(_budget_count or _budget_count_from_conf())
    pipelines = {
        "data_processing": data_processing.create_pipeline(),
        "teacher": teacher.create_pipeline(),
        "block_search": block_search.create_pipeline(namespaces),
        "distillation": distillation.create_pipeline(namespaces),
        "evaluation": evaluation.create_pipeline(namespaces),
        "reporting": reporting.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
