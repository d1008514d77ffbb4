"""Exact choice of one option per slot under budgets, as a 0/1 integer program (docs/method.md §5).

The network is a chain of slots ``stem, block_1, ..., block_N, head``; interface ``i`` sits
between ``slots[i]`` and ``slots[i + 1]``. Every option reads its input interface at some
fraction of the channels and writes its output interface at some fraction. A valid network
picks exactly one option per slot such that neighbours agree on the fraction of the interface
between them. Among the valid networks whose summed costs fit the budgets, :func:`select`
returns one of minimal summed score, solved exactly with :func:`scipy.optimize.milp`.

Variables of the integer program (all binary):

- ``x[o]`` for every option ``o``: 1 when the option is chosen;
- ``z[i, f]`` for every interface ``i`` and every fraction ``f`` seen on it: 1 when the
  interface runs at fraction ``f``.

Constraints:

- one option per slot: ``sum(x[o] for o in slot) == 1``;
- coupling, for every interface ``i`` and fraction ``f``:
  ``sum(x[o] for o in slots[i] if o.out_fraction == f) == z[i, f]
  == sum(x[o] for o in slots[i + 1] if o.in_fraction == f)``;
- budgets: ``sum(costs[r] * x[o]) <= budget[r]`` for every budgeted resource ``r``.

Budget rows are scaled to order 1. Should the solver's feasibility tolerance still admit a
network whose exact total exceeds a budget by a hair, that one combination is cut off
(``sum(x over it) <= n_slots - 1``) and the program solved again, so budgets hold exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp

from compactkd.config import is_number

__all__ = [
    "InfeasibleBudget",
    "budget_list",
    "Option",
    "Selection",
    "resolve_budgets",
    "select",
]

#: Fractions are compared after rounding to this many decimals (0.1 + 0.2 == 0.3 here).
FRACTION_DECIMALS = 6

#: At most this many networks that break a budget within the solver's tolerance are cut off.
_MAX_CUTS = 100

_ACCEPTED_BUDGET_FORMS = (
    "a ratio of the reference in (0, 1] (e.g. 0.5), "
    "{'absolute': value} with a finite value >= 0, or None for no budget"
)


@dataclass(frozen=True)
class Option:
    """One choice for one slot of the chain.

    Attributes:
        slot: the slot this option fills (``stem``, ``block_i`` or ``head``).
        name: a label for the option, e.g. the candidate's family and width.
        in_fraction: fraction of channels it reads on its input interface; None for the stem.
        out_fraction: fraction of channels it writes on its output interface; None for the head.
        score: quality score to minimise (lower is better), e.g. the validation NMSE.
        costs: cost per resource, e.g. ``{"flops": ..., "params": ..., "latency": ...}``.
    """

    slot: str
    name: str
    in_fraction: float | None
    out_fraction: float | None
    score: float
    costs: Mapping[str, float]


@dataclass(frozen=True)
class Selection:
    """The chosen network.

    Attributes:
        chosen: slot -> chosen option, in slot order.
        totals: summed cost of the chosen options for every resource present in them
            (an option without that resource counts as 0).
        score: summed score of the chosen options.
    """

    chosen: dict[str, Option]
    totals: dict[str, float]
    score: float


class InfeasibleBudget(ValueError):
    """No valid network fits the budgets (or no valid network exists at all).

    Attributes:
        budgets: the budgets that were asked for, resource -> absolute value.
        minima: resource -> smallest total reachable by any valid network for that resource
            alone; empty when no structurally valid network exists.
    """

    def __init__(
        self,
        message: str,
        *,
        budgets: Mapping[str, float] | None = None,
        minima: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(message)
        self.budgets: dict[str, float] = dict(budgets or {})
        self.minima: dict[str, float] = dict(minima or {})


# --------------------------------------------------------------------------- budgets


def budget_list(budgets: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``budgets`` as a list: one budget, or several for a sweep (the first is the student's)."""
    listed = [budgets] if isinstance(budgets, Mapping) else list(budgets or [])
    if not listed or not all(isinstance(b, Mapping) for b in listed):
        raise ValueError(f"block_search.budgets must be a mapping such as {{flops: 0.5}} or a "
                         f"non-empty list of them, got {budgets!r}")  # fmt: skip
    return [dict(b) for b in listed]


