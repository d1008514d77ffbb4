"""Shared fixtures. Tests never touch the network or the real data folders."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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


def run_session(project: Path, pipelines: list[str], params: dict) -> None:
    """``kedro run --pipelines ...`` through a real KedroSession, with runtime parameters."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=pipelines)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of mixed JPEG and PNG images of different sizes, one folder to split."""
    root = tmp_path / "images"
    write_images(root / "cat", 12, (40, 50), ".jpg")
    write_images(root / "dog", 12, (20, 20), ".png")
    write_images(root / "owl", 12, (64, 33), ".jpeg")
    return root


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's committed and uncommitted files (not ignored ones) in a new git repo."""
    return copy_project(tmp_path / "project")


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


@pytest.fixture
def digits_splits() -> dict:
    from compactkd.data import load_dataset, split_dataset

    return split_dataset(load_dataset("digits"), "digits", seed=0)


# A whole tiny run of every stage, shared by the tests that read its outputs.
TINY_RUN = {
    "data_processing": {"dataset": "digits"},
    "teacher": {"training": {"epochs": 2, "device": "cpu"}},
    "block_search": {
        "training": {"epochs": 1, "device": "cpu"},
        "importance_samples": 256,
        "budgets": [{"flops": 0.5, "params": 0.2}, {"flops": 0.3, "params": 0.15}],
    },
    "distillation": {
        "training": {"epochs": 1, "device": "cpu"},
        "seeds": 2,
        "recalibration_batches": 2,
    },
    "evaluation": {"latency_repeats": 3, "device": "cpu"},
}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole tiny run of every stage on ``digits``, with a two-budget sweep and two seeds."""
    project = copy_project(tmp_path_factory.mktemp("run") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        run_session(project, ["__default__"], TINY_RUN)
    return project
