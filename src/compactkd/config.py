"""Settings as frozen dataclasses, read from a stage's parameters block.

Every stage's parameters (``conf/base/parameters_<stage>.yml``) become one dataclass whose
fields are the valid keys, so a misspelt key, a missing one or a value out of range fails
before any work, with the valid keys named. Nested dataclass fields read nested blocks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
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
    values = {}
    for name, value in params.items():
        if dataclasses.is_dataclass(hints[name]):
            values[name] = config_from_params(hints[name], value, f"{where}.{name}")
        else:
            values[name] = _checked(value, hints[name], f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as error:  # a required setting is missing, or a value of another type
        raise ValueError(f"{where}: {error}") from None


# What a plain field accepts: YAML's 3 is a fine float, its `yes` no number.
_KINDS: dict[type, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a finite number", lambda v: is_number(v) and math.isfinite(v)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _checked(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it is of the plain type ``hint`` names (or None where it is optional);
    values of other fields (mappings, lists, Any) are the dataclass's to check."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return value
    kinds = [_KINDS[o] for o in options if o in _KINDS]
    if len(kinds) != len([o for o in options if o is not type(None)]):
        return value  # not a plain field
    if not any(accepts(value) for _, accepts in kinds):
        wanted = " or ".join(kind for kind, _ in kinds)
        raise ValueError(f"{where} must be {wanted}, got {value!r}")
    return float(value) if float in options and int not in options else value


def is_number(value: Any) -> bool:
    """True for a real number that is not a bool (YAML's ``yes`` is no budget)."""
    return isinstance(value, Real) and not isinstance(value, bool)
