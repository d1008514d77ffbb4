"""Kedro datasets of compactkd's own: torch files written atomically, read safely."""

from compactkd.datasets.torch_datasets import TensorDictDataset, TorchModelDataset

__all__ = ["TensorDictDataset", "TorchModelDataset"]
