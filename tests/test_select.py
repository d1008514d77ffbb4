"""Tests of the exact selection under budgets (compactkd.search.select)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactkd.search.select import (
    InfeasibleBudget,
    Option,
    Selection,
    budget_list,
    resolve_budgets,
    select,
)

FRACTIONS = (0.5, 0.75, 1.0)
RESOURCES = ("flops", "params")


def make_slots(n_blocks: int) -> list[str]:
    return ["stem", *(f"block_{i}" for i in range(1, n_blocks + 1)), "head"]


def is_valid(network: tuple[Option, ...]) -> bool:
    """Neighbours agree on the fraction of the interface between them."""
    return all(
        math.isclose(a.out_fraction, b.in_fraction)
        for a, b in zip(network[:-1], network[1:], strict=True)
    )


def total(network: tuple[Option, ...], resource: str) -> float:
    return sum(option.costs[resource] for option in network)


def brute_force(options: list[Option], slots: list[str], budgets: dict[str, float]):
    """Every valid network, the best score among those within budget, and the minima."""
    per_slot = [[o for o in options if o.slot == slot] for slot in slots]
    valid = [network for network in itertools.product(*per_slot) if is_valid(network)]
    fitting = [n for n in valid if all(total(n, r) <= b for r, b in budgets.items())]
    best = min((sum(o.score for o in n) for n in fitting), default=None)
    minima = {r: min(total(n, r) for n in valid) for r in budgets} if valid else None
    return best, minima


@st.composite
def instances(draw):
    """Small random chains with fractions, scores, integer costs and (maybe) budgets."""
    n_blocks = draw(st.integers(2, 4))
    slots = make_slots(n_blocks)
    # Fewer fractions per instance make structurally valid networks more common.
    fractions = draw(st.sampled_from([FRACTIONS[-1:], FRACTIONS[1:], FRACTIONS]))
    options = []
    for position, slot in enumerate(slots):
        for k in range(draw(st.integers(1, 4))):
            options.append(
                Option(
                    slot=slot,
                    name=f"{slot}_{k}",
                    in_fraction=None if position == 0 else draw(st.sampled_from(fractions)),
                    out_fraction=(
                        None if position == len(slots) - 1 else draw(st.sampled_from(fractions))
                    ),
                    score=draw(st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False)),
                    costs={r: draw(st.integers(0, 100)) for r in RESOURCES},
                )
            )
    # Costs average 50 per slot: budgets up to 60 per slot are sometimes tight, sometimes not.
    budgets = {}
    for resource in RESOURCES:
        if draw(st.booleans()):
            budgets[resource] = float(draw(st.integers(0, 60 * len(slots))))
    return options, slots, budgets


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_select_matches_brute_force(instance):
    options, slots, budgets = instance
    best, minima = brute_force(options, slots, budgets)

    if best is None:
        with pytest.raises(InfeasibleBudget) as info:
            select(options, slots, budgets)
        message = str(info.value)
        if minima is None:
            assert "no structurally valid network" in message
        else:
            assert info.value.minima == pytest.approx(minima, abs=1e-9)
            for resource, budget in budgets.items():
                assert f"{resource} budget {int(budget):,}" in message
                assert f"smallest reachable {int(minima[resource]):,}" in message
            if all(budgets[r] >= minima[r] for r in budgets):
                assert "each budget alone is reachable" in message
        return

    selection = select(options, slots, budgets)
    assert isinstance(selection, Selection)
    assert list(selection.chosen) == slots
    network = tuple(selection.chosen.values())
    assert all(option.slot == slot for slot, option in selection.chosen.items())
    assert is_valid(network)
    assert selection.score == pytest.approx(best, abs=1e-6)
    assert selection.score == pytest.approx(sum(o.score for o in network), abs=1e-12)
    for resource in RESOURCES:
        assert selection.totals[resource] == total(network, resource)
    for resource, budget in budgets.items():
        assert selection.totals[resource] <= budget


def opt(slot, name, fin, fout, score, flops, params=0.0):
    return Option(slot, name, fin, fout, score, {"flops": flops, "params": params})


def test_greedy_per_slot_choice_would_be_wrong():
    """Per-slot best scores break the budget and disagree on fractions; the optimum does not."""
    slots = ["stem", "block_1", "block_2", "head"]
    options = [
        opt("stem", "stem", None, 1.0, 0.0, 1.0),
        # Best alone: b1_teacher; it writes 1.0, which the cheap good block_2 cannot read.
        opt("block_1", "b1_teacher", 1.0, 1.0, 0.0, 8.0),
        opt("block_1", "b1_narrow", 1.0, 0.5, 1.0, 2.0),
        opt("block_1", "b1_thin", 1.0, 1.0, 5.0, 2.0),
        opt("block_2", "b2_teacher", 1.0, 1.0, 0.5, 6.0),
        opt("block_2", "b2_narrow_in", 0.5, 1.0, 1.0, 3.0),
        opt("block_2", "b2_thin", 1.0, 1.0, 4.0, 1.0),
        opt("head", "head", 1.0, None, 0.0, 1.0),
    ]
    budgets = {"flops": 8.0}
    # Per-slot best: b1_teacher + b2_teacher = 16 flops, far over the budget. Spending the
    # budget greedily on the slot with the largest gain (block_1, b1_teacher, 8 flops) leaves
    # nothing for block_2 either. The optimum mixes a narrowed interface in both blocks.
    selection = select(options, slots, budgets)
    assert [o.name for o in selection.chosen.values()] == [
        "stem",
        "b1_narrow",
        "b2_narrow_in",
        "head",
    ]
    assert selection.score == pytest.approx(2.0)
    assert selection.totals == {"flops": 7.0, "params": 0.0}
    brute_best, _ = brute_force(options, slots, budgets)
    assert selection.score == pytest.approx(brute_best)


def test_large_costs_respect_budget_exactly():
    """Costs in the billions with a budget equal to a network's total: scaled rows stay exact."""
    slots = ["stem", "block_1", "head"]
    options = [
        opt("stem", "stem", None, 1.0, 0.0, 1.0e9),
        opt("block_1", "big", 1.0, 1.0, 0.0, 3.0e9 + 1),
        opt("block_1", "fits", 1.0, 1.0, 0.3, 3.0e9),
        opt("block_1", "small", 1.0, 1.0, 0.9, 1.0e9),
        opt("head", "head", 1.0, None, 0.0, 1.0e9),
    ]
    selection = select(options, slots, {"flops": 5.0e9})
    assert selection.chosen["block_1"].name == "fits"
    assert selection.totals["flops"] == 5.0e9


