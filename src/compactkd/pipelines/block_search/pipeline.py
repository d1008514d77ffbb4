"""``block_search``: teacher -> ranked channels -> candidates -> block-wise training ->
one student spec per budget, each checked assembled."""

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.block_search.nodes import (
    fit_accuracy_predictor,
    prepare_candidates,
    rank_interface_channels,
    select_students,
    summarise_block_search,
    train_block_candidates,
)
from compactkd.pipelines.sweep import across_budgets, per_budget, qualified, stage
from compactkd.search.pool import check_assembled  # a node as it is: nothing to adapt

SEARCH = "params:block_search"


def create_pipeline(namespaces: Sequence[str | None] = (None,), **kwargs) -> Pipeline:
    specs = [qualified(ns, "student_spec") for ns in namespaces]
    checks = [qualified(ns, "student_check") for ns in namespaces]
    search = pipeline(
        [
            node(
                rank_interface_channels,
                ["teacher_model", "splits", SEARCH],
                "interface_importance",
                name="rank_interface_channels",
            ),
            node(
                prepare_candidates,
                ["teacher_model", "interface_importance", "splits", SEARCH],
                "candidate_pool",
                name="prepare_candidates",
            ),
            node(
                train_block_candidates,
                ["candidate_pool", "splits", SEARCH, "checkpoints"],
                [
                    "candidates_table",
                    "candidate_weights",
                    "block_search_history",
                    "interface_scores",
                ],
                name="train_block_candidates",
            ),
            node(
                fit_accuracy_predictor,
                [
                    "teacher_model",
                    "candidate_pool",
                    "candidates_table",
                    "candidate_weights",
                    "interface_scores",
                    "splits",
                    SEARCH,
                ],
                "accuracy_predictor",
                name="fit_accuracy_predictor",
            ),
            across_budgets(
                select_students,
                [
                    "candidate_pool",
                    "candidates_table",
                    "interface_scores",
                    "accuracy_predictor",
                    SEARCH,
                ],
                specs,
                name="select_students",
            ),
        ]
    )
    check = pipeline(
        [
            node(
                check_assembled,
                [
                    "teacher_model",
                    "student_spec",
                    "candidates_table",
                    "candidate_weights",
                    "splits",
                ],
                "student_check",
                name="check_student",
            )
        ]
    )
    shared = {"teacher_model", "candidates_table", "candidate_weights", "splits"}
    summary = across_budgets(
        summarise_block_search,
        [
            "candidate_pool",
            "candidates_table",
            "block_search_history",
            "accuracy_predictor",
            "teacher_metrics",
            *checks,
        ],
        "block_search_metrics",
        name="summarise_block_search",
    )
    return stage(
        "block_search", search + per_budget(check, namespaces, shared, set()) + Pipeline([summary])
    )
