"""Saving and loading compactkd files: models as spec + state_dict, tensors as dicts.

Everything is written atomically (a temporary file in the same folder, then a rename),
so an interrupted save never leaves a half-written file where a good one stood, and
everything is read with ``torch.load(weights_only=True)``, which cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from compactkd.models import build_model

MODEL_FORMAT = "compactkd.model/1"


class CheckpointError(ValueError):
    """A file that is not what compactkd expected there."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, then rename over ``path``."""
    atomic_write(lambda file: torch.save(obj, file), path)


def atomic_write(write: Callable[[BinaryIO], Any], path: str | Path) -> None:
    """``write`` into a temporary sibling file, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())  # on disk before the rename makes it visible
            os.fchmod(tmp.fileno(), 0o666 & ~_current_umask())  # mkstemp makes files private
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def safe_load(path: str | Path) -> Any:
    """Load a file written by :func:`atomic_save`, refusing anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails on foreign bytes in many ways (even KeyError)
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from error


def save_model(model: nn.Module, path: str | Path) -> None:
    """Save a model built by :func:`compactkd.models.build_model` as its spec and weights."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, Mapping):
        raise CheckpointError(
            f"{type(model).__name__} has no .spec: build models with compactkd.models.build_model"
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": MODEL_FORMAT, "spec": dict(spec), "state_dict": state}, path)


def load_model(path: str | Path, spec: Mapping[str, Any] | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`.

    A bare ``state_dict`` (what most users have of their own trained models) is accepted
    when ``spec`` says which architecture it belongs to; its keys must match exactly.
    """
    content = safe_load(path)
    if isinstance(content, Mapping) and content.get("format") == MODEL_FORMAT:
        spec, state = content["spec"], content["state_dict"]
    elif spec is not None and _is_state_dict(content):
        state = content
    else:
        raise CheckpointError(
            f"{path} is not a compactkd model (expected format {MODEL_FORMAT!r}, "
            "or a state_dict together with the model spec it belongs to)"
        )
    model = build_model(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"weights in {path} do not fit the model {spec}: {error}") from error
    return model


def _is_state_dict(content: Any) -> bool:
    return isinstance(content, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()
    )
