"""JSON, CSV, text and figure outputs are written whole or not at all: a save that fails half
way leaves the previous file as it was, and no temporary file behind."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml
from helpers import PROJECT_ROOT
from kedro.io.core import DatasetError
from kedro_datasets.json import JSONDataset

from compactkd.datasets import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicMatplotlibDataset,
    AtomicTextDataset,
)


class Unwritable:
    """Serialises to nothing: json.dump raises once it reaches it, mid-file."""


def test_each_dataset_saves_and_loads_what_kedro_datasets_does(tmp_path: Path) -> None:
    record = {"top1": 97.5, "models": ["student", "pruned"]}
    AtomicJSONDataset(filepath=str(tmp_path / "m.json")).save(record)
    assert JSONDataset(filepath=str(tmp_path / "m.json")).load() == record

    table = pd.DataFrame({"model": ["student", "pruned"], "top1": [77.1, 73.25]})
    csv = AtomicCSVDataset(filepath=str(tmp_path / "t.csv"))
    csv.save(table)
    pd.testing.assert_frame_equal(csv.load(), table)

    text = AtomicTextDataset(filepath=str(tmp_path / "r.md"))
    text.save("# report\n")
    assert text.load() == "# report\n"

    figure, axes = plt.subplots()
    axes.plot([1, 2], [3, 4])
    AtomicMatplotlibDataset(filepath=str(tmp_path / "f.png")).save(figure)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "m.json", "r.md", "t.csv"]


def test_a_save_that_fails_half_way_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    broken = {"top1": 97.5, "later": Unwritable()}

    plain = JSONDataset(filepath=str(path))
    plain.save({"top1": 90.0})
    with pytest.raises(DatasetError):
        plain.save(broken)
    half = path.read_text()
    assert half.startswith("{") and '"top1": 97.5' in half  # kedro-datasets: half a file
    with pytest.raises(json.JSONDecodeError):
        json.loads(half)

    atomic = AtomicJSONDataset(filepath=str(path))
    atomic.save({"top1": 90.0})
    with pytest.raises(DatasetError):
        atomic.save(broken)
    assert json.loads(path.read_text()) == {"top1": 90.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_every_file_output_of_the_catalog_is_written_atomically() -> None:
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())
    types = {entry["type"] for entry in catalog.values() if isinstance(entry, dict)}
    assert types <= {
        "MemoryDataset",
        "compactkd.datasets.AtomicCSVDataset",
        "compactkd.datasets.AtomicJSONDataset",
        "compactkd.datasets.AtomicMatplotlibDataset",
        "compactkd.datasets.AtomicTextDataset",
        "compactkd.datasets.BinaryFileDataset",
        "compactkd.datasets.TensorDictDataset",
        "compactkd.datasets.TorchModelDataset",
    }


def test_a_dataset_survives_pickling_for_parallel_runner_workers(tmp_path: Path) -> None:
    """ParallelRunner sends datasets to its worker processes pickled."""
    dataset = pickle.loads(pickle.dumps(AtomicJSONDataset(filepath=str(tmp_path / "m.json"))))
    dataset.save({"top1": 1.0})
    assert dataset.load() == {"top1": 1.0} and [p.name for p in tmp_path.iterdir()] == ["m.json"]
