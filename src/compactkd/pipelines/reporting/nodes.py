"""Nodes of the ``reporting`` stage: figures, ``report.html`` and ``report.md``."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from compactkd.report import (
    blocks_figure,
    confusion_figure,
    curves_figure,
    html_report,
    markdown_summary,
    pareto_figure,
)

TITLE = "compactkd: a compact student, learnt by knowledge distillation"


def _facts(
    card: dict[str, Any],
    metrics: dict[str, Any],
    spec: dict[str, Any],
    teacher_metrics: dict[str, Any],
    distillation: dict[str, Any],
) -> dict[str, str]:
    student = metrics["student"]
    kd = distillation["kd"]
    budgets = ", ".join(f"{k} {v / spec['teacher'][k]:.2f}x" for k, v in spec["budgets"].items())
    return {
        "dataset": f"{card['name']} ({card['source']}): "
        + ", ".join(f"{count:,} {split}" for split, count in card["counts"].items()),
        "teacher": f"{teacher_metrics['model']['name']}, {teacher_metrics['epochs']} epochs, "
        f"test top-1 {metrics['teacher']['top1']:.2f}%",
        "budget": budgets,
        "student": f"{' -> '.join(c['candidate'] for c in spec['blocks'].values())}",
        "result": f"top-1 {student['top1']:.2f}% with {student['flops_reduction']:.2f}x fewer "
        f"FLOPs and {student['params_reduction']:.2f}x fewer parameters than the teacher",
        "fine-tuning": f"{distillation['training']['epochs']} epochs, {distillation['seeds']} "
        f"seed(s), KD alpha {kd['alpha']}, tau {kd['tau']}, beta {kd['beta']}",
        **provenance_facts(metrics.get("provenance")),
    }


def provenance_facts(record: dict[str, Any] | None) -> dict[str, str]:
    """The run's provenance as rows of the report's run table (none for older metrics)."""
    if not record:
        return {}
    commit = record["git_commit"] or "not a git repository"
    dirty = " with uncommitted changes" if record["git_dirty"] else ""
    versions = ", ".join(f"{name} {v}" for name, v in record["versions"].items() if v)
    return {
        "code": f"commit {commit[:12]}{dirty}, Kedro environment {record['kedro_env']}, "
        f"parameters sha256 {record['parameters_sha256'][:12]}",
        "software": versions,
        "machine": f"{record['device']}, {record['threads']} thread(s); run {record['date']}",
    }


def build_report(
    card: dict[str, Any],
    metrics: dict[str, Any],
    comparison: pd.DataFrame,
    sweep: pd.DataFrame,
    spec: dict[str, Any],
    candidates: pd.DataFrame,
    evaluation: dict[str, Any],
    teacher_metrics: dict[str, Any],
    teacher_history: pd.DataFrame,
    student_history: pd.DataFrame,
    distillation: dict[str, Any],
) -> tuple[Figure, Figure, Figure, Figure, str, str]:
    """The four figures (also saved as PNG), the HTML report and its Markdown summary."""
    figures = {
        "Accuracy against FLOPs for every budget of the sweep": pareto_figure(sweep),
        "FLOPs of each block: teacher and chosen candidate": blocks_figure(spec, candidates),
        "Validation accuracy per epoch": curves_figure(teacher_history, student_history),
        "Student confusion matrix": confusion_figure(
            evaluation["student"]["confusion"], card["classes"]
        ),
    }
    facts = _facts(card, metrics, spec, teacher_metrics, distillation)
    report = html_report(TITLE, facts, comparison, figures)
    summary = markdown_summary(TITLE, facts, comparison)
    return (*figures.values(), report, summary)
