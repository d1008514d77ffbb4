"""``block_search``: teacher -> candidates -> block-wise training -> student spec."""

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.block_search.nodes import (
    prepare_candidates,
    select_student,
    train_block_candidates,
)


def create_pipeline(**kwargs) -> Pipeline:
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
            node(
                select_student,
                [
                    "candidate_pool",
                    "candidates_table",
                    "block_search_history",
                    "block_scoring_seconds",
                    "teacher_metrics",
                    "splits",
                    "params:block_search",
                ],
                ["student_spec", "block_search_metrics"],
                name="select_student",
            ),
        ]
    )
