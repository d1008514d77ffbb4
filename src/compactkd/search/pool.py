"""The candidate pool of a teacher: partition, kept channels, candidates and their costs.

Built before any training, so that a misnamed setting or an infeasible budget fails
in seconds; trained by :mod:`compactkd.search.blockwise`; turned into the options of the
exact selection (:mod:`compactkd.search.select`) and into the candidate table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd.blocks.assembly import BlockChoice, Blueprint
from compactkd.blocks.candidates import (
    Candidate,
    Keeps,
    block_spaces,
    build_candidates,
    interface_keeps,
    make_candidate_module,
)
from compactkd.blocks.partition import (
    Partition,
    head_inner_channels,
    narrow_head,
    narrow_stem,
    partition_model,
)
from compactkd.costs import module_costs
from compactkd.data import input_shape, make_loader
from compactkd.evaluation import evaluate
from compactkd.search.blockwise import (
    InterfaceLosses,
    block_index,
    channel_importance,
    importance_loader,
    interface_losses,
    plugin_drops,
    train_candidates,
)
from compactkd.search.config import BlockSearchConfig
from compactkd.search.select import Option, Selection, resolve_budgets, select
from compactkd.training import resolve_device


@dataclass
class CandidatePool:
    partition: Partition
    keeps: list[dict[float, torch.Tensor]]
    candidates: list[Candidate]
    costs: list[dict[str, float]]
    stems: dict[float, dict[str, float]]  # costs of the stem at each kept fraction of x_0
    # costs of the head at each kept fraction of x_N and each kept fraction of its inner width
    heads: dict[tuple[float, float], dict[str, float]]
    uniform_cuts: tuple[float, ...] = ()  # the pruned baseline's fraction per budget, if added


def build_pool(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    importance: Sequence[torch.Tensor],
    config: BlockSearchConfig,
    uniform_cuts: Sequence[float] = (),
) -> CandidatePool:
    """Partition the teacher, keep its interface channels by ``importance``, make every candidate.

    ``uniform_cuts``: kept fractions at which the whole teacher may also be cut alike (the
    ``pruned`` baseline's structure): each adds that interface fraction, per block the
    ``pruned`` candidate at that ratio between interfaces of that fraction, and that head width
    where the head has one.
    Costs are counted on the real modules (and latency measured where ``config.latency``).
    """
    teacher.eval()
    partition = partition_model(teacher, input_shape, config.granularity)
    spaces = block_spaces(partition.block_names, config.space, config.blocks)
    keeps = interface_keeps(importance, [*config.interface_fractions, *uniform_cuts])
    wanted = set(config.interface_fractions)  # the order of `keeps`: narrowest first
    configured = [{f: k for f, k in keep.items() if f in wanted} for keep in keeps]
    candidates = build_candidates(partition, spaces, configured)
    names = {c.name for c in candidates}
    for f in uniform_cuts:
        for index, block in enumerate(partition.block_names):
            cut = make_candidate_module(
                partition, index, "pruned", {"ratio": f}, keeps[index][f], keeps[index + 1][f]
            )
            candidate = Candidate(block, "pruned", {"ratio": f}, f, f, cut)
            if candidate.name not in names:  # already in the space
                candidates.append(candidate)
                names.add(candidate.name)
    latency = config.latency
    costs = [module_costs(c.module, _input_shape(partition, c, keeps), latency) for c in candidates]
    last = partition.interfaces[-1]
    stems = {
        f: module_costs(narrow_stem(partition.stem, keep), input_shape, latency)
        for f, keep in keeps[0].items()
    }
    heads = {
        (f, w): module_costs(narrow_head(partition.head, keep, w), (len(keep), *last[1:]), latency)
        for f, keep in keeps[-1].items()
        for w in head_widths(partition, config, uniform_cuts)
    }
    return CandidatePool(partition, keeps, candidates, costs, stems, heads, tuple(uniform_cuts))


def head_widths(
    partition: Partition, config: BlockSearchConfig, uniform_cuts: Sequence[float] = ()
) -> list[float]:
    """The head's inner widths the search may choose: the configured ones, plus the uniform
    cuts where the head has an inner width (a head without one has only 1.0)."""
    if head_inner_channels(partition.head) is None:
        if set(config.head_widths) != {1.0}:
            raise ValueError(f"block_search.head_widths {list(config.head_widths)}: the "
                             f"{partition.family} head has no inner width; use [1.0]")  # fmt: skip
        return [1.0]
    return sorted({*config.head_widths, *uniform_cuts}, reverse=True)


def head_name(fraction: float, width: float) -> str:
    """The head option's name: ``head@0.5``, or ``head@0.5_w0.75`` with a cut inner width."""
    return f"head@{fraction:g}" if width == 1 else f"head@{fraction:g}_w{width:g}"


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
    ends: Mapping[str, Mapping[float, float]] | None = None,
) -> list[Option]:
    """Stem, head and the scored candidates (``scores`` by position) as options of the choice.

    ``ends``: the stem's scores by kept fraction, the head's by option name
    (:func:`end_scores`); 0 if none.

    A pinned block keeps only the candidates of that family (``teacher``, ``pruned`` ...)
    or that exact candidate (``pruned_r0.5@1-0.5``).
    """
    pins = dict(pins or {})
    unknown = set(pins) - set(pool.partition.block_names)
    if unknown:
        raise ValueError(f"cannot pin unknown block(s) {sorted(unknown)}; "
                         f"the blocks are {pool.partition.block_names}")  # fmt: skip
    stem_scores, head_scores = (ends or {}).get("stem", {}), (ends or {}).get("head", {})
    options = [
        Option("stem", f"stem@{f:g}", None, f, stem_scores.get(f, 0.0), c)
        for f, c in pool.stems.items()
    ]
    options += [
        Option("head", name, f, None, head_scores.get(name, 0.0), c)
        for (f, w), c in pool.heads.items()
        for name in [head_name(f, w)]
    ]
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
    for key, value in pool.heads[1.0, 1.0].items():
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
    losses: InterfaceLosses,
    plugin_drop: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """One row per candidate: block, family, its settings, widths, costs and scores.

    ``nmse_kept`` is the validation NMSE on the channels a candidate writes; ``nmse`` the
    same against the teacher's whole output interface (channels it drops count as error).
    """
    rows, index_of, kept_active = [], block_index(pool.partition), set(active)
    for position, candidate in enumerate(pool.candidates):
        kept = nmse.get(position)
        output = index_of[candidate.block] + 1
        row = {
            "candidate": candidate.name,
            "block": candidate.block,
            "family": candidate.family,
            "params_json": json.dumps(candidate.params),  # exact types, for rebuilding
            **{f"param_{k}": v for k, v in candidate.params.items()},
            "in_fraction": candidate.in_fraction,
            "out_fraction": candidate.out_fraction,
            **pool.costs[position],
            "nmse_kept": kept,
            "nmse": None
            if kept is None
            else losses.full_nmse(kept, output, candidate.out_fraction),
            "active": position in kept_active,
        }
        if plugin_drop is not None:
            row["plugin_drop"] = plugin_drop.get(position)
        rows.append(row)
    return pd.DataFrame(rows)


