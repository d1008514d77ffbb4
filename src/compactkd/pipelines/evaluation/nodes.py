"""Nodes of the ``evaluation`` stage: measure every model, export the student, gather tables."""

from __future__ import annotations

import io
import statistics
from typing import Any

import pandas as pd
import torch
from torch import nn

from compactkd.blocks.assembly import network_from_package, network_package
from compactkd.costs import count_flops, count_params, measure_latency_ms
from compactkd.data import make_loader
from compactkd.evaluation import (
    accuracy_metrics,
    confusion_matrix,
    difference_interval,
    per_class_accuracy,
    predict,
)
from compactkd.export import export_onnx, max_abs_difference, onnx_latency_ms, onnx_session
from compactkd.training import resolve_device

# The figures of metrics.json and comparison.csv (evaluation.json holds everything).
HEADLINE = (
    "top1", "top1_ci95", "top5", "top1_mean", "top1_std", "flops", "params", "size_bytes",
    "latency_ms_b1", "latency_ms_b32", "flops_reduction", "params_reduction", "speedup",
    "speedup_b32",
)  # fmt: skip


def _size_bytes(package: dict[str, Any]) -> int:
    """Bytes of the file the package is saved as."""
    buffer = io.BytesIO()
    torch.save(package, buffer)
    return buffer.getbuffer().nbytes


def _measure(
    packages: list[dict[str, Any]], splits: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], torch.Tensor]:
    """One model's figures (accuracy of every seed) and its per-seed correctness on test."""
    device = resolve_device(params["device"])
    loader = make_loader(splits, "test", params["batch_size"], device)
    input_shape = tuple(splits["train"]["images"].shape[1:])
    correct, top1s = [], []
    for package in packages:
        logits, labels = predict(network_from_package(package).to(device), loader)
        correct.append(logits.argmax(dim=1) == labels)
        top1s.append(100.0 * float(correct[-1].double().mean()))
        if len(correct) == 1:
            first = accuracy_metrics(logits, labels)
            matrix = confusion_matrix(logits.argmax(dim=1), labels, len(splits["classes"]))
    model = network_from_package(packages[0])
    latency = {
        f"latency_ms_b{batch}": measure_latency_ms(
            model, input_shape, batch, params["latency_threads"], repeats=params["latency_repeats"]
        )
        for batch in (1, 32)
    }
    figures = {
        "top1": first["top1"],
        "top1_ci95": first["top1_ci95"],
        "top5": first["top5"],
        "top1_mean": statistics.fmean(top1s),
        "top1_std": statistics.stdev(top1s) if len(top1s) > 1 else 0.0,
        "top1_seeds": top1s,
        "flops": count_flops(model, input_shape),
        "params": count_params(model),
        "size_bytes": _size_bytes(packages[0]),
        **latency,
        "per_class_top1": per_class_accuracy(matrix),
        "confusion": matrix,
    }
    return figures, torch.stack(correct)


def evaluate_models(
    teacher: nn.Module,
    finetuned: dict[str, list[dict[str, Any]]],
    splits: dict[str, Any],
    spec: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Test accuracy (every seed), cost, size and latency of the teacher and each model.

    Ratios are against the teacher; the student's ``vs`` holds its top-1 difference over
    each baseline with a 95% interval (test sampling and seed-to-seed noise together).
    """
    models = {"teacher": [network_package(teacher)], **finetuned}
    figures, correct = {}, {}
    for name, packages in models.items():
        figures[name], correct[name] = _measure(packages, splits, params)
    reference = figures["teacher"]
    for name in finetuned:
        figures[name] |= {
            "flops_reduction": reference["flops"] / figures[name]["flops"],
            "params_reduction": reference["params"] / figures[name]["params"],
            "speedup": reference["latency_ms_b1"] / figures[name]["latency_ms_b1"],
            "speedup_b32": reference["latency_ms_b32"] / figures[name]["latency_ms_b32"],
        }
    figures["student"]["vs"] = {
        name: difference_interval(correct["student"], correct[name])
        for name in finetuned
        if name != "student"
    }
    figures["student"]["budgets"] = spec["budgets"]
    return figures


def export_student(
    student: dict[str, Any], splits: dict[str, Any], params: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """The student as ONNX, its logits checked against PyTorch's, and its onnxruntime latency."""
    model = network_from_package(student)
    input_shape = tuple(splits["train"]["images"].shape[1:])
    onnx_model = export_onnx(model, input_shape)
    session = onnx_session(onnx_model, params["latency_threads"])
    images, _ = next(make_loader(splits, "test", 64).batches())
    difference = max_abs_difference(session, model, images)
    if difference > params["onnx_tolerance"]:
        raise ValueError(
            f"the ONNX student's logits differ from PyTorch's by {difference:.2e} "
            f"(tolerance {params['onnx_tolerance']:.0e}): the export is wrong"
        )
    return onnx_model, {
        "onnx_max_abs_diff": difference,
        "onnx_size_bytes": len(onnx_model),
        **{
            f"onnx_latency_ms_b{batch}": onnx_latency_ms(
                session, input_shape, batch, repeats=params["latency_repeats"]
            )
            for batch in (1, 32)
        },
    }


def _headline(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: figures[key] for key in HEADLINE if key in figures}


def summarise(
    onnx_check: dict[str, Any], *per_budget: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``metrics.json`` and ``comparison.csv`` of the student's budget; ``sweep.csv`` of all.

    ``per_budget`` is every budget's evaluation, then every budget's student spec.
    """
    evaluations, specs = per_budget[: len(per_budget) // 2], per_budget[len(per_budget) // 2 :]
    main = evaluations[0]
    metrics = {name: _headline(figures) for name, figures in main.items()}
    metrics["student"] |= onnx_check
    metrics["student"]["vs"] = main["student"]["vs"]
    comparison = pd.DataFrame(
        [{"model": name, **_headline(figures)} for name, figures in main.items()]
    )
    rows = []
    for number, (evaluation, spec) in enumerate(zip(evaluations, specs, strict=True), start=1):
        ratios = {f"budget_{k}": v / spec["teacher"][k] for k, v in spec["budgets"].items()}
        for name, figures in evaluation.items():
            rows.append(
                {
                    "budget": number,
                    **ratios,
                    "model": name,
                    "top1": figures["top1"],
                    "top1_mean": figures["top1_mean"],
                    "top1_std": figures["top1_std"],
                    "flops": figures["flops"],
                    "params": figures["params"],
                    "flops_ratio": figures["flops"] / main["teacher"]["flops"],
                    "params_ratio": figures["params"] / main["teacher"]["params"],
                }
            )
    return metrics, comparison, pd.DataFrame(rows)
