"""Provenance on every figure: each metrics file of a run names its commit, environment,
parameters, software and machine, and the report shows them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import PROJECT_ROOT

from compactkd.provenance import parameters_hash, run_provenance


def git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True).stdout


def test_the_record_names_the_commit_and_whether_the_tree_had_changes(tmp_path: Path) -> None:
    repo, plain = tmp_path / "repo", tmp_path / "plain"
    repo.mkdir()
    plain.mkdir()
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    params = {"training": {"epochs": 3}}
    record = run_provenance(repo, "cifar10", params)
    assert record["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert record["git_dirty"] is False and record["kedro_env"] == "cifar10"
    assert torch.__version__.startswith(record["versions"]["torch"])
    assert record["threads"] == torch.get_num_threads() and record["device"].startswith("cpu")
    (repo / "code.py").write_text("x = 2\n")
    changed = run_provenance(repo, None, params)
    assert changed["git_dirty"] is True and changed["kedro_env"] == "local"
    assert run_provenance(plain, None, params)["git_commit"] is None  # no repository


def test_the_parameters_hash_follows_the_settings_not_their_order() -> None:
    a = {"training": {"epochs": 3, "lr": 0.1}, "seed": 0}
    b = {"seed": 0, "training": {"lr": 0.1, "epochs": 3}}
    assert parameters_hash(a) == parameters_hash(b)
    assert parameters_hash(a) != parameters_hash({**a, "seed": 1})


@pytest.mark.slow
def test_every_metrics_file_of_a_run_carries_one_record(finished_run: Path) -> None:
    reporting = finished_run / "data/08_reporting"
    records = [
        json.loads((reporting / name).read_text())["provenance"]
        for name in ("teacher_metrics.json", "block_search_metrics.json", "metrics.json")
    ]
    assert records[0] == records[1] == records[2]  # one run, one record
    record = records[0]
    assert record["git_commit"] == git(finished_run, "rev-parse", "HEAD").strip()
    assert record["kedro_env"] == "local" and len(record["parameters_sha256"]) == 64
    assert {"torch", "torchvision", "kedro", "dvc"} <= set(record["versions"])
    html = (reporting / "report.html").read_text()
    assert f"commit {record['git_commit'][:12]}" in html
    assert record["parameters_sha256"][:12] in html and record["date"] in html


RECORD_KEYS = {"git_commit", "git_dirty", "kedro_env", "parameters_sha256", "versions", "device",
               "threads", "date"}  # fmt: skip
BENCHMARK_FILES = sorted((PROJECT_ROOT / "benchmarks").glob("*.json"))


@pytest.mark.parametrize("path", BENCHMARK_FILES, ids=lambda path: path.name)
def test_every_benchmark_figure_carries_its_provenance(path: Path) -> None:
    """A benchmark's JSON names the commit, environment, settings, software and machine of its
    figures. A file measured before runs recorded this says where its record came from
    (``reconstructed``) and may leave unknown fields empty; any other has them all."""
    record = json.loads(path.read_text()).get("provenance")
    assert isinstance(record, dict), f"{path.name}: no provenance (regenerate it with its script)"
    assert set(record) >= RECORD_KEYS, f"{path.name}: missing {RECORD_KEYS - set(record)}"
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"] or ""), path.name
    assert record["device"] and record["date"] and record["versions"]["torch"], path.name
    reconstructed = record.get("reconstructed")
    if reconstructed is None:
        assert all(record[key] is not None for key in RECORD_KEYS), path.name
    else:
        assert isinstance(reconstructed, str) and len(reconstructed) > 40, path.name


def test_benchmark_files_are_found() -> None:
    names = {path.name for path in BENCHMARK_FILES}
    assert {"cifar10.json", "results.json", "reliability.json"} <= names
