"""``data_processing``: raw dataset -> stratified splits -> dataset card."""

from kedro.pipeline import Pipeline, node, pipeline

from compactkd.pipelines.data_processing.nodes import (
    describe_dataset,
    load_raw_dataset,
    split_raw_dataset,
)
from compactkd.pipelines.sweep import stage


def create_pipeline(**kwargs) -> Pipeline:
    nodes = pipeline(
        [
            node(load_raw_dataset, "params:data_processing", "raw_dataset", name="load_dataset"),
            node(
                split_raw_dataset,
                ["raw_dataset", "params:data_processing"],
                "splits",
                name="split_dataset",
            ),
            node(
                describe_dataset,
                ["splits", "params:data_processing"],
                "dataset_card",
                name="describe_dataset",
            ),
        ]
    )
    return stage("data_processing", nodes)