def test_float_fractions_compare_after_rounding():
    slots = ["stem", "block_1", "head"]
    options = [
        opt("stem", "stem", None, 0.1 + 0.2, 0.0, 1.0),
        opt("block_1", "b", 0.3, 0.7, 0.0, 1.0),
        opt("head", "head", 0.1 * 7, None, 0.0, 1.0),
    ]
    selection = select(options, slots, {})
    assert selection.chosen["block_1"].name == "b"


def test_no_budget_picks_best_scores():
    slots = ["stem", "block_1", "head"]
    options = [
        opt("stem", "stem", None, 1.0, 0.1, 1.0),
        opt("block_1", "a", 1.0, 1.0, 0.2, 100.0),
        opt("block_1", "b", 1.0, 1.0, 0.3, 1.0),
        opt("head", "head", 1.0, None, 0.0, 1.0),
    ]
    selection = select(options, slots, {"flops": None, "params": None})
    assert selection.chosen["block_1"].name == "a"
    assert selection.score == pytest.approx(0.3)


# --------------------------------------------------------------------------- infeasible


def three_slot_options():
    slots = ["stem", "block_1", "head"]
    options = [
        opt("stem", "stem", None, 1.0, 0.0, 10_000.0, 10_000.0),
        opt("block_1", "wide", 1.0, 1.0, 0.0, 60_000.0, 10_000.0),
        opt("block_1", "light", 1.0, 1.0, 1.0, 20_000.0, 60_000.0),
        opt("head", "head", 1.0, None, 0.0, 10_000.0, 30_000.0),
    ]
    return options, slots


def test_infeasible_message_with_reference_ratios():
    options, slots = three_slot_options()
    reference = {"flops": 100_000.0, "params": 200_000.0}
    with pytest.raises(InfeasibleBudget) as info:
        select(options, slots, {"flops": 30_000.0, "params": 20_000.0}, reference)
    message = str(info.value)
    assert "flops budget 30,000 (0.30x) is below the smallest reachable 40,000 (0.40x)" in message
    assert "params budget 20,000 (0.10x) is below the smallest reachable 50,000 (0.25x)" in message
    assert info.value.minima == {"flops": 40_000.0, "params": 50_000.0}
    assert "alone is reachable" not in message
    assert isinstance(info.value, ValueError)


