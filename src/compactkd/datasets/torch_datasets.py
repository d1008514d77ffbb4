"""Kedro datasets for models (spec + state_dict) and dicts of tensors.

Both write atomically and read with ``torch.load(weights_only=True)``; the work
lives in :mod:`compactkd.serialization`, which knows nothing of Kedro.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from torch import nn

from compactkd.model_files import load_model, save_model
from compactkd.serialization import atomic_save, atomic_write, safe_load


class _TorchFileDataset(AbstractDataset):
    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self._filepath.is_file()


class TorchModelDataset(_TorchFileDataset):
    """A model built by ``compactkd.models.build_model``: its spec as data plus its weights.

    Example catalog entry::

        teacher_model:
          type: compactkd.datasets.TorchModelDataset
          filepath: data/06_models/teacher.pt
    """

    def load(self) -> nn.Module:
        return load_model(self._filepath)

    def save(self, data: nn.Module) -> None:
        save_model(data, self._filepath)


class TensorDictDataset(_TorchFileDataset):
    """A dict of tensors and plain values (lists, numbers, strings, nested dicts)."""

    def load(self) -> dict[str, Any]:
        return safe_load(self._filepath)

    def save(self, data: dict[str, Any]) -> None:
        atomic_save(data, self._filepath)


class BinaryFileDataset(_TorchFileDataset):
    """Raw bytes in a file, such as an exported ONNX model (written atomically)."""

    def load(self) -> bytes:
        return self._filepath.read_bytes()

    def save(self, data: bytes) -> None:
        atomic_write(lambda file: file.write(data), self._filepath)
