"""``teacher``: splits -> trained teacher and its history -> teacher metrics."""

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.sweep import stage
from compactkd.pipelines.teacher.nodes import evaluate_teacher, train_teacher


def create_pipeline(**kwargs) -> Pipeline:
    nodes = pipeline(
        [
            node(
                train_teacher,
                ["splits", "params:teacher", "params:training", "checkpoints"],
                ["teacher_model", "teacher_history"],
                name="train_teacher",
            ),
            node(
                evaluate_teacher,
                ["teacher_model", "splits", "teacher_history", "params:teacher", "params:training"],
                "teacher_metrics",
                name="evaluate_teacher",
            ),
        ]
    )
    return stage("teacher", nodes)
