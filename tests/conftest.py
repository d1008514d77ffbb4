"""Shared fixtures. Tests never touch the network or the real data folders.

Helpers (the tiny run's parameters, project copies, Kedro runs...) are in ``helpers.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN, copy_project, run_session, write_images

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


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


@pytest.fixture
def digits_splits() -> dict:
    from compactkd.data import load_dataset, split_dataset

    return split_dataset(load_dataset("digits"), "digits", seed=0)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole tiny run (``TINY_RUN``) of every stage on ``digits``: two budgets, two seeds."""
    project = copy_project(tmp_path_factory.mktemp("run") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        run_session(project, ["__default__"], TINY_RUN)
    return project
