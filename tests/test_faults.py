"""Kill anywhere, lose nothing (a fast subset; ``benchmarks/faults.py`` runs every point):
a run killed mid-epoch or mid-save and run again ends where an uninterrupted run ends, bit
for bit, and no output is ever half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_injection import (
    KillPoint,
    configure,
    figures,
    kedro_run,
    temporaries,
    unsound_outputs,
)
from helpers import TINY_RUN, copy_project

pytestmark = pytest.mark.slow

STAGES = "data_processing,teacher"
POINTS = [
    KillPoint("teacher mid-epoch", r"teacher epoch 1/2", 0.3),
    KillPoint("saving the teacher", r"Saving data to teacher_model", 0.0),
]


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    reference = copy_project(tmp_path / "reference")
    configure(reference, TINY_RUN)
    assert not kedro_run(reference, STAGES)
    expected = figures(reference)
    assert set(expected) == {"teacher", "teacher.pt weights"}

    project = copy_project(tmp_path / "killed")
    configure(project, TINY_RUN)
    for point in POINTS:
        assert kedro_run(project, STAGES, kill=point), f"{point.name}: the trigger never came"
        assert unsound_outputs(project) == [], point.name
    assert not kedro_run(project, STAGES)
    assert unsound_outputs(project) == [] and temporaries(project) == []
    assert figures(project) == expected
