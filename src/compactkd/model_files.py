"""One file format for every network compactkd saves: the teacher, students and baselines.

A saved network is a *package*: plain data that rebuilds the architecture (a zoo model's
``spec``, or an assembled network's :class:`~compactkd.blocks.assembly.Blueprint`) plus its
``state_dict``. A zoo model whose layers a structural pruner narrowed (``narrowed = True``,
:mod:`compactkd.models.narrowing`) is its spec plus a ``state_dict`` that gives the widths.
Nothing pickled: packages load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compactkd.blocks.assembly import Blueprint
from compactkd.models import build_model
from compactkd.models.narrowing import load_narrowed
from compactkd.serialization import CheckpointError, atomic_save, safe_load

MODEL_FORMAT = "compactkd.model/1"  # a zoo model: spec + weights
ASSEMBLED_FORMAT = "compactkd.assembled/1"  # an assembled network: blueprint + weights
NARROWED_FORMAT = "compactkd.narrowed/1"  # a zoo model at other widths: spec + weights
FORMATS = (MODEL_FORMAT, ASSEMBLED_FORMAT, NARROWED_FORMAT)


def network_package(model: nn.Module) -> dict[str, Any]:
    """What is saved of a zoo model (its ``.spec``; narrowed or not) or an assembled one (its
    ``.blueprint``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blueprint = getattr(model, "blueprint", None)
    if isinstance(blueprint, Blueprint):
        return {"format": ASSEMBLED_FORMAT, "blueprint": blueprint.to_dict(), "state_dict": state}
    spec = getattr(model, "spec", None)
    if isinstance(spec, Mapping):
        kind = NARROWED_FORMAT if getattr(model, "narrowed", False) else MODEL_FORMAT
        return {"format": kind, "spec": dict(spec), "state_dict": state}
    raise CheckpointError(
        f"{type(model).__name__} has neither a .spec nor a .blueprint: build models with "
        "compactkd.models.build_model or a Blueprint"
    )


def network_from_package(package: Mapping[str, Any]) -> nn.Module:
    """Rebuild what :func:`network_package` saved, in eval mode."""
    kind = package.get("format")
    if kind == NARROWED_FORMAT:
        return load_narrowed(build_model(package["spec"]), package["state_dict"]).eval()
    if kind == ASSEMBLED_FORMAT:
        model = Blueprint.from_dict(package["blueprint"]).build()
    elif kind == MODEL_FORMAT:
        model = build_model(package["spec"])
    else:
        raise CheckpointError(f"unknown network format {kind!r}")
    model.load_state_dict(package["state_dict"])
    return model.eval()


def save_model(model: nn.Module, path: str | Path) -> None:
    """Save ``model``'s package atomically."""
    atomic_save(network_package(model), path)


def load_model(path: str | Path, spec: Mapping[str, Any] | None = None) -> nn.Module:
    """Rebuild a network saved by :func:`save_model`.

    A bare ``state_dict`` (what most users have of their own trained models) is accepted
    when ``spec`` says which zoo architecture it belongs to; its keys must match exactly.
    """
    content = safe_load(path)
    if isinstance(content, Mapping) and content.get("format") in FORMATS:
        package = content
    elif spec is not None and _is_state_dict(content):
        package = {"format": MODEL_FORMAT, "spec": dict(spec), "state_dict": content}
    else:
        raise CheckpointError(
            f"{path} is not a compactkd model (expected a format of {list(FORMATS)}, or a "
            "state_dict together with the model spec it belongs to)"
        )
    try:
        return network_from_package(package)
    except RuntimeError as error:
        raise CheckpointError(
            f"weights in {path} do not fit the model {package.get('spec')}: {error}"
        ) from error


def _is_state_dict(content: Any) -> bool:
    return isinstance(content, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()
    )
