"""Kedro datasets of compactkd's own: torch files written atomically, read safely."""

from compactkd.datasets.torch_datasets import (
    BinaryFileDataset,
    TensorDictDataset,
    TorchModelDataset,
)

__all__ = ["BinaryFileDataset", "TensorDictDataset", "TorchModelDataset"]
