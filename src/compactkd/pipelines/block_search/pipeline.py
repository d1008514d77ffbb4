"""``block_search``: teacher -> candidates -> block-wise training -> student spec."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.block_search.nodes import (
    prepare_candidates,
    select_students,
    train_block_candidates,
)
from compactkd.pipelines.sweep import across_budgets, qualified


def create_pipeline(namespaces: Sequence[str | None] = (None,), **kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                prepare_candidates,
                ["teacher_model", "splits", "params:block_search"],
                "candidate_pool",
                name="prepare_candidates",
            ),
            node(
                train_block_candidates,
                ["candidate_pool", "splits", "params:block_search"],
                [
                    "candidates_table",
                    "candidate_weights",
                    "block_search_history",
                    "block_scoring_seconds",
                ],
                name="train_block_candidates",
            ),
            across_budgets(
                select_students,
                [
                    "candidate_pool",
                    "candidates_table",
                    "block_search_history",
                    "block_scoring_seconds",
                    "teacher_metrics",
                    "splits",
                    "params:block_search",
                ],
                [*(qualified(ns, "student_spec") for ns in namespaces), "block_search_metrics"],
                name="select_students",
            ),
        ]
    )
