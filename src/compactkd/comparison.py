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

from compactkd.costs import count_flops, count_params, interleaved_latency_ms
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
    "latency_ms_b1", "latency_ms_b1_iqr", "latency_ms_b32", "latency_ms_b32_iqr",
    "flops_reduction", "params_reduction", "speedup", "speedup_iqr", "speedup_b32",
    "speedup_b32_iqr",
)  # fmt: skip
LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class EvaluationConfig:
    """``conf/base/parameters_evaluation.yml``."""

    batch_size: int = 256
    device: str = "auto"
    latency_threads: int = 1
    latency_rounds: int = 10  # rounds over every architecture in turn
    latency_repeats: int = 5  # timed passes of each architecture per round
    onnx_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        counts = (self.batch_size, self.latency_threads, self.latency_rounds, self.latency_repeats)
        if min(counts) < 1 or self.onnx_tolerance <= 0:
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
    packages: Sequence[Mapping[str, Any]], splits: Mapping[str, Any], config: EvaluationConfig
) -> tuple[dict[str, Any], torch.Tensor]:
    """One model's figures (accuracy of every seed, costs; latency is :func:`latencies`'s)
    and its per-seed correctness on test."""
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
        "per_class_top1": per_class_accuracy(matrix),
        "confusion": matrix,
    }
    return figures, torch.stack(correct)


def latencies(
    packages: Mapping[str, Mapping[str, Any]], shape: Sequence[int], config: EvaluationConfig
) -> dict[str, dict[str, float]]:
    """Every model's latency (median and interquartile range over rounds, batch 1 and 32) and
    speed-up over ``packages["teacher"]``, measured interleaved: one round times every
    architecture in turn, and models that share one (``scratch`` and the student) share
    its figures. A speed-up is the median over rounds of the teacher's time over the
    model's in that round, so both sides of each ratio saw the same machine."""
    keys = {name: _architecture(package) for name, package in packages.items()}
    first_of = {key: name for name, key in reversed(keys.items())}  # one network per structure
    networks = {key: network_from_package(packages[name]) for key, name in first_of.items()}
    figures: dict[str, dict[str, float]] = {name: {} for name in packages}
    for batch in LATENCY_BATCHES:
        rounds = interleaved_latency_ms(
            networks, shape, batch, config.latency_threads, config.latency_rounds,
            config.latency_repeats,
        )  # fmt: skip
        speedup = "speedup" if batch == 1 else f"speedup_b{batch}"
        for name, key in keys.items():
            figures[name] |= _median_and_iqr(f"latency_ms_b{batch}", rounds[key])
            if name != "teacher":
                ratios = [t / m for t, m in zip(rounds[keys["teacher"]], rounds[key], strict=True)]
                figures[name] |= _median_and_iqr(speedup, ratios)
    return figures


def _median_and_iqr(name: str, values: Sequence[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {name: statistics.median(values), f"{name}_iqr": quartiles[2] - quartiles[0]}


def compare(
    teacher: Mapping[str, Any],
    teacher_package: Mapping[str, Any],
    finetuned: Sequence[Mapping[str, Any]],
    splits: Mapping[str, Any],
    spec: Mapping[str, Any],
    config: EvaluationConfig,
) -> dict[str, Any]:
    """The teacher's figures and every fine-tuned model's (``{"model", "packages"}`` each,
    the student first), with ratios against the teacher and the student's differences."""
    figures, correct = {"teacher": dict(teacher)}, {}
    first_packages = {"teacher": teacher_package}
    for run in finetuned:
        if run["packages"]:  # a baseline switched off has none
            name = run["model"]
            figures[name], correct[name] = measure(run["packages"], splits, config)
            figures[name] |= {
                "flops_reduction": teacher["flops"] / figures[name]["flops"],
                "params_reduction": teacher["params"] / figures[name]["params"],
            }
            first_packages[name] = run["packages"][0]
    for name, timing in latencies(first_packages, input_shape(splits), config).items():
        figures[name] |= timing
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
                # The 95% interval of the first seed's top-1 (test sampling), for error bars.
                "top1_low": f.get("top1_ci95", [f["top1"]] * 2)[0],
                "top1_high": f.get("top1_ci95", [f["top1"]] * 2)[1],
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
