"""Tests of selection by predicted accuracy (compactkd.search.predictor)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from compactkd.search.config import PredictorConfig
from compactkd.search.predictor import (
    LinearPredictor,
    draw_structures,
    predicted_options,
    structure_features,
    uniform_structure,
)
from compactkd.search.select import Option, select

SLOTS = ["stem", "block_1", "block_2", "head"]


def chain_options() -> list[Option]:
    """A small chain: two interface fractions, a few options per block, costs that matter."""
    rng = np.random.default_rng(3)
    options = [
        Option("stem", f"stem@{f:g}", None, f, 0.1 * (1 - f), {"params": 10 * f})
        for f in (0.5, 1.0)
    ]
    options += [
        Option("head", f"head@{f:g}", f, None, 0.2 * (1 - f), {"params": 20 * f})
        for f in (0.5, 1.0)
    ]
    for block in ("block_1", "block_2"):
        for fin, fout, ratio in itertools.product((0.5, 1.0), (0.5, 1.0), (0.25, 0.5, 1.0)):
            params = 100 * ratio * (fin + fout)
            nmse = float(rng.uniform(0.05, 0.5)) / ratio
            options.append(
                Option(block, f"{block}:r{ratio}@{fin}-{fout}", fin, fout, nmse, {"params": params})
            )
    return options


def valid_networks(options: list[Option], budget: float) -> list[dict[str, Option]]:
    per_slot = [[o for o in options if o.slot == s] for s in SLOTS]
    networks = []
    for network in itertools.product(*per_slot):
        fits = sum(o.costs["params"] for o in network) <= budget
        pairs = zip(network, network[1:], strict=False)
        if fits and all(a.out_fraction == b.in_fraction for a, b in pairs):
            networks.append(dict(zip(SLOTS, network, strict=True)))
    return networks


def test_fit_recovers_a_linear_law_and_ranks_held_out_samples_perfectly() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = 50 + x @ np.array([3.0, -2.0, 0.0, 1.0])
    predictor = LinearPredictor.fit(x, y, ["a", "b"], ridge=1e-6)
    assert predictor.predict(x) == pytest.approx(y, abs=1e-4)
    restored = LinearPredictor.from_dict(predictor.to_dict())
    assert restored.predict(x[:3]) == pytest.approx(predictor.predict(x[:3]))
    # A constant feature (a slot with one option) gets no weight and breaks nothing.
    constant = np.column_stack([x, np.ones(30)])
    with_constant = LinearPredictor.fit(constant, y, ["a", "b", "c"], ridge=1e-6)
    assert with_constant.weights[-1] == 0.0


def test_option_contributions_add_up_to_the_prediction() -> None:
    """The MILP can only maximise predicted accuracy if the prediction is a sum over options."""
    options = chain_options()
    networks = valid_networks(options, budget=math.inf)
    x = np.stack([structure_features(n, SLOTS) for n in networks])
    y = np.random.default_rng(1).uniform(20, 90, len(networks))
    predictor = LinearPredictor.fit(x, y, SLOTS, ridge=1.0)
    for network, predicted in zip(networks, predictor.predict(x), strict=True):
        summed = predictor.intercept + sum(predictor.contribution(o) for o in network.values())
        assert summed == pytest.approx(predicted)


def test_selection_maximises_predicted_accuracy_under_the_budget() -> None:
    options = chain_options()
    budget = 260.0
    networks = valid_networks(options, budget)
    x = np.stack([structure_features(n, SLOTS) for n in networks])
    y = 60 - 40 * x[:, 0::2].sum(axis=1) + 2 * x[:, 1::2].sum(axis=1)  # an arbitrary law
    predictor = LinearPredictor.fit(x, y, SLOTS, ridge=1.0)
    best = max(predictor.predict(x))
    chosen = select(predicted_options(options, predictor), SLOTS, {"params": budget})
    features = structure_features(
        {slot: next(o for o in options if o.name == c.name) for slot, c in chosen.chosen.items()},
        SLOTS,
    )
    assert predictor.predict(features[None])[0] == pytest.approx(best)
    assert chosen.totals["params"] <= budget


def test_drawn_structures_are_distinct_feasible_and_start_with_the_given_ones() -> None:
    options = chain_options()
    budgets = [{"params": 260.0}, {"params": 200.0}]
    uniform = uniform_structure(options, 0.5)
    assert uniform is not None and set(uniform) == set(SLOTS)
    assert uniform_structure(options, 0.3) is None  # no option at that fraction
    drawn = draw_structures(options, SLOTS, budgets, PredictorConfig(samples=9), [uniform])
    assert len(drawn) == 9
    assert {slot: o.name for slot, o in drawn[0][1].chosen.items()} == uniform
    names = [tuple(o.name for o in s.chosen.values()) for _, s in drawn]
    assert len(set(names)) == len(names)
    for budget, selection in drawn:
        assert selection.totals["params"] <= budgets[budget]["params"]
        # Scores are the options' own (unperturbed) NMSE.
        assert selection.score == pytest.approx(sum(o.score for o in selection.chosen.values()))
    # The second draw is the first budget's NMSE optimum (no noise in the first round).
    optimum = select(options, SLOTS, budgets[1], excluded=[uniform])
    assert drawn[2][1].score == pytest.approx(optimum.score)
    assert drawn[1][1].score == pytest.approx(select(options, SLOTS, budgets[0]).score)


def test_drawing_stops_when_the_space_runs_out() -> None:
    options = chain_options()
    tight = [{"params": 80.0}]  # only the narrowest structures fit
    fitting = valid_networks(options, 80.0)
    drawn = draw_structures(options, SLOTS, tight, PredictorConfig(samples=50))
    assert len(drawn) == len(fitting) < 50


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"samples": 3}, "at least 4"),
        ({"ridge": 0}, "ridge > 0"),
        ({"batch_size": 0}, "at least 1"),
    ],
)
def test_bad_predictor_settings_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PredictorConfig(**change)