def student_spec(
    pool: CandidatePool,
    selection: Selection,
    reference: Mapping[str, float],
    budgets: Mapping[str, float],
    config: BlockSearchConfig,
) -> dict[str, Any]:
    """A person-readable description of the chosen student and its predicted cost."""
    return {
        "granularity": config.granularity,
        "interfaces": [list(shape) for shape in pool.partition.interfaces],
        "score_kind": config.score,
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
        "head_width": next(
            w for (f, w) in pool.heads if head_name(f, w) == selection.chosen["head"].name
        ),
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
    keeps: Keeps,
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
    return Blueprint(
        dict(teacher_spec),
        input_shape,
        spec["granularity"],
        keeps,
        choices,
        float(spec.get("head_width", 1.0)),  # specs from before head widths
    )


def assemble_student(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    spec: Mapping[str, Any],
    table: pd.DataFrame,
    candidate_weights: Mapping[str, Any],
) -> nn.Sequential:
    """The student a spec describes: the teacher's narrowed stem and head, the chosen
    candidates with their block-wise trained weights (``candidate_weights``)."""
    keeps, weights = candidate_weights["keeps"], candidate_weights["weights"]
    blueprint = student_blueprint(teacher.spec, input_shape, keeps, spec, table)
    student = blueprint.build(teacher)
    for position, choice in enumerate(blueprint.blocks):
        student[1 + position].load_state_dict(weights[spec["blocks"][choice.block]["candidate"]])
    return student


def interface_importance(
    teacher: nn.Module, splits: Mapping[str, Any], config: BlockSearchConfig
) -> list[torch.Tensor]:
    """Mean absolute activation of every channel at every interface, on a seeded sample
    of ``config.importance_samples`` training images."""
    training = config.training
    loader = importance_loader(
        splits, config.importance_samples, training.seed, training.batch_size
    )
    shape = input_shape(splits)
    partition = partition_model(teacher.eval(), shape, config.granularity)
    return channel_importance(partition, loader)


def check_assembled(
    teacher: nn.Module,
    spec: Mapping[str, Any],
    table: pd.DataFrame,
    candidate_weights: Mapping[str, Any],
    splits: Mapping[str, Any],
) -> dict[str, Any]:
    """The assembled student's validation top-1 before any fine-tuning; fails when its
    measured FLOPs and parameters are not what the selection added up."""
    shape = input_shape(splits)
    student = assemble_student(teacher, shape, spec, table, candidate_weights)
    measured = module_costs(student, shape)
    predicted = {k: spec["predicted"][k] for k in measured}
    if measured != predicted:
        raise ValueError(f"the assembled student costs {measured}, not the {predicted} "
                         "its parts add up to: a part's cost is miscounted")  # fmt: skip
    top1 = evaluate(student, make_loader(splits, "val", 256))["top1"]
    return {"spec": dict(spec), "assembled_val_top1": top1}


def measure_interface_losses(
    pool: CandidatePool, splits: Mapping[str, Any], device: torch.device
) -> InterfaceLosses:
    """:func:`~compactkd.search.blockwise.interface_losses` of the teacher on validation."""
    parts = nn.ModuleList([pool.partition.stem, pool.partition.blocks, pool.partition.head])
    parts.to(device).eval()
    try:
        loader = make_loader(splits, "val", 256, device)
        widths = sorted({w for _, w in pool.heads}, reverse=True)
        return interface_losses(pool.partition, pool.keeps, loader, widths)
    finally:
        parts.cpu()


def train_pool(
    pool: CandidatePool,
    splits: Mapping[str, Any],
    config: BlockSearchConfig,
    checkpoint_path: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, dict[float, float]]]:
    """Block-wise distillation of every candidate: the candidate table, the candidates'
    weights (with the interface keeps), the training history and ``interface_scores``.
    Resumes from ``checkpoint_path`` (written after every epoch) when given."""
    history, nmse, active = train_candidates(
        pool.partition,
        pool.candidates,
        pool.keeps,
        splits,
        dict(enumerate(pool.costs)),
        config.training,
        checkpoint_path,
        protected=pinned_positions(pool, config.pin),
    )
    device = resolve_device(config.training.device)
    drops = None
    if config.wants_plugin_drop:
        drops = plugin_drops(pool.partition, pool.candidates, pool.keeps, active, splits, device)
    losses = measure_interface_losses(pool, splits, device)
    weights = {
        "keeps": [dict(keeps) for keeps in pool.keeps],
        "weights": {c.name: c.module.state_dict() for c in pool.candidates},
    }
    table = candidate_table(pool, nmse, active, losses, drops)
    return table, weights, history, interface_scores(losses)


