"""Items 2, 4 and 5: the real pipeline, one ``kedro run --pipelines <stage>`` at a time.

Each stage runs as a child process in a fresh copy of the project, so its wall time and
peak resident memory (``ru_maxrss``, measured by ``peak_memory.py``) are its own. ``teacher`` and
``block_search`` can be rerun from scratch (their checkpoints deleted, or they would
resume) to repeat the search-against-teacher cost.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from bench_common import ROOT, data_root, dotlist, log

STAGES = ("data_processing", "teacher", "block_search", "distillation", "evaluation", "reporting")
SEARCHED = ("teacher", "block_search")  # the stages --search-repeats reruns
CIFAR10_RAW = Path("data/01_raw/cifar10")
PEAK_MEMORY = Path(__file__).with_name("peak_memory.py")  # starts each stage: see there


@dataclass(frozen=True)
class StageRun:
    """One child ``kedro run``: what ran, how long it took, its peak resident memory."""

    run: str
    stage: str
    command: str
    seconds: float
    peak_rss_mib: float
    log: str
    # From the stage's own outputs (block_search repeats only): the search's seconds,
    # the teacher's train_seconds and their ratio, as block_search_metrics.json says.
    search_metrics: dict[str, float] | None = None


def copy_project(destination: Path, source: Path = ROOT) -> Path:
    """The project's tracked and untracked, not ignored, files (so an empty ``data/``)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=source, capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (source / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, destination / name)
    return destination


def link_cifar10(project: Path, source: Path = ROOT) -> None:
    """Let the copy read the real project's CIFAR-10 images without copying them."""
    target = project / CIFAR10_RAW
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to((source / CIFAR10_RAW).resolve(), target_is_directory=True)


def kedro_command(stage: str, env: str | None, overrides: Mapping[str, Any]) -> list[str]:
    """``kedro run --pipelines <stage> [--env ...] [--params ...]`` as arguments."""
    command = ["kedro", "run", "--pipelines", stage]
    if env:
        command += ["--env", env]
    if overrides:
        command += ["--params", ",".join(dotlist(overrides))]
    return command


def run_stage(
    project: Path, run: str, stage: str, env: str | None, overrides: Mapping[str, Any], tag: str
) -> StageRun:
    """Run one stage as a child process; fail with the end of its log if it fails."""
    command = kedro_command(stage, env, overrides)
    log_path = project.parent / f"{project.name}-{tag}-{stage}.log"
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    peak_file = log_path.with_suffix(".peak_kib")
    with log_path.open("wb") as output:
        started = time.perf_counter()
        returncode = subprocess.call(
            [sys.executable, str(PEAK_MEMORY), str(peak_file), sys.executable, "-m", *command],
            cwd=project, stdout=output, stderr=subprocess.STDOUT, env=environment,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    if returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"`{shlex.join(command)}` failed ({returncode}):\n{tail}")
    peak_mib = int(peak_file.read_text()) / 1024
    log(f"{run} {stage} ({tag}): {seconds:.1f} s, peak RSS {peak_mib:.0f} MiB")
    metrics = search_metrics(data_root(project, env)) if stage == "block_search" else None
    return StageRun(run, stage, shlex.join(command), seconds, peak_mib, str(log_path), metrics)


def search_metrics(data: Path) -> dict[str, float]:
    """The block search's own seconds against the teacher's, from the stage's metrics file."""
    metrics = json.loads((data / "08_reporting/block_search_metrics.json").read_text())
    return {
        "search_seconds": metrics["seconds"],
        "teacher_train_seconds": metrics["teacher_train_seconds"],
        "overhead_vs_teacher": metrics["overhead_vs_teacher"],
    }


def run_pipeline(
    project: Path, run: str, env: str | None, overrides: Mapping[str, Any], search_repeats: int
) -> list[StageRun]:
    """Every stage in DAG order; ``teacher`` then ``block_search`` ``search_repeats`` times."""
    runs = []
    for stage in STAGES:
        if stage == "teacher":
            for repeat in range(search_repeats):
                # From scratch: a checkpoint left by the previous repeat would be resumed.
                checkpoints = data_root(project, env) / "06_models/checkpoints"
                shutil.rmtree(checkpoints, ignore_errors=True)
                for searched in SEARCHED:
                    runs.append(run_stage(project, run, searched, env, overrides, f"r{repeat + 1}"))
        elif stage not in SEARCHED:
            runs.append(run_stage(project, run, stage, env, overrides, "r1"))
    return runs


def sweep_table(data: Path) -> pd.DataFrame:
    """``sweep.csv`` of a finished run: every model at every budget."""
    return pd.read_csv(data / "08_reporting/sweep.csv")


def sweep_png(sweep: pd.DataFrame) -> bytes:
    """The run's accuracy-against-FLOPs figure (the report's own), as PNG bytes."""
    import matplotlib.pyplot as plt

    from compactkd.report import pareto_figure

    figure = pareto_figure(sweep)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
