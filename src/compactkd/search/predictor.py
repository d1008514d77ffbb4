"""Select by predicted accuracy (``score: predicted_accuracy``, docs/method.md §5b).

The summed NMSE says how well a structure copies the teacher before fine-tuning, not what
accuracy it reaches. As DONNA (Moons et al., 2021) and EagleEye (Li et al., 2020) do, the
search measures instead: it draws budget-feasible structures from the trained pool (the
NMSE-optimal one and the uniform cut among them), assembles each, re-estimates its BatchNorm
statistics (optionally a few KD steps), and measures its validation top-1. A linear model
over per-option features (each slot's NMSE and log parameters) is fitted to those
accuracies. Being a sum over options, it keeps the selection an exact integer program: the
MILP maximises predicted accuracy under the budgets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from compactkd.data import input_shape, make_loader
from compactkd.distillation import recalibrate_batchnorm
from compactkd.evaluation import evaluate
from compactkd.losses import kd_loss
from compactkd.search.config import BlockSearchConfig, PredictorConfig
from compactkd.search.pool import (
    CandidatePool,
    assemble_student,
    slots,
    student_spec,
    teacher_costs,
)
from compactkd.search.select import InfeasibleBudget, Option, Selection, select

FEATURES = ("nmse", "log_params")  # per slot


def option_features(option: Option) -> tuple[float, float]:
    """What the predictor reads of one option: its NMSE score and log parameter count."""
    return float(option.score), math.log1p(float(option.costs["params"]))


def structure_features(chosen: Mapping[str, Option], slots: Sequence[str]) -> np.ndarray:
    """One row of the design matrix: every slot's option features, slot by slot."""
    return np.array([x for slot in slots for x in option_features(chosen[slot])])


@dataclass(frozen=True)
class LinearPredictor:
    """``top1 = intercept + sum_j weights[j] * (x[j] - means[j]) / scales[j]``."""

    slots: tuple[str, ...]
    intercept: float
    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, slots: Sequence[str], ridge: float):
        """Ridge regression on standardised features (a constant feature gets no weight)."""
        means, scales = x.mean(axis=0), x.std(axis=0)
        scales = np.where(scales > 1e-12, scales, 1.0)
        z = (x - means) / scales
        weights = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return cls(tuple(slots), float(y.mean()), means, scales, weights)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + ((x - self.means) / self.scales) @ self.weights

    def contribution(self, option: Option) -> float:
        """The option's share of the predicted top-1 (the shares and the intercept add up)."""
        start = self.slots.index(option.slot) * len(FEATURES)
        cols = slice(start, start + len(FEATURES))
        centred = (np.array(option_features(option)) - self.means[cols]) / self.scales[cols]
        return float(centred @ self.weights[cols])

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": list(self.slots),
            "features": list(FEATURES),
            "intercept": self.intercept,
            "means": self.means.tolist(),
            "scales": self.scales.tolist(),
            "weights": self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearPredictor:
        arrays = (np.array(data[k], dtype=float) for k in ("means", "scales", "weights"))
        return cls(tuple(data["slots"]), float(data["intercept"]), *arrays)


def predicted_options(options: Sequence[Option], predictor: LinearPredictor) -> list[Option]:
    """The options scored for the MILP, which minimises: minus their predicted top-1 share."""
    return [replace(o, score=-predictor.contribution(o)) for o in options]


def draw_structures(
    options: Sequence[Option],
    slots: Sequence[str],
    budgets: Sequence[Mapping[str, float]],
    config: PredictorConfig,
    first: Sequence[Mapping[str, str]] = (),
) -> list[tuple[int, Selection]]:
    """``config.samples`` distinct structures, each with the index of the budget it fits.

    The ``first`` structures (slot -> option name) and each budget's NMSE-optimal one
    come first; the rest minimise NMSE scores perturbed by log-normal noise, with no-good
    cuts so that none repeats. Budgets take turns. Fewer come back if the space runs out.
    """
    by_name = {(o.slot, o.name): o for o in options}
    drawn: list[tuple[int, Selection]] = []
    for index, network in enumerate(first):
        chosen = {slot: by_name[(slot, network[slot])] for slot in slots}
        drawn.append((index % len(budgets), _selection(chosen)))
    rng = np.random.default_rng(config.seed)
    exhausted: set[int] = set()
    turn = 0
    while len(drawn) < config.samples and len(exhausted) < len(budgets):
        budget, turn = turn % len(budgets), turn + 1
        if budget in exhausted:
            continue
        noise = config.noise if turn > len(budgets) else 0.0  # first round: the NMSE optimum
        factors = np.exp(noise * rng.standard_normal(len(options)))
        scored = [replace(o, score=o.score * f) for o, f in zip(options, factors, strict=True)]
        seen = [{slot: o.name for slot, o in s.chosen.items()} for _, s in drawn]
        try:
            drawn.append((budget, select(scored, slots, budgets[budget], excluded=seen)))
        except InfeasibleBudget:
            exhausted.add(budget)
    # Report the unperturbed options (their true NMSE), not the perturbed draws.
    return [
        (b, _selection({k: by_name[(k, o.name)] for k, o in s.chosen.items()})) for b, s in drawn
    ]


