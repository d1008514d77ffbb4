"""Where a figure came from: the code, the settings, the software and the machine of a run.

Every metrics file a run writes carries this record (``provenance``), so a number can be
traced to the commit (and whether the tree had uncommitted changes), the Kedro environment,
the parameters (by hash), the versions of the packages that computed it, and the device.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "torchvision", "kedro", "kedro-datasets", "dvc", "torch-pruning")


def run_provenance(project_path: str | Path, env: str | None, params: Mapping[str, Any]) -> dict:
    """The record of one run: ``git_commit``, ``git_dirty``, ``kedro_env``,
    ``parameters_sha256``, ``versions``, ``device``, ``threads``, ``date`` (UTC)."""
    commit = _git(project_path, "rev-parse", "HEAD")
    status = _git(project_path, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "kedro_env": env or "local",
        "parameters_sha256": parameters_hash(params),
        "versions": {name: _version(name) for name in PACKAGES},
        "device": _device(),
        "threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def parameters_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 of the parameters as sorted JSON: equal settings, equal hash."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _git(project_path: str | Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=project_path, capture_output=True, text=True,
                              timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # no git, or not a repository
        return None
    return done.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.processor() or platform.machine()}"
