"""kedro-datasets' JSON, CSV, text and matplotlib datasets, written atomically.

Each saves through its file system's ``open``; on the local disk that ``open`` is replaced by
:func:`compactkd.serialization.atomic_file` for writing, so a run killed mid-save leaves the
previous file (or none), never half of one. Loading and everything else are kedro-datasets'
own. Remote file systems (s3://, gcs://) keep their own writes: an object store replaces an
object whole anyway.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import IO, Any

from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset

from compactkd.serialization import atomic_file

__all__ = ["AtomicCSVDataset", "AtomicJSONDataset", "AtomicMatplotlibDataset", "AtomicTextDataset"]


class _AtomicLocalFiles:
    """An fsspec file system whose ``open`` for writing goes through :func:`atomic_file`."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_fs":  # unpickling (ParallelRunner's workers)
            raise AttributeError(name)
        return getattr(self._fs, name)

    def open(self, path: str, mode: str = "rb", **open_args: Any) -> AbstractContextManager[IO]:
        if "w" in mode or "x" in mode:  # a new file's whole content (not an append)
            return atomic_file(path, mode.replace("x", "w"), **open_args)
        return self._fs.open(path, mode, **open_args)


class _Atomic:
    _protocol: str
    _fs: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._protocol == "file":
            self._fs = _AtomicLocalFiles(self._fs)


class AtomicJSONDataset(_Atomic, JSONDataset):
    """``json.JSONDataset``, written atomically."""


class AtomicCSVDataset(_Atomic, CSVDataset):
    """``pandas.CSVDataset``, written atomically."""


class AtomicTextDataset(_Atomic, TextDataset):
    """``text.TextDataset``, written atomically."""


class AtomicMatplotlibDataset(_Atomic, MatplotlibDataset):
    """``matplotlib.MatplotlibDataset``, written atomically."""
