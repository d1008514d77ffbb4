"""Nodes of the ``distillation`` stage: assemble the student, build the baselines, fine-tune all.

Every model is fine-tuned by the same trainer on the same splits for the same epochs:
``student`` (the chosen blocks with their block-wise weights, KD), ``scratch`` (the
student's architecture from random weights, CE), ``uniform`` (the teacher uniformly
thinned to the budgets, KD) and ``pruned`` (the trained teacher cut to the budgets, KD).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd import distributed
from compactkd.baselines import pruned_blueprint, uniform_width_spec
from compactkd.blocks.assembly import Blueprint, network_package
from compactkd.blocks.partition import partition_model
from compactkd.data import make_loader
from compactkd.distillation import KDConfig, KDObjective, recalibrate_batchnorm, reinitialise
from compactkd.evaluation import evaluate
from compactkd.models import build_model
from compactkd.search.blockwise import channel_importance, importance_loader
from compactkd.search.pool import student_blueprint
from compactkd.training import (
    HISTORY_COLUMNS,
    TrainConfig,
    config_from_params,
    resolve_device,
    train,
)

logger = logging.getLogger(__name__)

MODELS = ("student", "scratch", "uniform", "pruned")
BASELINES = MODELS[1:]
SETTINGS = {
    "kd", "recalibrate_bn", "recalibration_batches", "seeds", "baselines", "training",
    "inherited_lr", "resume_dir",
}  # fmt: skip


@dataclasses.dataclass
class _Recipe:
    """How one model starts (per seed) and what it is trained on."""

    initial: Callable[[int], nn.Module]  # seed -> the model before fine-tuning
    distilled: bool  # KD from the teacher, or CE alone
    inherited: bool = False  # starts from trained weights: recalibrated, fine-tuned gently


def check_settings(params: dict[str, Any]) -> tuple[TrainConfig, KDConfig]:
    unknown = set(params) - SETTINGS
    if unknown:
        raise ValueError(f"unknown distillation setting(s) {sorted(unknown)}; "
                         f"valid: {sorted(SETTINGS)}")  # fmt: skip
    unknown = set(params["baselines"]) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; valid: {list(BASELINES)}")
    if int(params["seeds"]) < 1 or params["inherited_lr"] <= 0:
        raise ValueError("distillation.seeds must be at least 1 and inherited_lr positive")
    if params["recalibration_batches"] < 1:
        raise ValueError("distillation.recalibration_batches must be at least 1")
    kd = KDConfig(**params["kd"])
    if kd.beta > 0 and distributed.launched():
        # Hints run the student's parts one by one, around DistributedDataParallel's forward.
        raise ValueError("distillation.kd.beta > 0 (feature hints) needs a single process; "
                         "set beta: 0 to fine-tune under torchrun")  # fmt: skip
    return config_from_params(TrainConfig, params["training"]), kd


def _student(
    teacher: nn.Module, blueprint: Blueprint, weights: dict[str, Any], spec: dict[str, Any]
) -> nn.Module:
    """The assembled student: teacher stem and head, chosen blocks with block-wise weights."""
    student = blueprint.build(teacher)
    for position, block in enumerate(b.block for b in blueprint.blocks):
        student[1 + position].load_state_dict(weights[spec["blocks"][block]["candidate"]])
    return student


def _recipes(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    blueprint: Blueprint,
    candidate_weights: dict[str, Any],
    search_params: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, _Recipe]:
    """The models to fine-tune; baselines built here fail before any training."""
    student = _student(teacher, blueprint, candidate_weights["weights"], spec)
    # Copies: each seed's fine-tune starts from the same weights.
    recipes = {"student": _Recipe(lambda seed: copy.deepcopy(student), True, inherited=True)}
    wanted = {name for name in BASELINES if params["baselines"].get(name, True)}
    if "scratch" in wanted:
        recipes["scratch"] = _Recipe(lambda seed: reinitialise(blueprint.build(), seed), False)
    input_shape, budgets = blueprint.input_shape, spec["budgets"]
    if "uniform" in wanted:
        uniform = uniform_width_spec(teacher.spec, input_shape, budgets)
        logger.info("uniform baseline: width multiplier %.4f", uniform["width_mult"])
        recipes["uniform"] = _Recipe(lambda seed: _seeded_model(uniform, seed), distilled=True)
    if "pruned" in wanted:
        search = search_params["training"]
        loader = importance_loader(
            splits, search_params["importance_samples"], search["seed"], search["batch_size"]
        )
        partition = partition_model(teacher.eval(), input_shape, blueprint.granularity)
        importance = channel_importance(partition, loader)
        pruned = pruned_blueprint(teacher, input_shape, blueprint.granularity, importance, budgets)
        logger.info("pruned baseline: kept fraction %.4f", pruned.blocks[0].in_fraction)
        network = pruned.build(teacher)
        recipes["pruned"] = _Recipe(lambda seed: copy.deepcopy(network), True, inherited=True)
    return recipes


def _seeded_model(spec: dict[str, Any], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec)


def _run_tag(spec: dict[str, Any]) -> str:
    """Tells checkpoints of different budgets apart (each run also checks its fingerprint)."""
    chosen = {slot: c["candidate"] for slot, c in spec["blocks"].items()}
    return hashlib.sha256(json.dumps([spec["budgets"], chosen]).encode()).hexdigest()[:10]


def finetune_models(
    teacher: nn.Module,
    splits: dict[str, Any],
    spec: dict[str, Any],
    table: pd.DataFrame,
    candidate_weights: dict[str, Any],
    search_params: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Fine-tune the student and each baseline once per seed.

    Returns every fine-tuned model (``{name: [package per seed]}``), the first seed's
    student alone (the one exported and shipped), the histories of all runs, and a
    summary: the baselines' settings, BatchNorm recalibration's effect, seconds per model.
    """
    config, kd = check_settings(params)
    input_shape = tuple(splits["train"]["images"].shape[1:])
    blueprint = student_blueprint(
        teacher.spec, input_shape, search_params["granularity"],
        candidate_weights["keeps"], spec, table,
    )  # fmt: skip
    recipes = _recipes(teacher, splits, spec, blueprint, candidate_weights, search_params, params)
    summary: dict[str, Any] = {"models": list(recipes), "seeds": int(params["seeds"])}
    summary |= distributed.run_facts()
    seconds = summary["seconds"] = dict.fromkeys(recipes, 0.0)
    finetuned: dict[str, list[dict[str, Any]]] = {name: [] for name in recipes}
    histories = []
    for seed in range(int(params["seeds"])):
        seed_config = dataclasses.replace(config, seed=config.seed + seed)
        for name, recipe in recipes.items():
            started = time.perf_counter()
            checkpoint = Path(params["resume_dir"]) / f"{_run_tag(spec)}_{name}_{seed}.ckpt"
            model, history, recalibration = _finetune(
                name, recipe, seed_config, teacher, kd, splits, params, checkpoint
            )
            if recalibration:
                summary.setdefault("recalibration", {}).setdefault(name, recalibration)
            finetuned[name].append(network_package(model))
            histories.append(history.assign(model=name, seed=seed_config.seed))
            seconds[name] += time.perf_counter() - started
    summary["uniform_width_mult"] = _uniform_width(finetuned)
    summary["pruned_fraction"] = _pruned_fraction(finetuned)
    history = pd.concat(histories, ignore_index=True)[["model", "seed", *HISTORY_COLUMNS]]
    return finetuned, finetuned["student"][0], history, summary


