"""``teacher``: splits -> trained teacher and its history -> teacher metrics."""

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.teacher.nodes import evaluate_teacher, train_teacher


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_teacher,
                ["splits", "params:teacher"],
                ["teacher_model", "teacher_history"],
                name="train_teacher",
            ),
            node(
                evaluate_teacher,
                ["teacher_model", "splits", "teacher_history", "params:teacher"],
                "teacher_metrics",
                name="evaluate_teacher",
            ),
        ]
    )
