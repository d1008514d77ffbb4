"""Kill a real ``kedro run`` at chosen points, run it again, and compare with a run that was
never interrupted (``tests/test_faults.py`` runs a few points, ``benchmarks/faults.py`` all).

A kill point waits for a line of the run's log (a node starting, an epoch ending, an output
being saved), then SIGKILLs the whole process group after a delay: no handler, no clean-up,
as a power cut or the OOM killer would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from compactkd.serialization import safe_load


@dataclass(frozen=True)
class KillPoint:
    name: str
    trigger: str  # a regular expression on the log
    delay: float = 0.0  # seconds between the trigger and the kill


def configure(project: Path, params: dict[str, Any]) -> None:
    """Make ``params`` the project's local parameters, one thread: every run alike."""
    local = {**params, "runtime": {"threads": 1}}
    (project / "conf/local/parameters_faults.yml").write_text(yaml.safe_dump(local))


def kedro_run(project: Path, pipelines: str | None = None, kill: KillPoint | None = None) -> bool:
    """``kedro run`` in ``project``; True if it was killed at ``kill`` (False: it ended).
    Raises if a run that was not killed fails."""
    command = [sys.executable, "-m", "kedro", "run"]
    if pipelines:
        command += ["--pipelines", pipelines]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    log = []
    for line in process.stdout:
        log.append(line)
        if kill is not None and re.search(kill.trigger, line):
            time.sleep(kill.delay)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
    if process.wait() != 0:
        raise RuntimeError(f"kedro run failed:\n{''.join(log[-40:])}")
    return False


def temporaries(project: Path) -> list[str]:
    """Temporary files of saves a kill interrupted (the next run removes them)."""
    return sorted(p.name for p in (project / "data").rglob(".*.tmp"))


def unsound_outputs(project: Path) -> list[str]:
    """Every output of the run that cannot be read whole."""
    problems = []
    for path in sorted((project / "data").rglob("*")):
        if not path.is_file() or path.name in (".gitkeep", ".run.lock"):
            continue
        if path.name.endswith(".tmp"):
            continue  # not an output: see temporaries()
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".csv":
                pd.read_csv(path)
            elif path.suffix in (".pt", ".ckpt"):
                safe_load(path)
        except Exception as error:  # what a reader of the file would meet
            problems.append(f"{path}: {type(error).__name__}: {error}")
    return problems


def figures(project: Path) -> dict[str, Any]:
    """What a run must reproduce: every model's accuracy on test and the chosen structure
    (latency is the machine's, not the run's)."""
    reporting = project / "data/08_reporting"
    result: dict[str, Any] = {}
    teacher = reporting / "teacher_metrics.json"
    if teacher.exists():
        result["teacher"] = json.loads(teacher.read_text())["test_top1"]
    metrics = reporting / "metrics.json"
    if metrics.exists():
        for name, row in json.loads(metrics.read_text()).items():
            if name != "provenance":  # when and where: differs from run to run
                result[name] = [row["top1"], row.get("top1_mean"), row["flops"], row["params"]]
    search = reporting / "block_search_metrics.json"
    if search.exists():
        result["chosen"] = json.loads(search.read_text())["chosen"]
    for name in ("teacher.pt", "finetuned/student.pt"):
        path = project / "data/06_models" / name
        if path.exists():
            result[f"{name} weights"] = _digest(safe_load(path))
    return result


def _digest(content: Any) -> str:
    """A hash of every tensor in a saved package: equal only for bit-identical weights."""
    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(value[key])
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(content)
    return digest.hexdigest()
