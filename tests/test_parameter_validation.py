"""Any out-of-range, mistyped or unknown setting of any stage stops a run in one line before
any work (property-based: hypothesis draws the bad values)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from helpers import PROJECT_ROOT, TINY_RUN, run_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kedro.config import OmegaConfigLoader

from compactkd import settings as project_settings
from compactkd.models import MODELS
from compactkd.validation import check_parameters

BASE = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), **project_settings.CONFIG_LOADER_ARGS)[
    "parameters"
]

# Every numeric setting, and what lies outside its range.
BELOW_ONE = st.integers(max_value=0)
NOT_POSITIVE = st.floats(max_value=0.0, allow_nan=False)
OUTSIDE_UNIT = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not 0 <= v <= 1)
NUMERIC = {
    ("training", "epochs"): BELOW_ONE,
    ("training", "batch_size"): BELOW_ONE,
    ("training", "lr"): NOT_POSITIVE,
    ("training", "weight_decay"): st.floats(max_value=-1e-9, allow_nan=False),
    ("teacher", "training", "epochs"): BELOW_ONE,
    ("block_search", "training", "epochs"): BELOW_ONE,
    ("block_search", "training", "batch_size"): BELOW_ONE,
    ("block_search", "training", "lr"): NOT_POSITIVE,
    ("block_search", "training", "subsample"): OUTSIDE_UNIT.filter(lambda v: v != 0),
    ("block_search", "importance_samples"): BELOW_ONE,
    ("block_search", "predictor", "samples"): st.integers(max_value=3),
    ("distillation", "seeds"): BELOW_ONE,
    ("distillation", "inherited_lr"): NOT_POSITIVE,
    ("distillation", "recalibration_batches"): BELOW_ONE,
    ("distillation", "kd", "alpha"): OUTSIDE_UNIT,
    ("distillation", "kd", "tau"): NOT_POSITIVE,
    ("distillation", "training", "epochs"): BELOW_ONE,
    ("evaluation", "batch_size"): BELOW_ONE,
    ("evaluation", "latency_rounds"): BELOW_ONE,
    ("evaluation", "onnx_tolerance"): NOT_POSITIVE,
    ("data_processing", "val_fraction"): OUTSIDE_UNIT.filter(lambda v: v != 1) | st.just(1.0),
    ("runtime", "threads"): BELOW_ONE,
}
# Wrong whatever the setting: not a number at all, or not a finite one.
MISTYPED = st.one_of(
    st.just(math.nan), st.just(math.inf), st.text(max_size=5), st.booleans(), st.lists(st.none())
)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def with_setting(path: tuple[str, ...], value: Any) -> dict:
    params = copy.deepcopy(BASE)
    section = params
    for key in path[:-1]:
        section = section.setdefault(key, {})
    section[path[-1]] = value
    return params


def refused(params: dict) -> str:
    with pytest.raises(ValueError) as stopped:
        check_parameters(params)
    message = str(stopped.value)
    assert "\n" not in message  # one line
    return message


def test_the_shipped_parameters_pass() -> None:
    check_parameters(BASE)


@FAST
@given(data=st.data())
def test_a_numeric_setting_out_of_range_is_refused_naming_it(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(NUMERIC)))
    value = data.draw(NUMERIC[path] | MISTYPED)
    message = refused(with_setting(path, value))
    assert path[-1] in message or path[-2] in message, (path, value, message)


@FAST
@given(budget=st.one_of(OUTSIDE_UNIT, st.just(0.0), MISTYPED, st.fixed_dictionaries(
    {"absolute": st.floats(max_value=-1e-6) | st.just(math.nan)})))  # fmt: skip
def test_a_budget_outside_its_forms_is_refused(budget: Any) -> None:
    params = with_setting(("block_search", "budgets"), [{"flops": 0.5, "params": budget}])
    assert "budget" in refused(params)


@FAST
@given(
    section=st.sampled_from(
        ["training", "teacher", "block_search", "distillation", "evaluation", "data_processing"]
    ),  # fmt: skip
    key=st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True),
)
def test_an_unknown_key_in_any_stage_is_refused(section: str, key: str) -> None:
    known = set(BASE[section]) | {"checkpoint", "model", "training"}
    if key in known or section == "teacher":  # the teacher block: test its training keys
        section, path = "teacher", ("teacher", "training", key)
        if key in BASE["training"]:
            return
    else:
        path = (section, key)
    assert "unknown" in refused(with_setting(path, 1))


@FAST
@given(name=st.text(min_size=1, max_size=12).filter(lambda n: n not in MODELS and ":" not in n))
def test_an_unknown_model_name_is_refused(name: str) -> None:
    assert "no model" in refused(with_setting(("teacher", "model", "name"), name))


@FAST
@given(epochs=st.integers(1, 500), lr=st.floats(1e-6, 10.0), alpha=st.floats(0.0, 1.0))
def test_settings_in_range_are_accepted(epochs: int, lr: float, alpha: float) -> None:
    params = with_setting(("training", "epochs"), epochs)
    params["training"]["lr"] = lr
    params["distillation"]["kd"]["alpha"] = alpha
    check_parameters(params)


def test_a_bad_last_stage_setting_stops_the_run_before_the_first_stage(project_copy: Path) -> None:
    params = {**TINY_RUN, "distillation": {**TINY_RUN["distillation"], "seeds": 0}}
    with pytest.raises(ValueError, match="seeds"):
        run_session(project_copy, ["__default__"], params)
    assert not (project_copy / "data/05_model_input/splits.pt").exists()