def _finetune(
    name: str,
    recipe: _Recipe,
    config: TrainConfig,
    teacher: nn.Module,
    kd: KDConfig,
    splits: dict[str, Any],
    params: dict[str, Any],
    checkpoint: Path,
) -> tuple[nn.Module, pd.DataFrame, dict[str, float] | None]:
    """One model, one seed: its initial weights, recalibration where inherited, training."""
    model = recipe.initial(config.seed)
    recalibration = None
    if recipe.inherited:
        if params["recalibrate_bn"]:
            recalibration = _recalibrate(model, splits, config, params["recalibration_batches"])
        config = dataclasses.replace(config, lr=params["inherited_lr"])
    kd_settings = dataclasses.asdict(kd) if recipe.distilled else None
    model, history = train(
        model,
        splits,
        config,
        objective=KDObjective(teacher, kd) if recipe.distilled else None,
        checkpoint_path=checkpoint,
        fingerprint_extra={"model": name, "kd": kd_settings},
        name=f"{name} (seed {config.seed})",
    )
    return model, history, recalibration


def _recalibrate(
    model: nn.Module, splits: dict[str, Any], config: TrainConfig, batches: int
) -> dict[str, float]:
    """Validation accuracy before and after recalibrating BatchNorm statistics."""
    device = resolve_device(config.device)
    val = make_loader(splits, "val", 256, device)
    train_loader = make_loader(splits, "train", config.batch_size, device, augment=True)
    model.to(device)
    before = evaluate(model, val)["top1"]
    generator = torch.Generator().manual_seed(config.seed)
    after = evaluate(recalibrate_batchnorm(model, train_loader, batches, generator), val)["top1"]
    logger.info("BatchNorm recalibrated: validation top-1 %.2f%% -> %.2f%%", before, after)
    return {"val_top1_before": before, "val_top1_after": after}


def _uniform_width(finetuned: dict[str, list[dict[str, Any]]]) -> float | None:
    packages = finetuned.get("uniform")
    return packages[0]["spec"]["width_mult"] if packages else None


def _pruned_fraction(finetuned: dict[str, list[dict[str, Any]]]) -> float | None:
    packages = finetuned.get("pruned")
    return packages[0]["blueprint"]["blocks"][0]["in_fraction"] if packages else None
