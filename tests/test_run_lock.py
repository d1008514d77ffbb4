"""One writer at a time: a second run of the same project stops at once, naming the first;
a killed run leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import TINY_RUN, run_session

from compactkd.run_lock import LOCK_FILE, ProjectLocked, RunLock

HOLDER = """
import sys, time
from compactkd.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


@contextmanager
def held_elsewhere(project: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the project's lock, until the block ends (then SIGKILLed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up of its own: the OS frees the lock
        holder.wait()


def test_a_second_holder_is_refused_with_the_first_named_and_a_killed_one_frees_it(
    tmp_path: Path,
) -> None:
    with held_elsewhere(tmp_path) as holder, pytest.raises(ProjectLocked) as refused:
        RunLock(tmp_path).acquire()
    assert f"pid {holder.pid} on " in str(refused.value) and "-c" in str(refused.value)
    lock = RunLock(tmp_path)
    lock.acquire()  # the killed holder left nothing that blocks
    assert lock.held and f"pid {os.getpid()}" in (tmp_path / LOCK_FILE).read_text()
    lock.release()
    assert not lock.held and (tmp_path / LOCK_FILE).read_text() == ""
    lock.release()  # twice is harmless


def test_kedro_run_stops_before_any_work_while_another_run_holds_the_project(
    project_copy: Path,
) -> None:
    splits = project_copy / "data/05_model_input/splits.pt"
    with held_elsewhere(project_copy) as holder:
        with pytest.raises(ProjectLocked, match=f"pid {holder.pid}"):
            run_session(project_copy, ["data_processing"], TINY_RUN)
        assert not splits.exists()
    run_session(project_copy, ["data_processing"], TINY_RUN)  # free again: it runs
    assert splits.exists()
    assert (project_copy / LOCK_FILE).read_text() == ""  # released at the end of the run