def test_infeasible_jointly_but_each_alone_reachable():
    options, slots = three_slot_options()
    # flops <= 50,000 needs "light" (params 100,000); params <= 60,000 needs "wide" (80,000 flops).
    with pytest.raises(InfeasibleBudget) as info:
        select(options, slots, {"flops": 50_000.0, "params": 60_000.0})
    message = str(info.value)
    assert "flops budget 50,000 is at or above the smallest reachable 40,000" in message
    assert "params budget 60,000 is at or above the smallest reachable 50,000" in message
    assert "each budget alone is reachable, but no network meets all of them together" in message


def test_structurally_invalid_raises_infeasible():
    slots = ["stem", "block_1", "head"]
    options = [
        opt("stem", "stem", None, 0.5, 0.0, 1.0),
        opt("block_1", "b", 1.0, 1.0, 0.0, 1.0),
        opt("head", "head", 1.0, None, 0.0, 1.0),
    ]
    for budgets in ({}, {"flops": 100.0}):
        with pytest.raises(InfeasibleBudget, match="no structurally valid network") as info:
            select(options, slots, budgets)
        assert "stem -> block_1" in str(info.value)


# --------------------------------------------------------------------------- resolve_budgets


REFERENCE = {"flops": 2.0e9, "params": 1.0e6, "latency": 10.0}


def test_resolve_budgets_forms():
    resolved = resolve_budgets(
        {"flops": 0.5, "params": {"absolute": 1.0e5}, "latency": None}, REFERENCE
    )
    assert resolved == {"flops": 1.0e9, "params": 1.0e5}
    assert resolve_budgets({"params": 1}, REFERENCE) == {"params": 1.0e6}
    assert resolve_budgets({}, REFERENCE) == {}


def test_resolve_budgets_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="memory") as info:
        resolve_budgets({"memory": 0.5}, REFERENCE)
    for name in REFERENCE:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [0.0, -0.2, 1.5, True, "0.5", {"absolute": -1.0}, {"absolute": "x"}, {"ratio": 0.5}, [0.5]],
)
def test_resolve_budgets_bad_forms(spec):
    with pytest.raises(ValueError, match="accepted forms"):
        resolve_budgets({"flops": spec}, REFERENCE)


def test_budget_list_takes_one_budget_or_a_sweep():
    assert budget_list({"flops": 0.5}) == [{"flops": 0.5}]
    sweep = [{"flops": 0.5}, {"params": 0.2}]
    assert budget_list(sweep) == sweep and budget_list(tuple(sweep)) is not sweep
    for bad in ([], None, [0.5], [{"flops": 0.5}, "params"]):
        with pytest.raises(ValueError, match="budgets must be a mapping .* or a non-empty list"):
            budget_list(bad)


# --------------------------------------------------------------------------- validation


def test_unknown_slot_lists_valid_slots():
    options, slots = three_slot_options()
    options.append(opt("block_9", "x", 1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="block_9") as info:
        select(options, slots, {})
    assert "['stem', 'block_1', 'head']" in str(info.value)


def test_empty_slot():
    options, slots = three_slot_options()
    with pytest.raises(ValueError, match="block_2"):
        select(options, ["stem", "block_1", "block_2", "head"], {})


def test_missing_cost_key():
    options, slots = three_slot_options()
    with pytest.raises(ValueError, match="latency"):
        select(options, slots, {"latency": 5.0})


@pytest.mark.parametrize(
    "bad",
    [
        opt("stem", "s", 1.0, 1.0, 0.0, 1.0),  # stem must not read an interface
        opt("head", "h", 1.0, 1.0, 0.0, 1.0),  # head must not write one
        opt("block_1", "b", None, 1.0, 0.0, 1.0),  # blocks read one
        opt("block_1", "b", 1.0, None, 0.0, 1.0),  # and write one
    ],
)
def test_fraction_none_where_required(bad):
    options, slots = three_slot_options()
    with pytest.raises(ValueError, match="fraction"):
        select([*options, bad], slots, {})
