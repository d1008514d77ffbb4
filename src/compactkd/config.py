"""Settings as frozen dataclasses, read from a stage's parameters block.

Every stage's parameters (``conf/base/parameters_<stage>.yml``) become one dataclass whose
fields are the valid keys, so a misspelt key, a missing one or a value out of range fails
before any work, with the valid keys named. Nested dataclass fields read nested blocks.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from numbers import Real
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


def config_from_params(cls: type[ConfigT], params: Mapping[str, Any], where: str = "") -> ConfigT:
    """``cls`` built from ``params``, recursing into fields that are dataclasses themselves."""
    where = where or cls.__name__
    if not isinstance(params, Mapping):
        raise ValueError(f"{where} must be a mapping of settings, got {params!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = set(params) - set(valid)
    if unknown:
        raise ValueError(f"unknown {where} setting(s) {sorted(unknown)}; valid: {valid}")
    hints = typing.get_type_hints(cls)
    values = {
        name: config_from_params(hints[name], value, f"{where}.{name}")
        if dataclasses.is_dataclass(hints[name])
        else value
        for name, value in params.items()
    }
    try:
        return cls(**values)
    except TypeError as error:  # a required setting is missing
        raise ValueError(f"{where}: {error}") from error


def is_number(value: Any) -> bool:
    """True for a real number that is not a bool (YAML's ``yes`` is no budget)."""
    return isinstance(value, Real) and not isinstance(value, bool)