def resolve_budgets(budgets: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, float]:
    """Turn budget specifications into absolute budgets.

    Args:
        budgets: resource -> specification. A plain number in (0, 1] is a ratio of the
            reference (``{"flops": 0.5}`` means half the teacher's FLOPs); ``{"absolute": v}``
            is an absolute budget (``{"params": {"absolute": 1.0e5}}``); None means no budget.
        reference: resource -> the reference (teacher's) cost; its keys are the valid resources.

    Returns:
        resource -> absolute budget, for the budgeted resources only, in the order given.
        A resource that is missing or None has no budget and is left out.

    Raises:
        ValueError: an unknown resource (the message lists the valid ones), a ratio <= 0 or
            > 1, or any other form (the message lists the accepted forms).
    """
    unknown = [name for name in budgets if name not in reference]
    if unknown:
        raise ValueError(
            f"unknown budget resource(s) {unknown}; valid resources are {sorted(reference)}"
        )
    resolved: dict[str, float] = {}
    for name, spec in budgets.items():
        if spec is None:
            continue
        if is_number(spec):
            ratio = float(spec)
            if not 0.0 < ratio <= 1.0:
                raise ValueError(
                    f"budget for {name!r} is the ratio {spec!r}, outside (0, 1]; "
                    f"accepted forms: {_ACCEPTED_BUDGET_FORMS}"
                )
            resolved[name] = ratio * float(reference[name])
        elif isinstance(spec, Mapping) and set(spec) == {"absolute"}:
            value = spec["absolute"]
            if not (is_number(value) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"budget for {name!r} has the absolute value {value!r}, which is not a "
                    f"finite number >= 0; accepted forms: {_ACCEPTED_BUDGET_FORMS}"
                )
            resolved[name] = float(value)
        else:
            raise ValueError(
                f"budget for {name!r} is {spec!r}; accepted forms: {_ACCEPTED_BUDGET_FORMS}"
            )
    return resolved


# --------------------------------------------------------------------------- validation


def _fraction_key(fraction: float) -> float:
    """The fraction as compared and used as a dict key: rounded to FRACTION_DECIMALS."""
    return round(float(fraction), FRACTION_DECIMALS)


def _check_fraction(option: Option, field: str, expected_none: bool, why: str) -> None:
    """Raise ValueError unless ``option.<field>`` is None exactly when ``expected_none``."""
    value = getattr(option, field)
    if expected_none:
        if value is not None:
            raise ValueError(
                f"option {option.name!r} of slot {option.slot!r} must have {field}=None "
                f"({why}), got {value!r}"
            )
        return
    if value is None:
        raise ValueError(
            f"option {option.name!r} of slot {option.slot!r} needs a {field} ({why}), got None"
        )
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"option {option.name!r} of slot {option.slot!r} has {field}={value!r}; "
            "expected a finite number > 0"
        )