def scored_options(
    pool: CandidatePool,
    table: pd.DataFrame,
    ends: Mapping[str, Mapping[Any, float]],
    config: BlockSearchConfig,
) -> list[Option]:
    """Every option of the selection, scored as ``config.score`` asks (the NMSE for
    ``predicted_accuracy``, whose predictor rescores them)."""
    return selection_options(
        pool, candidate_scores(table, config), config.pin, end_scores(ends, config)
    )


def candidate_scores(table: pd.DataFrame, config: BlockSearchConfig) -> dict[int, float]:
    """What the selection minimises for each active candidate (by position in the table)."""
    active = table[table["active"]]
    if config.score == "plugin_drop":
        return dict(active["plugin_drop"].astype(float))
    if config.score == "kept_nmse":
        return dict(active["nmse_kept"].astype(float))
    weights = config.block_weights if config.score == "weighted_nmse" else {}
    return {i: row.nmse * weights.get(row.block, 1.0) for i, row in active.iterrows()}


def end_scores(
    losses: Mapping[str, Mapping[Any, float]], config: BlockSearchConfig
) -> dict[str, dict[float, float]]:
    """Scores of the stem options by kept fraction and of the head options by name, from
    ``interface_scores``.

    With the full-interface NMSE the stem is charged the spread of the channels it drops,
    the head the NMSE of the teacher's logits read from the kept channels; the other
    scores leave both at 0 (what narrowing the ends loses is then not scored).
    """
    charged = config.score in ("nmse", "weighted_nmse", "predicted_accuracy")
    return {
        "stem": {float(f): float(s) if charged else 0.0 for f, s in losses["stem"].items()},
        "head": {name: float(s) if charged else 0.0 for name, s in losses["head"].items()},
    }


