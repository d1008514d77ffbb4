"""Every model of a run measured alike and set against the teacher and the student.

Test accuracy of every seed, FLOPs, parameters, size on disk and CPU latency; ratios
against the teacher; the student's top-1 difference over each baseline with its interval;
and the tables (``metrics.json``, ``comparison.csv``, ``sweep.csv``) built from them.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from compactkd.costs import count_flops, count_params, measure_latency_ms
from compactkd.data import input_shape, make_loader
from compactkd.evaluation import (
    accuracy_metrics,
    confusion_matrix,
    difference_interval,
    per_class_accuracy,
    predict,
)
from compactkd.model_files import network_from_package
from compactkd.training import resolve_device

# The figures of metrics.json and comparison.csv (evaluation.json holds everything).
HEADLINE = (
    "top1", "top1_ci95", "top5", "top1_mean", "top1_std", "flops", "params", "size_bytes",
    "latency_ms_b1", "latency_ms_b32", "flops_reduction", "params_reduction", "speedup",
    "speedup_b32",
)  # fmt: skip
LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class EvaluationConfig:
    """``conf/base/parameters_evaluation.yml``."""

    batch_size: int = 256
    device: str = "auto"
    latency_threads: int = 1
    latency_repeats: int = 20
    onnx_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if min(self.batch_size, self.latency_threads, self.latency_repeats) < 1:
            raise ValueError(f"evaluation sizes and counts must be positive, got {self}")


def _size_bytes(package: Mapping[str, Any]) -> int:
    """Bytes of the file the package is saved as."""
    buffer = io.BytesIO()
    torch.save(dict(package), buffer)
    return buffer.getbuffer().nbytes


def _architecture(package: Mapping[str, Any]) -> str:
    """What identifies a network's structure (not its weights): equal strings, equal speed.
    The weights' shapes count, as a narrowed network's spec does not give its widths."""
    layout = {k: v for k, v in package.items() if k != "state_dict"}
    layout["shapes"] = {k: list(v.shape) for k, v in package["state_dict"].items()}
    return json.dumps(layout, sort_keys=True, default=lambda x: x.tolist())


def measure(
    packages: Sequence[Mapping[str, Any]],
    splits: Mapping[str, Any],
    config: EvaluationConfig,
    latencies: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """One model's figures (accuracy of every seed) and its per-seed correctness on test.

    ``latencies`` caches latency by architecture: a model that shares one with a model
    measured before (``scratch`` and the student) reuses its figures.
    """
    device = resolve_device(config.device)
    loader = make_loader(splits, "test", config.batch_size, device)
    correct, top1s = [], []
    for package in packages:
        logits, labels = predict(network_from_package(package).to(device), loader)
        correct.append(logits.argmax(dim=1) == labels)
        top1s.append(100.0 * float(correct[-1].double().mean()))
        if len(correct) == 1:
            first = accuracy_metrics(logits, labels)
            matrix = confusion_matrix(logits.argmax(dim=1), labels, len(splits["classes"]))
    model, shape = network_from_package(packages[0]), input_shape(splits)
    latencies = {} if latencies is None else latencies
    key = _architecture(packages[0])
    if key not in latencies:
        latencies[key] = {
            f"latency_ms_b{batch}": measure_latency_ms(
                model, shape, batch, config.latency_threads, repeats=config.latency_repeats
            )
            for batch in LATENCY_BATCHES
        }
    figures = {
        "top1": first["top1"],
        "top1_ci95": first["top1_ci95"],
        "top5": first["top5"],
        "top1_mean": statistics.fmean(top1s),
        "top1_std": statistics.stdev(top1s) if len(top1s) > 1 else 0.0,
        "top1_seeds": top1s,
        "flops": count_flops(model, shape),
        "params": count_params(model),
        "size_bytes": _size_bytes(packages[0]),
        **latencies[key],
        "per_class_top1": per_class_accuracy(matrix),
        "confusion": matrix,
    }
    return figures, torch.stack(correct)


def compare(
    teacher: Mapping[str, Any],
    finetuned: Sequence[Mapping[str, Any]],
    splits: Mapping[str, Any],
    spec: Mapping[str, Any],
    config: EvaluationConfig,
) -> dict[str, Any]:
    """The teacher's figures and every fine-tuned model's (``{"model", "packages"}`` each,
    the student first), with ratios against the teacher and the student's differences."""
    figures, correct, latencies = {"teacher": dict(teacher)}, {}, {}
    for run in finetuned:
        if run["packages"]:  # a baseline switched off has none
            name = run["model"]
            figures[name], correct[name] = measure(run["packages"], splits, config, latencies)
            figures[name] |= {
                "flops_reduction": teacher["flops"] / figures[name]["flops"],
                "params_reduction": teacher["params"] / figures[name]["params"],
                "speedup": teacher["latency_ms_b1"] / figures[name]["latency_ms_b1"],
                "speedup_b32": teacher["latency_ms_b32"] / figures[name]["latency_ms_b32"],
            }
    figures["student"]["vs"] = {
        name: difference_interval(correct["student"], correct[name])
        for name in correct
        if name != "student"
    }
    figures["student"]["budgets"] = dict(spec["budgets"])
    return figures


def headline(evaluation: Mapping[str, Any], onnx_check: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics.json``: the headline figures of every model, the student's ONNX check and
    its differences over the baselines."""
    metrics = {name: {k: f[k] for k in HEADLINE if k in f} for name, f in evaluation.items()}
    metrics["student"] |= dict(onnx_check)
    metrics["student"]["vs"] = evaluation["student"]["vs"]
    return metrics


def comparison_table(evaluation: Mapping[str, Any]) -> pd.DataFrame:
    """``comparison.csv``: one row per model, the headline figures."""
    rows = [
        {"model": name} | {k: f[k] for k in HEADLINE if k in f} for name, f in evaluation.items()
    ]
    return pd.DataFrame(rows)


def sweep_rows(evaluation: Mapping[str, Any], spec: Mapping[str, Any]) -> pd.DataFrame:
    """One budget's rows of ``sweep.csv``: every model's accuracy and cost ratios."""
    ratios = {f"budget_{k}": v / spec["teacher"][k] for k, v in spec["budgets"].items()}
    teacher = evaluation["teacher"]
    return pd.DataFrame(
        [
            {
                **ratios,
                "model": name,
                "top1": f["top1"],
                "top1_mean": f.get("top1_mean", f["top1"]),
                "top1_std": f.get("top1_std", 0.0),
                "flops": f["flops"],
                "params": f["params"],
                "flops_ratio": f["flops"] / teacher["flops"],
                "params_ratio": f["params"] / teacher["params"],
            }
            for name, f in evaluation.items()
        ]
    )


def sweep_table(per_budget: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """``sweep.csv``: every budget's rows, numbered from 1 (the student's budget)."""
    numbered = [rows.assign(budget=k) for k, rows in enumerate(per_budget, start=1)]
    table = pd.concat(numbered, ignore_index=True)
    return table[["budget", *[c for c in table.columns if c != "budget"]]]
