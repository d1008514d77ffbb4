"""Model and tensor files: atomic writes, safe reads, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError

from compactkd.blocks.assembly import BlockChoice, Blueprint
from compactkd.blocks.candidates import interface_keeps
from compactkd.blocks.partition import partition_model
from compactkd.datasets import TensorDictDataset, TorchModelDataset
from compactkd.model_files import load_model, save_model
from compactkd.models import build_model
from compactkd.serialization import CheckpointError, atomic_save

SPEC = {"name": "resnet20", "num_classes": 4, "in_channels": 3}


def test_model_dataset_round_trips(tmp_path: Path) -> None:
    model = build_model(SPEC).eval()
    dataset = TorchModelDataset(filepath=str(tmp_path / "models" / "m.pt"))
    assert not dataset.exists()
    dataset.save(model)
    loaded = dataset.load().eval()
    assert loaded.spec == SPEC and type(loaded) is type(model)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m.pt"]  # no temp files left


def test_model_dataset_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_model(text)
    with pytest.raises(DatasetError, match="notes.pt is not a PyTorch checkpoint"):
        TorchModelDataset(filepath=str(text)).load()
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a compactkd model"):
        load_model(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_a_bare_state_dict_loads_with_its_spec(tmp_path: Path) -> None:
    model = build_model(SPEC)
    torch.save(model.state_dict(), tmp_path / "user.pt")
    loaded = load_model(tmp_path / "user.pt", spec=SPEC)
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "user.pt", spec={**SPEC, "name": "resnet32"})


def test_an_assembled_network_saves_and_loads_like_a_zoo_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = build_model(SPEC).eval()
    partition = partition_model(teacher, (3, 16, 16))
    keeps = interface_keeps([torch.rand(c) for c, _, _ in partition.interfaces], [1.0, 0.5])
    choices = [BlockChoice(b, "pruned", {"ratio": 0.5}, 0.5, 0.5) for b in partition.block_names]
    network = Blueprint(SPEC, (3, 16, 16), "stage", keeps, choices).build(teacher)
    save_model(network, tmp_path / "student.pt")
    loaded = load_model(tmp_path / "student.pt")
    assert loaded.blueprint.blocks == choices and not loaded.training
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(network(images), loaded(images))
    with pytest.raises(CheckpointError, match="neither a .spec nor a .blueprint"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
    assert not (tmp_path / "linear.pt").exists()


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "data.pt"
    atomic_save({"x": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        atomic_save({"x": lambda: None}, path)
    assert torch.equal(TensorDictDataset(filepath=str(path)).load()["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["data.pt"]
