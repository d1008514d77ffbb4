"""``distillation``: student spec -> student and baselines, fine-tuned (once per budget)."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.distillation.nodes import finetune_models
from compactkd.pipelines.sweep import per_budget

SHARED_INPUTS = {"teacher_model", "splits", "candidates_table", "candidate_weights"}
PARAMETERS = {"params:block_search", "params:distillation"}


def create_pipeline(namespaces: Sequence[str | None] = (None,), **kwargs) -> Pipeline:
    base = pipeline(
        [
            node(
                finetune_models,
                [
                    "teacher_model",
                    "splits",
                    "student_spec",
                    "candidates_table",
                    "candidate_weights",
                    "params:block_search",
                    "params:distillation",
                ],
                ["finetuned_models", "student_model", "student_history", "distillation_summary"],
                name="finetune_models",
            )
        ]
    )
    return per_budget(base, namespaces, SHARED_INPUTS, PARAMETERS)
