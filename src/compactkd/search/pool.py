"""The candidate pool of a teacher: partition, kept channels, candidates and their costs.

Built before any training, so that a misnamed setting or an infeasible budget fails
in seconds; trained by :mod:`compactkd.search.blockwise`; turned into the options of the
exact selection (:mod:`compactkd.search.select`) and into the candidate table.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd.blocks.assembly import BlockChoice, Blueprint
from compactkd.blocks.candidates import (
    Candidate,
    block_spaces,
    build_candidates,
    interface_keeps,
    make_candidate_module,
)
from compactkd.blocks.partition import Partition, narrow_head, narrow_stem, partition_model
from compactkd.costs import count_flops, count_params, measure_latency_ms
from compactkd.data import BatchLoader
from compactkd.search.blockwise import channel_importance
from compactkd.search.select import Option, Selection

RESOURCES = ("flops", "params", "latency")


@dataclass
class CandidatePool:
    partition: Partition
    keeps: list[dict[float, torch.Tensor]]
    candidates: list[Candidate]
    costs: list[dict[str, float]]
    stems: dict[float, dict[str, float]]  # costs of the stem at each kept fraction of x_0
    heads: dict[float, dict[str, float]]  # costs of the head at each kept fraction of x_N


def module_costs(module: nn.Module, input_shape: Sequence[int], latency: bool) -> dict[str, float]:
    """FLOPs and parameters of a part (and its batch-1 latency when asked)."""
    costs = {
        "flops": float(count_flops(module, input_shape)),
        "params": float(count_params(module)),
    }
    if latency:
        costs["latency"] = measure_latency_ms(module, input_shape)
    return costs


def build_pool(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    importance_loader: BatchLoader,
    settings: Mapping[str, Any],
) -> CandidatePool:
    """Partition the teacher, rank its interface channels and make every candidate.

    ``settings``: ``granularity``, ``interface_fractions``, ``space``, ``blocks``
    (per-block overrides) and ``latency`` (measure it, or not).
    """
    teacher.eval()
    partition = partition_model(teacher, input_shape, settings["granularity"])
    spaces = block_spaces(partition.block_names, settings["space"], settings.get("blocks"))
    keeps = interface_keeps(
        channel_importance(partition, importance_loader), settings["interface_fractions"]
    )
    candidates = build_candidates(partition, spaces, keeps)
    latency = bool(settings.get("latency"))
    costs = [module_costs(c.module, _input_shape(partition, c, keeps), latency) for c in candidates]
    last = partition.interfaces[-1]
    stems = {
        f: module_costs(narrow_stem(partition.stem, keep), input_shape, latency)
        for f, keep in keeps[0].items()
    }
    heads = {
        f: module_costs(narrow_head(partition.head, keep), (len(keep), *last[1:]), latency)
        for f, keep in keeps[-1].items()
    }
    return CandidatePool(partition, keeps, candidates, costs, stems, heads)


def _input_shape(partition: Partition, candidate: Candidate, keeps: list) -> tuple[int, ...]:
    index = partition.block_names.index(candidate.block)
    channels = len(keeps[index][candidate.in_fraction])
    return (channels, *partition.interfaces[index][1:])


def _matches_pin(candidate: Candidate, pin: str) -> bool:
    return pin == candidate.family or candidate.name == f"{candidate.block}:{pin}"


def pinned_positions(pool: CandidatePool, pins: Mapping[str, str] | None) -> set[int]:
    """Positions of the candidates that the pins name (protected from Pareto pruning)."""
    pins = dict(pins or {})
    return {
        position
        for position, candidate in enumerate(pool.candidates)
        if candidate.block in pins and _matches_pin(candidate, pins[candidate.block])
    }


def selection_options(
    pool: CandidatePool,
    scores: Mapping[int, float],
    pins: Mapping[str, str] | None = None,
) -> list[Option]:
    """Stem, head and the scored candidates (``scores`` by position) as options of the choice.

    A pinned block keeps only the candidates of that family (``teacher``, ``pruned`` ...)
    or that exact candidate (``pruned_r0.5@1-0.5``).
    """
    pins = dict(pins or {})
    unknown = set(pins) - set(pool.partition.block_names)
    if unknown:
        raise ValueError(f"cannot pin unknown block(s) {sorted(unknown)}; "
                         f"the blocks are {pool.partition.block_names}")  # fmt: skip
    options = [Option("stem", f"stem@{f:g}", None, f, 0.0, c) for f, c in pool.stems.items()]
    options += [Option("head", f"head@{f:g}", f, None, 0.0, c) for f, c in pool.heads.items()]
    for position, score in scores.items():
        candidate = pool.candidates[position]
        pin = pins.get(candidate.block)
        if pin is None or _matches_pin(candidate, pin):
            options.append(
                Option(
                    candidate.block,
                    candidate.name,
                    candidate.in_fraction,
                    candidate.out_fraction,
                    score,
                    pool.costs[position],
                )
            )
    for block, pin in pins.items():
        if not any(o.slot == block for o in options):
            names = sorted({c.name for c in pool.candidates if c.block == block})
            raise ValueError(f"pin {block}: {pin!r} matches no candidate; candidates are {names}")
    return options


def slots(pool: CandidatePool) -> list[str]:
    return ["stem", *pool.partition.block_names, "head"]


def teacher_costs(pool: CandidatePool) -> dict[str, float]:
    """The teacher's own cost: full-width stem and head plus the ``teacher`` candidates at 1-1."""
    totals = dict(pool.stems[1.0])
    for key, value in pool.heads[1.0].items():
        totals[key] += value
    for block in pool.partition.block_names:
        index = _teacher_candidate(pool, block)
        for key, value in pool.costs[index].items():
            totals[key] += value
    return totals


