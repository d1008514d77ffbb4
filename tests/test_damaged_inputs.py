"""Damaged files: a checkpoint is retrained from scratch, a stage's input stops the run with
one line naming the file and the stage that rebuilds it; a pickled payload never runs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN, run_session

from compactkd.hooks import DamagedInputError
from compactkd.model_files import load_model
from compactkd.serialization import CheckpointError, safe_load
from compactkd.training import Checkpoint


class Payload:
    """Unpickling this runs code: it writes the file ``MARKER`` names."""

    marker = ""

    def __reduce__(self) -> tuple:
        return (Path(self.marker).write_text, ("the payload ran",))


@pytest.mark.parametrize("load", [safe_load, load_model])
def test_a_pickled_payload_is_refused_and_never_runs(tmp_path: Path, load: Callable) -> None:
    Payload.marker = str(tmp_path / "ran.txt")
    path = tmp_path / "model.pt"
    torch.save({"format": "compactkd.model/1", "payload": Payload()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match=r"model.pt is not a PyTorch checkpoint"):
        load(path)
    assert not (tmp_path / "ran.txt").exists()


def test_a_damaged_checkpoint_is_trained_again_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run.ckpt"
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    checkpoint = Checkpoint(path, "fingerprint")
    checkpoint.save(model, optimizer, scheduler, [{"epoch": 1}])
    assert checkpoint.restore(model, optimizer, scheduler) == [{"epoch": 1}]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a kill mid-copy
    with caplog.at_level(logging.WARNING):
        assert checkpoint.restore(model, optimizer, scheduler) == []
    assert "run.ckpt is not a PyTorch checkpoint" in caplog.text and "afresh" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_input_names_the_file_and_the_stage_that_rebuilds_it(
    project_copy: Path, damage: str
) -> None:
    run_session(project_copy, ["data_processing"], TINY_RUN)
    splits = project_copy / "data/05_model_input/splits.pt"
    content = splits.read_bytes()
    splits.write_bytes(content[: len(content) // 3] if damage == "truncated" else b"not torch")
    with pytest.raises(DamagedInputError) as stopped:
        run_session(project_copy, ["teacher"], TINY_RUN)
    message = str(stopped.value)
    assert message.startswith("data/05_model_input/splits.pt (splits) cannot be read")
    assert "`kedro run --pipelines data_processing`" in message and "\n" not in message
    assert stopped.value.__suppress_context__  # no traceback from inside torch or zipfile
    assert not (project_copy / "data/06_models/teacher.pt").exists()
