"""Kedro datasets of compactkd's own: torch files written atomically, read safely; and
kedro-datasets' JSON, CSV, text and figure datasets written atomically."""

from compactkd.datasets.atomic import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicMatplotlibDataset,
    AtomicTextDataset,
)
from compactkd.datasets.torch_datasets import (
    BinaryFileDataset,
    TensorDictDataset,
    TorchModelDataset,
)

__all__ = [
    "AtomicCSVDataset",
    "AtomicJSONDataset",
    "AtomicMatplotlibDataset",
    "AtomicTextDataset",
    "BinaryFileDataset",
    "TensorDictDataset",
    "TorchModelDataset",
]
