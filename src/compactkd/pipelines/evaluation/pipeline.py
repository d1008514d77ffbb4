"""``evaluation``: every model measured (once per budget), the student exported, tables gathered."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.evaluation.nodes import evaluate_models, export_student, summarise
from compactkd.pipelines.sweep import across_budgets, per_budget, qualified

SHARED_INPUTS = {"teacher_model", "splits"}
PARAMETERS = {"params:evaluation"}


def create_pipeline(namespaces: Sequence[str | None] = (None,), **kwargs) -> Pipeline:
    measure = pipeline(
        [
            node(
                evaluate_models,
                [
                    "teacher_model",
                    "finetuned_models",
                    "splits",
                    "student_spec",
                    "params:evaluation",
                ],
                "evaluation",
                name="evaluate_models",
            )
        ]
    )
    gather = pipeline(
        [
            node(
                export_student,
                ["student_model", "splits", "params:evaluation"],
                ["student_onnx", "onnx_check"],
                name="export_student",
            ),
            across_budgets(
                summarise,
                [
                    "onnx_check",
                    *(qualified(ns, "evaluation") for ns in namespaces),
                    *(qualified(ns, "student_spec") for ns in namespaces),
                ],
                ["metrics", "comparison", "sweep_table"],
                name="summarise",
            ),
        ]
    )
    return per_budget(measure, namespaces, SHARED_INPUTS, PARAMETERS) + gather
