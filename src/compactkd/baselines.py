"""The models a run fine-tunes, as recipes: the student and the baselines it must beat at the
same budgets (docs/method.md §7, §8).

- ``student``: the chosen blocks with their block-wise weights, KD.
- ``scratch``: the student's architecture from random weights, cross-entropy alone.
- ``uniform``: the teacher's architecture with every width scaled by one multiplier, the
  largest that fits the budgets (randomly initialised), KD.
- ``pruned``: the trained teacher with every layer's channels cut to one kept fraction, the
  largest that fits: inner channels by the L1 norm of their filters, interface (residual)
  channels by the same activation ranking the block search uses; it keeps the teacher's
  weights, KD.
- ``torch_pruning``: the trained teacher pruned by the torch-pruning package (DepGraph, group
  magnitude, global ranking: :mod:`compactkd.depgraph`) at the smallest global ratio that
  fits, so each layer loses what the ranking says; it keeps the teacher's weights, KD.

Every baseline fits the FLOPs and parameter budgets, counted on the real modules.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd.blocks.assembly import BlockChoice, Blueprint
from compactkd.blocks.candidates import interface_keeps
from compactkd.blocks.partition import head_inner_channels, partition_model
from compactkd.costs import module_costs
from compactkd.depgraph import MAX_RATIO, prunable_copy, prune
from compactkd.distillation import Recipe, reinitialise
from compactkd.model_files import network_from_package, network_package
from compactkd.models import MODELS, build_model
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import assemble_student, student_blueprint
from compactkd.search.select import resolve_budgets

logger = logging.getLogger(__name__)

FITTED_RESOURCES = ("flops", "params")


def fits_budgets(
    model: nn.Module, input_shape: Sequence[int], budgets: Mapping[str, float]
) -> bool:
    """Whether ``model``'s FLOPs and parameters are within the (absolute) budgets given."""
    costs = module_costs(model, input_shape)
    return all(costs[k] <= budgets[k] for k in FITTED_RESOURCES if budgets.get(k) is not None)


def largest_fitting(fits: Callable[[float], bool], resolution: float = 1e-4) -> float:
    """The largest fraction in ``(0, 1]`` for which ``fits`` holds (``fits`` is monotone).

    Widths are whole channels, so costs move in steps: bisection finds the edge of the last
    step that fits, to within ``resolution`` (the result is a multiple of it; ``fits`` is
    monotone, so rounding down still fits).
    """
    if fits(1.0):
        return 1.0
    low, high = resolution, 1.0
    if not fits(low):
        raise ValueError("no width fits the budgets: they are below the narrowest network")
    while high - low > resolution * low:
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    # On the resolution's grid (0.4453, not 0.44530694): a fraction that names a candidate.
    return max(resolution, round(math.floor(low / resolution) * resolution, 10))


def uniform_width_spec(
    teacher_spec: Mapping[str, Any], input_shape: Sequence[int], budgets: Mapping[str, float]
) -> dict[str, Any]:
    """The teacher's spec with the largest ``width_mult`` whose model fits the budgets
    (every width scaled alike, MobileNetV2's last conv included)."""
    builder = MODELS.get(teacher_spec["name"])
    if builder is None or "width_mult" not in inspect.signature(builder).parameters:
        raise ValueError(
            f"the uniform baseline needs a zoo model with a width_mult; {teacher_spec['name']!r} "
            "has none: switch it off (distillation.baselines.uniform: false)"
        )

    scales_last = "last_width_mult" in inspect.signature(builder).parameters

    def spec(width: float) -> dict[str, Any]:
        return {**teacher_spec, "width_mult": width} | (
            {"last_width_mult": width} if scales_last else {}
        )

    width = largest_fitting(lambda w: fits_budgets(build_model(spec(w)), input_shape, budgets))
    return spec(width)


def pruned_fractions(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    importance: Sequence[torch.Tensor],
    config: BlockSearchConfig,
) -> list[float]:
    """The ``pruned`` baseline's kept fraction at each budget of the search, when
    ``config.uniform_cuts`` asks the search to be able to fall back to that cut."""
    if not config.uniform_cuts:
        return []
    reference = module_costs(teacher.eval(), input_shape)
    fractions = []
    for budget in config.budget_list:
        absolute = resolve_budgets(budget, reference)
        cut = pruned_blueprint(teacher, input_shape, config.granularity, importance, absolute)
        fractions.append(cut.blocks[0].in_fraction)
    return fractions


