"""Nodes of the ``data_processing`` stage: glue between the catalog and compactkd.data."""

from __future__ import annotations

from typing import Any

from compactkd.data import RawDataset, dataset_card, load_dataset, split_dataset


def load_raw_dataset(params: dict[str, Any]) -> RawDataset:
    """The configured dataset, read fully into memory (errors name what is missing)."""
    return load_dataset(
        params["dataset"],
        raw_dir=params["raw_dir"],
        download=params["download"],
        image_folder=params["image_folder"],
    )


def split_raw_dataset(raw: RawDataset, params: dict[str, Any]) -> dict[str, Any]:
    """Stratified train/val/test splits with train-only normalisation statistics."""
    return split_dataset(
        raw,
        params["dataset"],
        val_fraction=params["val_fraction"],
        test_fraction=params["test_fraction"],
        seed=params["seed"],
        augmentation=params["augmentation"],
    )


def describe_dataset(splits: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The dataset card of ``data/08_reporting/dataset_card.json``."""
    return dataset_card(splits, seed=params["seed"])
