"""``evaluation``: every model measured (once per budget), the student exported, tables gathered."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.distillation import MODELS
from compactkd.pipelines.evaluation.nodes import (
    budget_rows,
    evaluate_models,
    export_student,
    gather_sweep,
    measure_teacher,
    summarise,
)
from compactkd.pipelines.sweep import across_budgets, per_budget, qualified, stage

SETTINGS = "params:evaluation"


def create_pipeline(namespaces: Sequence[str | None] = (None,), **kwargs) -> Pipeline:
    per_model = [f"{model}_finetuned" for model in MODELS]
    measure = pipeline(
        [
            node(
                evaluate_models,
                ["teacher_evaluation", "teacher_model", "splits", "student_spec", SETTINGS]
                + per_model,
                "evaluation",
                name="evaluate_models",
            ),
            node(budget_rows, ["evaluation", "student_spec"], "sweep_rows", name="budget_rows"),
        ]
    )
    shared = {"teacher_evaluation", "teacher_model", "splits"}
    gather = pipeline(
        [
            node(
                measure_teacher,
                ["teacher_model", "splits", SETTINGS],
                "teacher_evaluation",
                name="measure_teacher",
            ),  # fmt: skip
            node(
                export_student,
                ["student_model", "splits", SETTINGS],
                ["student_onnx", "onnx_check"],
                name="export_student",
            ),
            node(
                summarise, ["evaluation", "onnx_check"], ["metrics", "comparison"], name="summarise"
            ),
            across_budgets(
                gather_sweep,
                [qualified(ns, "sweep_rows") for ns in namespaces],
                "sweep_table",
                name="gather_sweep",
            ),
        ]
    )
    return stage("evaluation", per_budget(measure, namespaces, shared, {SETTINGS}) + gather)