def _selection(chosen: Mapping[str, Option]) -> Selection:
    totals: dict[str, float] = {}
    for option in chosen.values():
        for key, value in option.costs.items():
            totals[key] = totals.get(key, 0.0) + value
    return Selection(dict(chosen), totals, float(sum(o.score for o in chosen.values())))


def uniform_structure(options: Sequence[Option], fraction: float) -> dict[str, str] | None:
    """The uniform cut at ``fraction`` (every interface at it), when the options hold it."""
    at = [o for o in options if {o.in_fraction, o.out_fraction} - {None} == {fraction}]
    chosen = {o.slot: o.name for o in at}
    return chosen if len(chosen) == len({o.slot for o in options}) else None


def measure_structure(
    teacher: nn.Module,
    spec: Mapping[str, Any],
    table: pd.DataFrame,
    candidate_weights: Mapping[str, Any],
    splits: Mapping[str, Any],
    config: PredictorConfig,
    device: torch.device,
) -> float:
    """Validation top-1 of the assembled structure after BatchNorm recalibration (and
    ``config.finetune_batches`` KD steps, when asked)."""
    student = assemble_student(teacher, input_shape(splits), spec, table, candidate_weights)
    student.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    train = make_loader(splits, "train", config.batch_size, device)
    recalibrate_batchnorm(student, train, config.recalibration_batches, generator)
    if config.finetune_batches:
        _brief_kd(student, teacher.to(device).eval(), train, config.finetune_batches, generator)
    return float(evaluate(student, make_loader(splits, "val", 256, device))["top1"])


def _brief_kd(student, teacher, loader, steps: int, generator: torch.Generator) -> None:
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    student.train()
    for _, (images, labels) in zip(range(steps), loader.batches(generator), strict=False):
        with torch.no_grad():
            target = teacher(images)
        loss = kd_loss(student(images), target, labels, alpha=0.5, tau=4.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()


def fit_predictor(
    teacher: nn.Module,
    pool: CandidatePool,
    table: pd.DataFrame,
    candidate_weights: Mapping[str, Any],
    options: Sequence[Option],
    splits: Mapping[str, Any],
    config: BlockSearchConfig,
    budgets: Sequence[Mapping[str, float]],
    device: torch.device,
) -> dict[str, Any]:
    """Draw, measure and fit: ``accuracy_predictor.json``.

    ``options`` carry NMSE scores; the uniform cuts of the pool (the ``pruned`` baseline's
    structure at each budget), when it has them, are measured first. ``kendall_tau`` ranks
    leave-one-out predictions against the measured top-1 (every sample held out from its own
    fit); ``nmse_kendall_tau`` ranks the summed NMSE the same way, for comparison.
    """
    start, settings = time.perf_counter(), config.predictor
    slot_names = slots(pool)
    first = [s for s in (uniform_structure(options, f) for f in pool.uniform_cuts) if s]
    drawn = draw_structures(options, slot_names, budgets, settings, first)
    reference = teacher_costs(pool)
    measured = []
    for budget, selection in drawn:
        spec = student_spec(pool, selection, reference, budgets[budget], config)
        measured.append(
            measure_structure(teacher, spec, table, candidate_weights, splits, settings, device)
        )
    x = np.stack([structure_features(s.chosen, slot_names) for _, s in drawn])
    y = np.array(measured)
    predictor = LinearPredictor.fit(x, y, slot_names, settings.ridge)
    loo = np.array([_held_out(x, y, i, slot_names, settings.ridge) for i in range(len(y))])
    nmse = np.array([s.score for _, s in drawn])
    return {
        "predictor": predictor.to_dict(),
        "samples": [
            {
                "budget": budget,
                "chosen": {slot: o.name for slot, o in selection.chosen.items()},
                "nmse": selection.score,
                "val_top1": top1,
                "predicted_val_top1": float(held_out),
            }
            for (budget, selection), top1, held_out in zip(drawn, y, loo, strict=True)
        ],
        "kendall_tau": _tau(loo, y),
        "nmse_kendall_tau": _tau(-nmse, y),
        "seconds": time.perf_counter() - start,
    }


def _held_out(x: np.ndarray, y: np.ndarray, i: int, slots: Sequence[str], ridge: float) -> float:
    keep = np.arange(len(y)) != i
    return float(LinearPredictor.fit(x[keep], y[keep], slots, ridge).predict(x[i : i + 1])[0])


def _tau(predicted: np.ndarray, measured: np.ndarray) -> float | None:
    tau = stats.kendalltau(predicted, measured).statistic
    return None if np.isnan(tau) else float(tau)