def pruned_blueprint(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    granularity: str,
    importance: Sequence[torch.Tensor],
    budgets: Mapping[str, float],
) -> Blueprint:
    """The teacher cut to one kept fraction everywhere (the head's inner width too, where it
    has one), the largest that fits the budgets."""
    partition = partition_model(teacher.eval(), input_shape, granularity)
    names, cuts_head = partition.block_names, head_inner_channels(partition.head) is not None

    def blueprint(fraction: float) -> Blueprint:
        keeps = interface_keeps(importance, [1.0, fraction])
        choices = [BlockChoice(n, "pruned", {"ratio": fraction}, fraction, fraction) for n in names]
        head_width = fraction if cuts_head else 1.0
        return Blueprint(dict(teacher.spec), input_shape, granularity, keeps, choices, head_width)

    fraction = largest_fitting(
        lambda f: fits_budgets(blueprint(f).build(teacher), input_shape, budgets)
    )
    return blueprint(fraction)


def student_recipe(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    spec: Mapping[str, Any],
    table: pd.DataFrame,
    candidate_weights: Mapping[str, Any],
) -> Recipe:
    student = assemble_student(teacher, input_shape, spec, table, candidate_weights)
    # A copy per seed: each fine-tune starts from the same weights.
    return Recipe("student", lambda seed: copy.deepcopy(student), distilled=True, inherited=True)


def scratch_recipe(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    spec: Mapping[str, Any],
    table: pd.DataFrame,
    candidate_weights: Mapping[str, Any],
) -> Recipe:
    blueprint = student_blueprint(
        teacher.spec, input_shape, candidate_weights["keeps"], spec, table
    )
    return Recipe("scratch", lambda seed: reinitialise(blueprint.build(), seed), distilled=False)


def uniform_recipe(
    teacher: nn.Module, input_shape: tuple[int, int, int], spec: Mapping[str, Any]
) -> Recipe:
    uniform = uniform_width_spec(teacher.spec, input_shape, spec["budgets"])
    logger.info("uniform baseline: width multiplier %.4f", uniform["width_mult"])

    def initial(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(uniform)

    return Recipe("uniform", initial, distilled=True, facts={"width_mult": uniform["width_mult"]})


def pruned_recipe(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    spec: Mapping[str, Any],
    importance: Sequence[torch.Tensor],
) -> Recipe:
    pruned = pruned_blueprint(
        teacher, input_shape, spec["granularity"], importance, spec["budgets"]
    )
    logger.info("pruned baseline: kept fraction %.4f", pruned.blocks[0].in_fraction)
    network = pruned.build(teacher)
    fraction = pruned.blocks[0].in_fraction
    return Recipe(
        "pruned", lambda seed: copy.deepcopy(network), True, True, {"kept_fraction": fraction}
    )


def torch_pruned(
    teacher: nn.Module, input_shape: Sequence[int], budgets: Mapping[str, float]
) -> tuple[nn.Module, float]:
    """The teacher pruned by torch-pruning at the smallest global ratio whose network fits the
    budgets (the largest network that fits), and that ratio."""
    start = prunable_copy(teacher)
    smallest: dict[str, Any] = {"ratio": math.inf}

    def fits(share: float) -> bool:
        # share 1 prunes nothing, share ~0 prunes MAX_RATIO: larger shares, larger networks.
        ratio = MAX_RATIO * (1 - share)
        network = prune(start, input_shape, ratio)
        if not fits_budgets(network, input_shape, budgets):
            return False
        if ratio < smallest["ratio"]:  # the bisection's last fit: kept, not pruned again
            smallest.update(ratio=ratio, network=network)
        return True

    try:
        largest_fitting(fits)
    except ValueError as error:
        raise ValueError(
            f"torch-pruning cannot fit the budgets {dict(budgets)}: even a global pruning ratio "
            f"of {MAX_RATIO} leaves a larger network"
        ) from error
    return smallest["network"], smallest["ratio"]


def torch_pruning_recipe(
    teacher: nn.Module, input_shape: tuple[int, int, int], spec: Mapping[str, Any]
) -> Recipe:
    _check_prunable(teacher, input_shape)
    network, ratio = torch_pruned(teacher, input_shape, spec["budgets"])
    kept, reference = module_costs(network, input_shape), module_costs(teacher, input_shape)
    facts = {
        "pruning_ratio": ratio,
        "flops": kept["flops"],
        "params": kept["params"],
        "flops_ratio": kept["flops"] / reference["flops"],
        "params_ratio": kept["params"] / reference["params"],
    }
    logger.info("torch_pruning baseline: global pruning ratio %.4f", ratio)
    return Recipe("torch_pruning", lambda seed: copy.deepcopy(network), True, True, facts)


def _check_prunable(teacher: nn.Module, input_shape: Sequence[int]) -> None:
    """Fail before any training where torch-pruning cannot prune the teacher, or its result
    cannot be saved (rebuilt from spec and weights)."""
    try:
        network_from_package(network_package(prune(prunable_copy(teacher), input_shape, 0.5)))
    except Exception as error:  # DepGraph's tracing fails in ways of its own
        raise ValueError(
            f"the torch_pruning baseline cannot prune {teacher.spec['name']!r} ({error}): "
            "switch it off (distillation.baselines.torch_pruning: false)"
        ) from error