def _validate(
    options: Sequence[Option], slots: Sequence[str], budgets: Mapping[str, float]
) -> dict[str, list[int]]:
    """Check the problem and return slot -> indices of its options (in slot order)."""
    slots = list(slots)
    if not slots:
        raise ValueError("slots is empty; expected e.g. ['stem', 'block_1', ..., 'head']")
    duplicates = sorted({slot for slot in slots if slots.count(slot) > 1})
    if duplicates:
        raise ValueError(f"slots must be distinct, repeated: {duplicates}")

    by_slot: dict[str, list[int]] = {slot: [] for slot in slots}
    for index, option in enumerate(options):
        if option.slot not in by_slot:
            raise ValueError(
                f"option {option.name!r} names the unknown slot {option.slot!r}; "
                f"valid slots are {slots}"
            )
        by_slot[option.slot].append(index)
    empty = [slot for slot, indices in by_slot.items() if not indices]
    if empty:
        raise ValueError(f"every slot needs at least one option; none for {empty}")

    first, last = slots[0], slots[-1]
    for option in options:
        _check_fraction(
            option,
            "in_fraction",
            option.slot == first,
            "it is the first slot" if option.slot == first else "it reads an interface",
        )
        _check_fraction(
            option,
            "out_fraction",
            option.slot == last,
            "it is the last slot" if option.slot == last else "it writes an interface",
        )
        if not (is_number(option.score) and math.isfinite(option.score)):
            raise ValueError(
                f"option {option.name!r} of slot {option.slot!r} has the score "
                f"{option.score!r}; expected a finite number"
            )
        for resource in budgets:
            if resource not in option.costs:
                raise ValueError(
                    f"option {option.name!r} of slot {option.slot!r} has no cost for the "
                    f"budgeted resource {resource!r}; its costs are {sorted(option.costs)}"
                )
            cost = option.costs[resource]
            if not (is_number(cost) and math.isfinite(cost)):
                raise ValueError(
                    f"option {option.name!r} of slot {option.slot!r} has the {resource} cost "
                    f"{cost!r}; expected a finite number"
                )

    for resource, budget in budgets.items():
        if not (is_number(budget) and math.isfinite(budget)):
            raise ValueError(f"budget for {resource!r} is {budget!r}; expected a finite number")
    return by_slot


# --------------------------------------------------------------------------- integer program


@dataclass(frozen=True)
class _Structure:
    """The structural part of the integer program: one option per slot, fractions agree."""

    n_options: int
    n_variables: int
    constraint: LinearConstraint
    #: interface index -> (fractions written by the slot before, fractions read by the next)
    interface_fractions: list[tuple[set[float], set[float]]]


def _build_structure(
    options: Sequence[Option], slots: Sequence[str], by_slot: Mapping[str, list[int]]
) -> _Structure:
    """Rows for ``sum x == 1`` per slot and the coupling rows per (interface, fraction)."""
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    rhs: list[float] = []
    n_options = len(options)
    next_variable = n_options

    def add_row(entries: list[tuple[int, float]], value: float) -> None:
        row = len(rhs)
        for col, coefficient in entries:
            rows.append(row)
            cols.append(col)
            values.append(coefficient)
        rhs.append(value)

    for slot in slots:
        add_row([(index, 1.0) for index in by_slot[slot]], 1.0)

    interface_fractions: list[tuple[set[float], set[float]]] = []
    for before, after in zip(slots[:-1], slots[1:], strict=True):
        writes: dict[float, list[int]] = {}
        reads: dict[float, list[int]] = {}
        for index in by_slot[before]:
            writes.setdefault(_fraction_key(options[index].out_fraction), []).append(index)
        for index in by_slot[after]:
            reads.setdefault(_fraction_key(options[index].in_fraction), []).append(index)
        interface_fractions.append((set(writes), set(reads)))
        for fraction in sorted(set(writes) | set(reads)):
            z = next_variable
            next_variable += 1
            # A fraction seen on one side only gets an all-zero side: it forces z (and x) to 0.
            for side in (writes, reads):
                add_row([(index, 1.0) for index in side.get(fraction, [])] + [(z, -1.0)], 0.0)

    matrix = sparse.csr_array((values, (rows, cols)), shape=(len(rhs), next_variable), dtype=float)
    bound = np.asarray(rhs, dtype=float)
    return _Structure(
        n_options=n_options,
        n_variables=next_variable,
        constraint=LinearConstraint(matrix, bound, bound),
        interface_fractions=interface_fractions,
    )


