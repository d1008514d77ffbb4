"""``reporting``: the finished run's tables -> figures, ``report.html`` and ``report.md``."""

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.reporting.nodes import build_report
from compactkd.pipelines.sweep import stage


def create_pipeline(**kwargs) -> Pipeline:
    nodes = pipeline(
        [
            node(
                build_report,
                [
                    "dataset_card",
                    "metrics",
                    "comparison",
                    "sweep_table",
                    "student_spec",
                    "candidates_table",
                    "evaluation",
                    "teacher_metrics",
                    "teacher_history",
                    "student_history",
                    "params:distillation",
                ],
                [
                    "pareto_plot",
                    "blocks_plot",
                    "curves_plot",
                    "confusion_plot",
                    "report_html",
                    "report_md",
                ],
                name="build_report",
            )
        ]
    )
    return stage("reporting", nodes)
