"""Item 3: the student's latency speedup over the teacher against its FLOPs reduction.

Models come from a finished run (``data/06_models``), loaded as the evaluation stage loads
them; the student's ONNX file is the run's own, the teacher's is exported here. Each
round times every (runtime, batch, model) once, the two models alternating which goes
first, with the project's timing helpers (warm-up, then the median of ``inner`` calls).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_common import Spread, log
from torch import nn

from compactkd.costs import count_flops, measure_latency_ms
from compactkd.export import export_onnx, max_abs_difference, onnx_latency_ms, onnx_session
from compactkd.model_files import load_model, network_from_package
from compactkd.serialization import safe_load

RUNTIMES = ("pytorch", "onnxruntime")
BATCHES = (1, 32)
MODELS = ("teacher", "student")


@dataclass(frozen=True)
class Latency:
    """Per (runtime, batch): each model's latency in ms; and both models' FLOPs per image."""

    ms: dict[tuple[str, int, str], Spread]
    flops: dict[str, int]
    setting: dict[str, Any]

    @property
    def flops_reduction(self) -> float:
        return self.flops["teacher"] / self.flops["student"]

    def speedup(self, runtime: str, batch: int) -> float:
        """Teacher latency over student latency, medians."""
        return self.ms[runtime, batch, "teacher"].median / self.ms[runtime, batch, "student"].median

    def realised(self, runtime: str, batch: int) -> float:
        """The fraction of the theoretical (FLOPs) speedup that the clock shows."""
        return self.speedup(runtime, batch) / self.flops_reduction

    def to_dict(self) -> dict[str, Any]:
        cells = [
            {
                "runtime": runtime,
                "batch": batch,
                "teacher_ms": self.ms[runtime, batch, "teacher"].to_dict(),
                "student_ms": self.ms[runtime, batch, "student"].to_dict(),
                "speedup": self.speedup(runtime, batch),
                "realised_fraction": self.realised(runtime, batch),
            }
            for runtime in RUNTIMES
            for batch in BATCHES
        ]
        return {
            "flops": self.flops,
            "flops_reduction": self.flops_reduction,
            "cells": cells,
            **self.setting,
        }


def load_run_models(data: Path) -> tuple[dict[str, nn.Module], bytes, tuple[int, ...]]:
    """Teacher and (first-seed) student of a finished run, the student's ONNX, the image shape."""
    models = {
        "teacher": load_model(data / "06_models/teacher.pt").eval(),
        "student": network_from_package(safe_load(data / "06_models/student.pt")),
    }
    card = json.loads((data / "08_reporting/dataset_card.json").read_text())
    return models, (data / "06_models/student.onnx").read_bytes(), tuple(card["image_shape"])


def measure_latency(data: Path, threads: int, rounds: int, inner: int) -> Latency:
    """Latency of teacher and student, PyTorch and onnxruntime, batch 1 and 32."""
    models, student_onnx, shape = load_run_models(data)
    flops = {name: count_flops(model, shape) for name, model in models.items()}
    log("exporting the teacher to ONNX")
    sessions = {
        "teacher": onnx_session(export_onnx(models["teacher"], shape), threads),
        "student": onnx_session(student_onnx, threads),
    }
    check = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    onnx_error = {name: max_abs_difference(sessions[name], models[name], check) for name in MODELS}
    timings: dict[tuple[str, int, str], list[float]] = {}
    for round_ in range(rounds):
        order: Sequence[str] = MODELS if round_ % 2 == 0 else tuple(reversed(MODELS))
        for batch in BATCHES:
            for name in order:
                timings.setdefault(("pytorch", batch, name), []).append(
                    measure_latency_ms(models[name], shape, batch, threads, repeats=inner)
                )
                timings.setdefault(("onnxruntime", batch, name), []).append(
                    onnx_latency_ms(sessions[name], shape, batch, repeats=inner)
                )
        log(f"latency round {round_ + 1}/{rounds} done")
    setting = {
        "input_shape": list(shape),
        "threads": threads,
        "rounds": rounds,
        "calls_per_round": inner,
        "onnx_max_abs_diff": onnx_error,
    }
    return Latency({k: Spread.of(v) for k, v in timings.items()}, flops, setting)