def _budget_constraint(
    options: Sequence[Option], structure: _Structure, budgets: Mapping[str, float]
) -> LinearConstraint:
    """One row ``sum(costs[r] * x) <= budget[r]`` per budgeted resource, scaled to order 1.

    Each row is divided by its largest magnitude so that HiGHS's absolute tolerances act
    relatively: FLOPs in the billions would otherwise let near-integral x break a budget.
    """
    matrix = np.zeros((len(budgets), structure.n_variables))
    upper = np.empty(len(budgets))
    for row, (resource, budget) in enumerate(budgets.items()):
        costs = np.array([float(option.costs[resource]) for option in options])
        scale = max(float(np.max(np.abs(costs))), abs(budget), 1.0)
        matrix[row, : structure.n_options] = costs / scale
        upper[row] = budget / scale
    return LinearConstraint(sparse.csr_array(matrix), -np.inf, upper)


def _solve(
    objective: np.ndarray, structure: _Structure, constraints: Sequence[LinearConstraint]
) -> OptimizeResult:
    """Solve the 0/1 program exactly (relative MIP gap 0); status 2 means infeasible."""
    c = np.zeros(structure.n_variables)
    c[: structure.n_options] = objective
    result = milp(
        c,
        constraints=list(constraints),
        integrality=np.ones(structure.n_variables),
        bounds=Bounds(0.0, 1.0),
        options={"mip_rel_gap": 0.0},
    )
    if result.status not in (0, 2) or (result.status == 0 and not result.success):
        raise RuntimeError(
            f"milp did not solve the selection (status {result.status}): {result.message}"
        )
    return result


def _no_good_cut(indices: Sequence[int], structure: _Structure) -> LinearConstraint:
    """``sum(x[i] for i in indices) <= len(indices) - 1``: never this exact combination again."""
    row = np.zeros((1, structure.n_variables))
    row[0, list(indices)] = 1.0
    return LinearConstraint(sparse.csr_array(row), -np.inf, len(indices) - 1.0)


def _chosen_indices(result: OptimizeResult, structure: _Structure) -> list[int]:
    """Indices of the options set to 1 in the (rounded) solution."""
    return [int(i) for i in np.flatnonzero(result.x[: structure.n_options] > 0.5)]


# --------------------------------------------------------------------------- messages


