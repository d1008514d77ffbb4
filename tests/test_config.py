"""Settings from parameter blocks: misspelt, missing and nested keys (compactkd.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from compactkd.config import config_from_params, is_number


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    steps: int = 3


@dataclass(frozen=True)
class Outer:
    name: str  # required
    inner: Inner = field(default_factory=Inner)
    seeds: int = 1


def test_settings_become_the_dataclass_with_its_defaults() -> None:
    assert config_from_params(Outer, {"name": "a"}) == Outer("a", Inner(), 1)
    assert config_from_params(Outer, {"name": "a", "seeds": 2}).seeds == 2


def test_a_nested_block_becomes_its_dataclass() -> None:
    config = config_from_params(Outer, {"name": "a", "inner": {"steps": 7}})
    assert isinstance(config.inner, Inner) and config.inner == Inner(rate=0.1, steps=7)


def test_an_unknown_key_is_named_with_the_valid_ones() -> None:
    message = r"unknown stage setting\(s\) \['nmae', 'sede'\]; valid: \['name', 'inner', 'seeds'\]"
    with pytest.raises(ValueError, match=message):
        config_from_params(Outer, {"nmae": "a", "sede": 1}, "stage")
    # Where it is nested, the message says so.
    with pytest.raises(ValueError, match=r"unknown stage.inner setting\(s\) \['rte'\]"):
        config_from_params(Outer, {"name": "a", "inner": {"rte": 1.0}}, "stage")
    # Without a name, the class names the block.
    with pytest.raises(ValueError, match=r"unknown Outer setting\(s\) \['x'\]"):
        config_from_params(Outer, {"name": "a", "x": 1})


def test_a_missing_required_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"stage: .*missing .*'name'"):
        config_from_params(Outer, {"seeds": 2}, "stage")


def test_a_block_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ValueError, match=r"stage.inner must be a mapping of settings, got 3"):
        config_from_params(Outer, {"name": "a", "inner": 3}, "stage")
    with pytest.raises(ValueError, match="stage must be a mapping"):
        config_from_params(Outer, [("name", "a")], "stage")


def test_is_number_refuses_bools_and_strings() -> None:
    assert is_number(1) and is_number(0.5) and is_number(float("inf"))
    assert not is_number(True) and not is_number("1") and not is_number(None)
