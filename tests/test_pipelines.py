"""The Kedro pipelines run end to end through a real KedroSession, in a copy of the project."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import PROJECT_ROOT, TINY_RUN, run_session
from kedro.framework.project import configure_project
from kedro.pipeline import node

from compactkd import pipeline_registry
from compactkd.hooks import NodeSummaryHooks
from compactkd.model_files import load_model
from compactkd.models import build_model
from compactkd.pipeline_registry import register_pipelines, use_budgets

STAGES = ["data_processing", "teacher", "block_search", "distillation", "evaluation", "reporting"]


def test_every_stage_is_registered_and_default_runs_them_all() -> None:
    configure_project("compactkd")
    pipelines = register_pipelines()
    assert sorted(pipelines) == sorted([*STAGES, "__default__"])
    stage_nodes = {name: {n.name for n in pipelines[name].nodes} for name in STAGES}
    for name, nodes in stage_nodes.items():
        assert nodes, f"{name} has no nodes"
        # Each stage's nodes are grouped under its name (one kedro-viz group per stage).
        assert all(n.startswith(f"{name}.") for n in nodes), (name, sorted(nodes))
    everything = set().union(*stage_nodes.values())
    assert sum(map(len, stage_nodes.values())) == len(everything)  # no node in two stages
    assert {n.name for n in pipelines["__default__"].nodes} == everything


def test_sweep_namespaces_follow_the_number_of_budgets() -> None:
    configure_project("compactkd")
    try:
        use_budgets([{"flops": 0.5}, {"flops": 0.3}, {"flops": 0.2}])
        pipelines = register_pipelines()
        names = {n.name for n in pipelines["evaluation"].nodes}
        namespaces = ("", "budget_2.", "budget_3.")
        per_budget = {
            f"evaluation.{ns}{n}" for ns in namespaces for n in ("evaluate_models", "budget_rows")
        }
        once = {
            f"evaluation.{n}"
            for n in ("measure_teacher", "export_student", "summarise", "gather_sweep")
        }
        assert names == per_budget | once  # the teacher measured once for every budget
        checks = {
            n.name for n in pipelines["block_search"].nodes if n.name.endswith("check_student")
        }
        assert checks == {f"block_search.{ns}check_student" for ns in namespaces}
        use_budgets({"flops": 0.5})
        names = {n.name for n in register_pipelines()["distillation"].nodes}
        models = ("student", "scratch", "uniform", "pruned", "torch_pruning")
        gathered = {"distillation.gather_histories", "distillation.gather_summaries"}
        assert names == {f"distillation.finetune_{m}" for m in models} | gathered
        with pytest.raises(ValueError, match="budgets must be a mapping"):
            use_budgets([])
    finally:
        pipeline_registry._budget_count = None


@pytest.mark.slow
def test_data_processing_and_teacher_run_in_a_kedro_session(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_copy)
    run_session(project_copy, ["data_processing", "teacher"], TINY_RUN)
    reporting = project_copy / "data" / "08_reporting"
    card = json.loads((reporting / "dataset_card.json").read_text())
    assert card["name"] == "digits" and sum(card["counts"].values()) == 1797
    metrics = json.loads((reporting / "teacher_metrics.json").read_text())
    epochs = TINY_RUN["teacher"]["training"]["epochs"]
    assert metrics["epochs"] == epochs and metrics["train_seconds"] > 0
    assert 0 < metrics["test_top1"] <= 100 and metrics["test_top5"] >= metrics["test_top1"]
    assert metrics["flops"] > 0 and metrics["params"] > 250_000
    # runtime.threads: null -> the machine's cores, one process
    assert metrics["threads"] == os.cpu_count() and metrics["processes"] == 1
    history = pd.read_csv(reporting / "teacher_history.csv")
    assert list(history.columns[:3]) == ["epoch", "train_loss", "train_accuracy"]
    assert len(history) == epochs
    teacher = load_model(project_copy / "data" / "06_models" / "teacher.pt")
    assert teacher.spec["name"] == "resnet20" and teacher.spec["in_channels"] == 1

    # The user's own trained teacher is used as it is: no training, the same accuracy.
    shutil.copy(project_copy / "data" / "06_models" / "teacher.pt", project_copy / "mine.pt")
    run_session(project_copy, ["teacher"], {**TINY_RUN, "teacher": {"checkpoint": "mine.pt"}})
    again = json.loads((reporting / "teacher_metrics.json").read_text())
    assert again["epochs"] == 0 and again["train_seconds"] == 0
    assert again["test_top1"] == metrics["test_top1"]


@pytest.mark.slow
def test_unknown_dataset_fails_before_anything_is_written(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_copy)
    nope = {"dataset": "nope"}
    with pytest.raises(Exception, match="unknown dataset 'nope'"):
        run_session(project_copy, ["__default__"], {**TINY_RUN, "data_processing": nope})
    assert not (project_copy / "data" / "05_model_input" / "splits.pt").exists()


def test_each_node_ends_with_a_one_line_summary(caplog: pytest.LogCaptureFixture) -> None:
    hooks, trained = NodeSummaryHooks(), node(len, "splits", "teacher_model", name="train")
    model = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 1})
    metrics = {"student": {"top1": 97.25, "flops_reduction": 3.0}, "teacher": {"top1": 98.0}}
    with caplog.at_level(logging.INFO, logger="compactkd.hooks"):
        hooks.before_node_run(trained)
        hooks.after_node_run(trained, {"teacher_model": model, "metrics": metrics})
    (line,) = caplog.messages
    assert line.startswith("train done in ") and " s: " in line
    assert "teacher_model (269,434 params)" in line  # ResNet-20, one input channel
    assert "metrics (student top1 97.25, student flops_reduction 3)" in line


def test_pipeline_files_stay_thin() -> None:
    """Nodes are glue: domain code belongs in the library modules, not under pipelines/."""
    files = sorted((PROJECT_ROOT / "src" / "compactkd" / "pipelines").rglob("*.py"))
    assert files
    long = {str(f.relative_to(PROJECT_ROOT)): n for f in files
            if (n := len(f.read_text().splitlines())) > 120}  # fmt: skip
    assert not long, f"pipeline files over 120 lines: {long}"