def _format_amount(value: float) -> str:
    """20000.0 -> '20,000'; 353051234.6 -> '353,051,235'; 12.5 -> '12.5'; 0.0123 -> '0.0123'."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _format_with_ratio(value: float, resource: str, reference: Mapping[str, float] | None) -> str:
    """The amount, followed by its ratio of the reference when there is one, e.g. '(0.07x)'."""
    text = _format_amount(value)
    if reference is not None and resource in reference and float(reference[resource]) > 0:
        ratio = value / float(reference[resource])
        text += f" ({ratio:.2f}x)" if abs(ratio) >= 0.01 or ratio == 0 else f" ({ratio:.1e}x)"
    return text


def _structural_message(structure: _Structure, slots: Sequence[str]) -> str:
    """Why no structurally valid network exists, naming interfaces that can never agree."""
    disjoint = [
        f"{slots[i]} -> {slots[i + 1]} (writes {sorted(writes)}, reads {sorted(reads)})"
        for i, (writes, reads) in enumerate(structure.interface_fractions)
        if not writes & reads
    ]
    message = (
        "no structurally valid network exists: the chosen options' output and input "
        "fractions can never agree on every interface"
    )
    if disjoint:
        message += "; no common fraction at " + "; ".join(disjoint)
    return message


# --------------------------------------------------------------------------- selection


def select(
    options: Sequence[Option],
    slots: Sequence[str],
    budgets: Mapping[str, float],
    reference: Mapping[str, float] | None = None,
    excluded: Sequence[Mapping[str, str]] = (),
) -> Selection:
    """Choose one option per slot minimising the summed score under the budgets, exactly.

    Args:
        options: every option of every slot.
        slots: the chain in order, e.g. ``["stem", "block_1", ..., "block_N", "head"]``;
            the first slot reads no interface, the last writes none.
        budgets: resource -> absolute budget on the summed cost (see :func:`resolve_budgets`);
            a None value means no budget on that resource.
        reference: resource -> reference (teacher's) cost, only used to show ratios in the
            message of :class:`InfeasibleBudget`.
        excluded: networks that may not be returned, each as slot -> option name (no-good
            cuts: drawing distinct networks one after another).

    Returns:
        The optimal :class:`Selection` (one of them when several tie).

    Raises:
        ValueError: an empty slot, an option naming an unknown slot, a fraction that is None
            where it must not be (or not None where it must be), or a budgeted resource
            missing from an option's costs.
        InfeasibleBudget: no valid network fits the budgets, or none exists at all. The
            message names, for every budgeted resource, the budget and the smallest total
            any valid network reaches for that resource alone.
    """
    budgets = {name: value for name, value in budgets.items() if value is not None}
    slots = list(slots)
    by_slot = _validate(options, slots, budgets)
    structure = _build_structure(options, slots, by_slot)

    scores = np.array([float(option.score) for option in options])
    constraints = [structure.constraint]
    if budgets:
        constraints.append(_budget_constraint(options, structure, budgets))
    position = {(option.slot, option.name): i for i, option in enumerate(options)}
    for network in excluded:
        indices = [position.get((slot, name)) for slot, name in network.items()]
        if None not in indices:  # a network these options cannot build needs no cut
            constraints.append(_no_good_cut(indices, structure))
    for _ in range(_MAX_CUTS + 1):
        result = _solve(scores, structure, constraints)
        if result.status == 2:
            raise _infeasible(options, slots, structure, budgets, reference)
        chosen_indices = _chosen_indices(result, structure)
        if sorted(options[i].slot for i in chosen_indices) != sorted(slots):
            raise RuntimeError("milp returned a solution without exactly one option per slot")
        over = [
            resource
            for resource, budget in budgets.items()
            if math.fsum(options[i].costs[resource] for i in chosen_indices) > budget
        ]
        if not over:
            break
        # HiGHS's feasibility tolerance let this network exceed a budget by a hair (say one
        # FLOP in billions): forbid exactly this combination and solve again.
        constraints.append(_no_good_cut(chosen_indices, structure))
    else:
        raise RuntimeError(
            f"milp kept returning networks a hair over the budgets after {_MAX_CUTS} cuts"
        )

    by_name = {options[i].slot: options[i] for i in chosen_indices}
    chosen = {slot: by_name[slot] for slot in slots}
    resources: list[str] = []
    for option in chosen.values():
        resources.extend(r for r in option.costs if r not in resources)
    totals = {r: math.fsum(o.costs.get(r, 0.0) for o in chosen.values()) for r in resources}
    return Selection(
        chosen=chosen,
        totals=totals,
        score=float(sum(option.score for option in chosen.values())),
    )


def _infeasible(
    options: Sequence[Option],
    slots: Sequence[str],
    structure: _Structure,
    budgets: Mapping[str, float],
    reference: Mapping[str, float] | None,
) -> InfeasibleBudget:
    """The error for an infeasible problem, with the smallest reachable total per resource."""
    minima: dict[str, float] = {}
    for resource in budgets:
        costs = np.array([float(option.costs[resource]) for option in options])
        result = _solve(costs, structure, [structure.constraint])
        if result.status == 2:
            return InfeasibleBudget(_structural_message(structure, slots), budgets=budgets)
        minima[resource] = float(sum(costs[i] for i in _chosen_indices(result, structure)))
    if not budgets:  # nothing budgeted, so the structure itself is infeasible
        return InfeasibleBudget(_structural_message(structure, slots), budgets=budgets)

    parts = []
    for resource, budget in budgets.items():
        relation = "is below" if budget < minima[resource] else "is at or above"
        parts.append(
            f"{resource} budget {_format_with_ratio(budget, resource, reference)} {relation} "
            f"the smallest reachable {_format_with_ratio(minima[resource], resource, reference)}"
        )
    message = "no valid network fits the budgets: " + "; ".join(parts)
    if all(budget >= minima[resource] for resource, budget in budgets.items()):
        message += "; each budget alone is reachable, but no network meets all of them together"
    return InfeasibleBudget(message, budgets=budgets, minima=minima)