def interface_scores(losses: InterfaceLosses) -> dict[str, dict[Any, float]]:
    """``interface_scores.json``: the stem's scores by kept fraction, the head's by name."""
    heads = {head_name(f, w): score for (f, w), score in losses.head_nmse.items()}
    return {"stem": dict(losses.dropped[0]), "head": heads}


def feasible_budgets(pool: CandidatePool, config: BlockSearchConfig) -> list[dict[str, float]]:
    """Every budget of ``config`` in absolute terms; fails, naming the cheapest reachable
    cost, when the space cannot meet one (the structure alone decides: all scores zero)."""
    unknown = set(config.block_weights) - set(pool.partition.block_names)
    if unknown:
        raise ValueError(f"block_weights name unknown block(s) {sorted(unknown)}; "
                         f"the blocks are {pool.partition.block_names}")  # fmt: skip
    reference = teacher_costs(pool)
    budgets = [resolve_budgets(b, reference) for b in config.budget_list]
    unscored = selection_options(pool, dict.fromkeys(range(len(pool.candidates)), 0.0), config.pin)
    for budget in budgets:
        select(unscored, slots(pool), budget, reference)
    return budgets


def search_metrics(
    pool: CandidatePool,
    table: pd.DataFrame,
    history: pd.DataFrame,
    predictor: Mapping[str, Any],
    teacher_metrics: Mapping[str, Any],
    checks: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The figures of ``block_search_metrics.json``; ``checks`` holds each budget's
    assembled student (its spec and validation top-1 before fine-tuning), first budget first.

    ``seconds`` is the block-wise training's (its epochs, across resumed runs too) plus the
    accuracy predictor's, set against the teacher's training epochs; a teacher given as a
    checkpoint has no ratio.
    """
    predictor_seconds = float(predictor.get("seconds", 0.0))
    seconds = float(history["seconds"].sum()) + predictor_seconds
    teacher_seconds = teacher_metrics.get("train_seconds") or None
    choices = [
        {
            "budgets": {
                k: v / check["spec"]["teacher"][k] for k, v in check["spec"]["budgets"].items()
            },
            "predicted_flops_ratio": check["spec"]["ratios"]["flops"],
            "predicted_params_ratio": check["spec"]["ratios"]["params"],
            "assembled_val_top1": check["assembled_val_top1"],
            "chosen": {slot: c["candidate"] for slot, c in check["spec"]["blocks"].items()},
        }
        for check in checks
    ]
    return {
        "score": predictor["score"],
        "predictor_samples": len(predictor.get("samples", [])),
        "predictor_kendall_tau": predictor.get("kendall_tau"),
        "nmse_kendall_tau": predictor.get("nmse_kendall_tau"),
        "predictor_seconds": predictor_seconds,
        "blocks": len(pool.partition.block_names),
        "candidates": len(pool.candidates),
        "active_candidates": int(table["active"].sum()),
        "block_epochs": len(history),
        "seconds": seconds,
        "teacher_train_seconds": teacher_seconds,
        "overhead_vs_teacher": seconds / teacher_seconds if teacher_seconds else None,
        **choices[0],
        "teacher_val_top1": teacher_metrics.get("val_top1"),
        "sweep": choices[1:],
    }
