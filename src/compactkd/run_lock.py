"""One writer per project: a run holds an exclusive lock on ``data/.run.lock`` while it runs.

The lock is the operating system's (``flock``) on an open file, so a run that is killed,
even by SIGKILL, releases it with its last file descriptor: a lock is never left stale.
The file also says who holds it (process, host, start time, command), for the message that
stops a second run.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = "data/.run.lock"


class ProjectLocked(RuntimeError):
    """Another run of the same project is writing its outputs."""


class RunLock:
    """``acquire()`` or :class:`ProjectLocked`; ``release()`` when the run ends."""

    def __init__(self, project_path: str | Path) -> None:
        self.path = Path(project_path) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise ProjectLocked(
                f"another run is writing this project's outputs ({holder}); wait for it to "
                f"finish or stop it (a stopped run frees {self.path} at once), then run again"
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}: "
                     f"{command}\n".encode())  # fmt: skip
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # no holder named while nobody holds it
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
