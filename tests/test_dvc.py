"""DVC in a copy of the repository: `dvc repro` runs all stages, then nothing, then only what
changed; `dvc exp run -S` runs an experiment that `dvc exp show` and `dvc metrics diff` compare."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def dvc(project: Path, *args: str) -> str:
    env = {
        **os.environ,
        # dvc runs `kedro`, which must come from this interpreter's environment.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def set_param(path: Path, key: str, value: str) -> None:
    text, count = re.subn(rf"(?m)^(\s+{key}:) .*$", rf"\1 {value}", path.read_text(), count=1)
    assert count == 1, key
    path.write_text(text)


def git(project: Path, *args: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *identity, *args], cwd=project, check=True)


def set_single_budget(path: Path) -> None:
    """One budget: the sweep folders stay empty, and DVC must still accept them as outs."""
    params = yaml.safe_load(path.read_text())
    params["block_search"]["budgets"] = [{"flops": 0.5, "params": 0.2}]
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_runs_each_stage_once_and_reruns_only_what_changed(project_copy: Path) -> None:
    conf = project_copy / "conf" / "base"
    set_single_budget(conf / "parameters_block_search.yml")
    set_param(conf / "parameters_data_processing.yml", "dataset", "digits")
    set_param(conf / "parameters_teacher.yml", "epochs", "1")
    set_param(conf / "parameters_teacher.yml", "device", "cpu")
    for stage in ("block_search", "distillation"):
        set_param(conf / f"parameters_{stage}.yml", "epochs", "1")
        set_param(conf / f"parameters_{stage}.yml", "device", "cpu")
    set_param(conf / "parameters_evaluation.yml", "latency_repeats", "3")

    first = dvc(project_copy, "repro")
    assert "Running stage 'data_processing'" in first and "Running stage 'teacher'" in first
    assert (project_copy / "data" / "08_reporting" / "teacher_metrics.json").is_file()
    assert (project_copy / "dvc.lock").is_file()

    second = dvc(project_copy, "repro")
    assert "Running stage" not in second and "up to date" in second

    set_param(conf / "parameters_teacher.yml", "lr", "0.05")
    third = dvc(project_copy, "repro")
    assert "Running stage 'teacher'" in third and "Running stage 'data_processing'" not in third
    assert "test_top1" in dvc(project_copy, "metrics", "show")
    assert (project_copy / "data" / "08_reporting" / "metrics.json").is_file()

    # An experiment on a distillation setting reruns distillation and what follows, nothing
    # upstream, and is compared with the committed baseline run.
    git(project_copy, "add", "-A")
    git(project_copy, "commit", "-qm", "baseline run")
    alpha = "conf/base/parameters_distillation.yml:distillation.kd.alpha"
    experiment = dvc(project_copy, "exp", "run", "-n", "alpha07", "-S", f"{alpha}=0.7")
    assert "Running stage 'distillation'" in experiment
    assert "Running stage 'evaluation'" in experiment and "Running stage 'reporting'" in experiment
    assert "Running stage 'block_search'" not in experiment
    assert "Running stage 'teacher'" not in experiment
    shown = dvc(project_copy, "exp", "show", "--csv")
    rows = {line.split(",")[0] for line in shown.splitlines()}
    assert {"workspace", "main"} <= rows or "alpha07" in shown, shown
    assert "alpha07" in shown and "0.7" in shown and "0.5" in shown
    diff = dvc(project_copy, "metrics", "diff", "--all", "--json")
    assert "data/08_reporting/metrics.json" in diff

    # The history and sweep plots render, with their axis labels.
    dvc(project_copy, "plots", "show", "-o", "plots")
    page = (project_copy / "plots" / "index.html").read_text()
    for label in ("FLOPs (fraction of the teacher", "test top-1 (%)", "validation accuracy (%)"):
        assert label in page
    assert "pareto.png" in page
