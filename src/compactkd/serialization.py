"""Writing and reading compactkd files safely (networks themselves: :mod:`compactkd.model_files`).

Everything is written atomically (a temporary file in the same folder, then a rename),
so an interrupted save never leaves a half-written file where a good one stood, and
everything is read with ``torch.load(weights_only=True)``, which cannot run code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch


class CheckpointError(ValueError):
    """A file that is not what compactkd expected there."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, then rename over ``path``."""
    atomic_write(lambda file: torch.save(obj, file), path)


def atomic_write(write: Callable[[BinaryIO], Any], path: str | Path) -> None:
    """``write`` into a temporary sibling file, then rename it over ``path``."""
    with atomic_file(path) as file:
        write(file)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", **open_args: Any) -> Iterator[IO]:
    """A file opened for writing in a temporary sibling of ``path``, renamed over ``path``
    once the block ends without error (and removed if it does not): a reader sees the old
    file or the whole new one, never a part. ``open_args`` as for :func:`open`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with open(tmp_name, mode, **open_args) as tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())  # on disk before the rename makes it visible
        os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes files private
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_file` left under ``folder`` when its
    process was killed mid-write (``.<name>.<random>.tmp``); only safe while no other
    process writes there (the run lock held). Returns what it deleted."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def safe_load(path: str | Path) -> Any:
    """Load a file written by :func:`atomic_save`, refusing anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails on foreign bytes in many ways (even KeyError)
        # One line, no traceback from inside torch or zipfile: the file is what is wrong.
        reason = str(error).splitlines()[0] if str(error) else ""
        if isinstance(error, pickle.UnpicklingError):  # torch's text suggests the unsafe way
            reason = "not plain tensors and data: only those are loaded, never code"
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {reason})"
        ) from None