def _teacher_candidate(pool: CandidatePool, block: str) -> int:
    for position, c in enumerate(pool.candidates):
        if c.block == block and c.family == "teacher" and c.in_fraction == c.out_fraction == 1.0:
            return position
    raise ValueError(f"{block} has no 'teacher' candidate: keep the teacher family in the space")


def candidate_table(
    pool: CandidatePool,
    nmse: Mapping[int, float],
    active: Sequence[int],
    plugin_drop: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """One row per candidate: block, family, its settings, widths, costs and scores."""
    rows = []
    for position, candidate in enumerate(pool.candidates):
        row = {
            "candidate": candidate.name,
            "block": candidate.block,
            "family": candidate.family,
            "params_json": json.dumps(candidate.params),  # exact types, for rebuilding
            **{f"param_{k}": v for k, v in candidate.params.items()},
            "in_fraction": candidate.in_fraction,
            "out_fraction": candidate.out_fraction,
            **pool.costs[position],
            "nmse": nmse.get(position),
            "active": position in set(active),
        }
        if plugin_drop is not None:
            row["plugin_drop"] = plugin_drop.get(position)
        rows.append(row)
    return pd.DataFrame(rows)


def rebuild_candidate(
    partition: Partition,
    keeps: Sequence[Mapping[float, torch.Tensor]],
    row: Mapping[str, Any],
) -> nn.Module:
    """The module of a row of the candidate table (weights to be loaded by the caller)."""
    index = partition.block_names.index(row["block"])
    return make_candidate_module(
        partition,
        index,
        row["family"],
        json.loads(row["params_json"]),
        keeps[index][row["in_fraction"]],
        keeps[index + 1][row["out_fraction"]],
    )


def assemble_student(pool: CandidatePool, selection: Selection) -> nn.Sequential:
    """Narrowed stem, the chosen candidates with their block-wise weights, narrowed head."""
    by_name = {c.name: c for c in pool.candidates}
    chosen = selection.chosen
    stem = narrow_stem(pool.partition.stem, pool.keeps[0][chosen["stem"].out_fraction])
    head = narrow_head(pool.partition.head, pool.keeps[-1][chosen["head"].in_fraction])
    blocks = [by_name[chosen[block].name].module for block in pool.partition.block_names]
    # A copy: fine-tuning it must not change the pool (a sweep assembles several students).
    student = copy.deepcopy(nn.Sequential(stem, *blocks, head))
    return student.requires_grad_(True).eval()


def student_spec(
    selection: Selection, reference: Mapping[str, float], budgets: Mapping[str, float]
) -> dict[str, Any]:
    """A person-readable description of the chosen student and its predicted cost."""
    return {
        "blocks": {
            slot: {
                "candidate": option.name,
                "in_fraction": option.in_fraction,
                "out_fraction": option.out_fraction,
                "score": option.score,
                **dict(option.costs),
            }
            for slot, option in selection.chosen.items()
        },
        "predicted": dict(selection.totals),
        "teacher": dict(reference),
        "ratios": {
            k: selection.totals[k] / reference[k] for k in selection.totals if k in reference
        },
        "budgets": dict(budgets),
        "score": selection.score,
    }


def student_blueprint(
    teacher_spec: Mapping[str, Any],
    input_shape: tuple[int, int, int],
    granularity: str,
    keeps: Sequence[Mapping[float, torch.Tensor]],
    spec: Mapping[str, Any],
    table: pd.DataFrame,
) -> Blueprint:
    """The blueprint of the student a spec describes, its blocks read from the candidate table."""
    rows = table.set_index("candidate")
    choices = [
        BlockChoice(
            block,
            rows.loc[choice["candidate"], "family"],
            json.loads(rows.loc[choice["candidate"], "params_json"]),
            float(choice["in_fraction"]),
            float(choice["out_fraction"]),
        )
        for block, choice in spec["blocks"].items()
        if block not in ("stem", "head")
    ]
    keeps = [dict(k) for k in keeps]
    return Blueprint(dict(teacher_spec), input_shape, granularity, keeps, choices)
