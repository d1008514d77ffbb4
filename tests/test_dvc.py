"""`dvc repro` in a copy of the repository: all stages, then nothing, then only what changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_repro_runs_each_stage_once_and_reruns_only_what_changed(project_copy: Path) -> None:
    conf = project_copy / "conf" / "base"
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

    # A distillation setting reruns distillation and evaluation, nothing upstream.
    set_param(conf / "parameters_distillation.yml", "alpha", "0.7")
    fourth = dvc(project_copy, "repro")
    assert "Running stage 'distillation'" in fourth and "Running stage 'evaluation'" in fourth
    assert "Running stage 'block_search'" not in fourth
