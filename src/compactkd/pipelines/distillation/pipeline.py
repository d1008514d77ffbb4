"""``distillation``: student spec -> the student and each baseline, fine-tuned (per budget).

One node per model, each with its own outputs, so each resumes alone and a parallel
runner can train them side by side.
"""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.distillation import MODELS
from compactkd.pipelines.distillation.nodes import (
    finetune_pruned,
    finetune_scratch,
    finetune_student,
    finetune_torch_pruning,
    finetune_uniform,
    gather_histories,
    gather_summaries,
)
from compactkd.pipelines.sweep import per_budget, stage

SHARED_INPUTS = {
    "teacher_model", "splits", "candidates_table", "candidate_weights", "interface_importance",
    "checkpoints",
}  # fmt: skip
PARAMETERS = {"params:distillation", "params:training"}
SETTINGS = ["params:distillation", "params:training", "checkpoints"]
FROM_SEARCH = ["student_spec", "candidates_table", "candidate_weights"]


def _outputs(model: str) -> list[str]:
    return [f"{model}_finetuned", f"{model}_finetune_history", f"{model}_finetune_summary"]


def create_pipeline(namespaces: Sequence[str | None] = (None,), **kwargs) -> Pipeline:
    models = [
        node(
            finetune_student,
            ["teacher_model", "splits", *FROM_SEARCH, *SETTINGS],
            ["student_finetuned", "student_model", *_outputs("student")[1:]],
            name="finetune_student",
        ),
        node(
            finetune_scratch,
            ["teacher_model", "splits", *FROM_SEARCH, *SETTINGS],
            _outputs("scratch"),
            name="finetune_scratch",
        ),
        node(
            finetune_uniform,
            ["teacher_model", "splits", "student_spec", *SETTINGS],
            _outputs("uniform"),
            name="finetune_uniform",
        ),
        node(
            finetune_pruned,
            ["teacher_model", "splits", "student_spec", "interface_importance", *SETTINGS],
            _outputs("pruned"),
            name="finetune_pruned",
        ),
        node(
            finetune_torch_pruning,
            ["teacher_model", "splits", "student_spec", *SETTINGS],
            _outputs("torch_pruning"),
            name="finetune_torch_pruning",
        ),
    ]
    gather = [
        node(
            gather_histories,
            [f"{m}_finetune_history" for m in MODELS],
            "student_history",
            name="gather_histories",
        ),
        node(
            gather_summaries,
            [f"{m}_finetune_summary" for m in MODELS],
            "distillation_summary",
            name="gather_summaries",
        ),
    ]
    base = pipeline(models + gather)
    return stage("distillation", per_budget(base, namespaces, SHARED_INPUTS, PARAMETERS))
