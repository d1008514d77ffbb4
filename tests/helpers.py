"""What several test modules share: the tiny run's parameters, project copies, Kedro runs,
test images and a randomised teacher. Imported as ``from helpers import ...`` (pytest puts
``tests/`` on ``sys.path`` for the root ``conftest.py``); the fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The one tiny configuration of every test that runs the pipelines (through a KedroSession,
# `kedro run --params` or a fixture): digits on the CPU, one or two epochs of everything, a
# two-budget sweep, two seeds per fine-tune. A test that needs another setting changes this
# one (``{**TINY_RUN, "stage": {**TINY_RUN["stage"], ...}}``), so what it varies is visible.
TINY_RUN: dict[str, Any] = {
    "data_processing": {"dataset": "digits"},
    "training": {"device": "cpu"},  # the shared trainer: the teacher and every fine-tune
    # Two epochs: a teacher well above chance (the distributed test compares two of them).
    "teacher": {"training": {"epochs": 2}},
    "block_search": {
        "training": {"epochs": 1, "device": "cpu"},
        "importance_samples": 256,
        # Merged into the default space (teacher, pruned): a randomly initialised family.
        "space": {"conv": {"depth": 1, "width": 0.5}},
        "budgets": [{"flops": 0.5, "params": 0.2}, {"flops": 0.3, "params": 0.15}],
    },
    "distillation": {"training": {"epochs": 1}, "seeds": 2, "recalibration_batches": 2},
    "evaluation": {"latency_repeats": 3, "device": "cpu"},
}


def cli_params(params: Mapping[str, Any], sections: Iterable[str]) -> str:
    """``sections`` of ``params`` as ``kedro run --params`` takes them: ``a.b=c,...``.

    Only scalar leaves: a list (the budgets) has no form on that command line.
    """

    def leaves(prefix: str, value: Any) -> list[str]:
        if isinstance(value, Mapping):
            return [item for k, v in value.items() for item in leaves(f"{prefix}.{k}", v)]
        if isinstance(value, list | tuple):
            raise ValueError(f"{prefix} is a list: not expressible in --params")
        return [f"{prefix}={value}"]

    return ",".join(item for section in sections for item in leaves(section, params[section]))


def run_session(project: Path, pipelines: list[str], params: dict) -> None:
    """``kedro run --pipelines ...`` through a real KedroSession, with runtime parameters."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=pipelines)


def copy_project(copy: Path) -> Path:
    """Copy the project's committed and uncommitted files (not ignored ones) to a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT, capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(command, cwd=copy, check=True)
    return copy


def write_images(folder: Path, count: int, size: tuple[int, int], suffix: str = ".png") -> None:
    """Real image files of random colours, so a reader must decode and resize them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)) + count)
    for i in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}{suffix}")


@functools.cache
def randomised_teacher(name: str, in_channels: int = 3) -> nn.Module:
    """An eval-mode zoo model whose BN layers do something, so equality checks are not trivial.

    Cached (ResNet-50 takes a while to build): tests only read it, never modify it.
    """
    from compactkd.models import build_model

    torch.manual_seed(0)
    model = build_model({"name": name, "num_classes": 10, "in_channels": in_channels})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()
