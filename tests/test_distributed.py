"""Data-parallel training on torch.distributed: shards, and a real 2-process gloo run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN, cli_params, copy_project

from compactkd.data import make_loader
from compactkd.distributed import Shard

# The tiny run's first two stages (digits, 2 epochs): both runs land near 95 % on 360 test
# images (one image = 0.28 points). The shards see the same images per step but normalise
# BatchNorm over half a batch each, so the runs differ by a few images; 4 points is a wide
# margin for that, not for a bug.
ACCURACY_TOLERANCE = 4.0
TINY_TEACHER = cli_params(TINY_RUN, ["data_processing", "training", "teacher"])
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]


def test_shards_split_every_epoch_into_disjoint_equal_parts() -> None:
    orders = [Shard(rank, 2).order(11, seed=3) for rank in range(2)]
    assert [len(o) for o in orders] == [6, 6]  # padded to equal length, as DDP needs
    assert set(orders[0].tolist()) | set(orders[1].tolist()) == set(range(11))
    assert len(set(orders[0].tolist()) & set(orders[1].tolist())) <= 1  # only the padding
    assert not torch.equal(Shard(0, 2).order(11, seed=3), Shard(0, 2).order(11, seed=4))
    assert Shard(1, 4).batch_size(128) == 32 and Shard(0, 3).batch_size(128) == 43


def test_a_shard_loader_keeps_the_number_of_steps(digits_splits: dict) -> None:
    """Each rank takes its share of every batch, so an epoch has as many steps as alone."""
    alone = make_loader(digits_splits, "train", 64, augment=True)
    shard = make_loader(digits_splits, "train", 64, augment=True, shard=Shard(1, 2))
    assert len(shard) == len(alone)
    seen = sum(len(labels) for _, labels in shard.batches(torch.Generator().manual_seed(0)))
    assert seen == -(-alone.num_samples // 2)


def kedro(
    project: Path,
    *launcher: str,
    params: str,
    runner: str = "SequentialRunner",
    stages: str = "data_processing,teacher",
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``kedro run`` of ``stages``, started by ``launcher`` (nothing: plainly)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    # COLUMNS: Kedro's rich log lines unwrapped, so the test can read them.
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PATH": path, "COLUMNS": "300"}
    command = [*launcher, "kedro", "run", "--runner", runner, "--pipelines", stages]
    command += ["--params", params]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0 or not check, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def written_files(project: Path) -> dict[str, int]:
    return {
        str(path.relative_to(project)): path.stat().st_size
        for path in sorted((project / "data").rglob("*"))
        if path.is_file() and path.name != ".gitkeep"
    }


@pytest.mark.slow
def test_two_gloo_processes_train_the_teacher_like_one(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    kedro(project, params=TINY_TEACHER)
    single = json.loads((project / "data/08_reporting/teacher_metrics.json").read_text())
    files_alone = written_files(project)
    for path in (project / "data/06_models").rglob("*.pt"):
        path.unlink()  # checkpoint and teacher: the distributed run starts afresh

    done = kedro(project, sys.executable, *TORCHRUN, params=TINY_TEACHER)
    both = json.loads((project / "data/08_reporting/teacher_metrics.json").read_text())

    assert both["processes"] == 2 and single["processes"] == 1
    assert both["epochs"] == single["epochs"] == TINY_RUN["teacher"]["training"]["epochs"] == 2
    assert abs(both["test_top1"] - single["test_top1"]) <= ACCURACY_TOLERANCE
    assert both["test_top1"] > 80  # it learnt, far from chance (10 %)
    # One set of outputs: the same files as the single-process run, rank 1 wrote none.
    assert set(written_files(project)) == set(files_alone)
    logs = done.stdout + done.stderr
    assert "rank 1 of 2: outputs stay in memory" in logs
    assert logs.count("Saving data to teacher_metrics (AtomicJSONDataset)") == 1


@pytest.mark.slow
def test_parallel_runner_workers_train_with_one_thread_each(tmp_path: Path) -> None:
    """Under ParallelRunner each node runs in a worker process, as many as cores: each trains
    with one thread, where a plain run uses every core's."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: one thread either way")
    project = copy_project(tmp_path / "project")
    # data_processing hands its raw dataset to the next node in memory: refused at once.
    refused = kedro(project, params=TINY_TEACHER, runner="ParallelRunner", check=False)
    assert refused.returncode != 0 and "raw_dataset" in refused.stdout + refused.stderr
    assert not (project / "data/05_model_input/splits.pt").exists()

    kedro(project, params=TINY_TEACHER, stages="data_processing")
    kedro(project, params=TINY_TEACHER, runner="ParallelRunner", stages="teacher")
    metrics = json.loads((project / "data/08_reporting/teacher_metrics.json").read_text())
    assert metrics["threads"] == 1 and metrics["processes"] == 1
    assert metrics["test_top1"] > 80
