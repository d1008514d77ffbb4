"""``dvc.yaml`` is generated from the Kedro pipelines and catalog, and DVC reruns what changed.

Fast: the committed ``dvc.yaml`` is the generated one, and its stages list the code,
parameters and files each pipeline uses. Slow, in a copy of the repository: ``dvc repro``
runs every stage once, then nothing, then what an edit of the code reaches; parameter
edits show in ``dvc status``; ``dvc exp run -S`` runs an experiment that ``dvc exp show``
and ``dvc metrics diff`` compare.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import PROJECT_ROOT, TINY_RUN

from compactkd.dvc_stages import check_apart, dvc_file, dvc_stages, environments, render

RUNTIME = "conf/base/parameters_runtime.yml"
SEARCH = "conf/base/parameters_block_search.yml"
DISTRIBUTED = "src/compactkd/distributed.py"
FRAMEWORK = {
    "conf/base/catalog.yml",
    "src/compactkd/hooks.py",
    "src/compactkd/pipeline_registry.py",
    "src/compactkd/pipelines/sweep.py",
    "src/compactkd/settings.py",
}


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return dvc_stages(PROJECT_ROOT)


@pytest.fixture(scope="module")
def kedro_run() -> tuple[Any, dict[str, Any]]:
    """The catalog and the pipelines of a run of ``conf/base``, as Kedro builds them."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(PROJECT_ROOT, env="base") as session:
        catalog = session.load_context().catalog
    return catalog, {name: pipe for name, pipe in pipelines.items() if name != "__default__"}


def test_committed_dvc_yaml_is_the_generated_one(generated: dict[str, Any]) -> None:
    committed = (PROJECT_ROOT / "dvc.yaml").read_text()
    assert committed == render(generated), "dvc.yaml is out of date: run `make dvc`"


def test_parameter_files_hold_no_interpolation() -> None:
    """``dvc exp run -S`` rewrites a parameter file through OmegaConf, which fails on Kedro's
    resolvers (``${globals:...}``): paths that follow the environment live in the catalog."""
    files = sorted((PROJECT_ROOT / "conf").glob("*/parameters*.yml"))
    assert files and not [f.name for f in files if "${" in f.read_text()]


def test_every_environment_has_its_own_stages_and_outputs(generated: dict[str, Any]) -> None:
    envs = environments(PROJECT_ROOT)
    assert envs and "base" not in envs and "local" not in envs
    contents = {"base": generated}
    for env in envs:
        content = contents[env] = dvc_stages(PROJECT_ROOT, env)
        path = dvc_file(PROJECT_ROOT, env)
        assert path.read_text() == render(content), f"{path} is out of date: run `make dvc`"
        assert list(content["stages"]) == list(generated["stages"])
        for name, stage in content["stages"].items():
            assert stage["cmd"] == f"kedro run --env {env} --pipelines {name}"
            assert stage["wdir"] == "../.."  # conf/<env>/ -> the project's root
            assert all(out.startswith(f"data/{env}/") for out in outputs(stage)), name
            # The environment's override of a stage's settings is tracked with the base's.
            base_files = parameters(generated["stages"][name])
            own = {f.replace(f"conf/{env}/", "conf/base/") for f in parameters(stage)}
            assert own == set(base_files), name
        assert f"conf/{env}/parameters_teacher.yml" in parameters(content["stages"]["teacher"])
    check_apart(contents)  # no file written by two environments
    clash = {**contents, "copy": generated}
    with pytest.raises(ValueError, match="both write data/.*own data_root"):
        check_apart(clash)


def test_each_stage_lists_its_code_parameters_and_files(
    generated: dict[str, Any], kedro_run: tuple[Any, dict[str, Any]]
) -> None:
    catalog, pipelines = kedro_run
    stages = generated["stages"]
    assert list(stages) == list(pipelines)
    for name, stage in stages.items():
        deps, params = set(stage["deps"]), parameters(stage)
        assert stage["cmd"] == f"kedro run --pipelines {name}"
        assert deps >= FRAMEWORK, name
        assert "runtime" in params[RUNTIME], name
        # Every file the stage reads is a dependency; every file it writes an out or a metric.
        assert files(catalog, pipelines[name].inputs()) <= deps, name
        assert files(catalog, pipelines[name].all_outputs()) == outputs(stage), name
    assert DISTRIBUTED in stages["teacher"]["deps"]  # imported by data.py and training.py
    assert "src/compactkd/report.py" in stages["reporting"]["deps"]
    teacher_code = [d for d in stages["teacher"]["deps"] if d.startswith("src/")]
    assert not [d for d in teacher_code if "report" in d or "pipelines/distillation" in d]
    assert "data/01_raw" in stages["data_processing"]["deps"]
    for name in ("distillation", "evaluation"):  # one node per budget
        assert {"block_search", "block_search.budgets"} & set(parameters(stages[name])[SEARCH])
    metrics = {stage: set(stages[stage].get("metrics", [])) for stage in stages}
    assert metrics["evaluation"] == {"data/08_reporting/metrics.json"}
    assert metrics["teacher"] == {"data/08_reporting/teacher_metrics.json"}
    assert metrics["block_search"] == {"data/08_reporting/block_search_metrics.json"}
    plots = {next(iter(p)) if isinstance(p, dict) else p for p in generated["plots"]}
    assert plots == {
        "teacher_accuracy", "teacher_loss", "finetune_accuracy", "sweep_accuracy",
        "data/08_reporting/pareto.png", "data/08_reporting/curves.png",
    }  # fmt: skip


def parameters(stage: dict[str, Any]) -> dict[str, list[str]]:
    return {file: keys for entry in stage["params"] for file, keys in entry.items()}


def outputs(stage: dict[str, Any]) -> set[str]:
    return {*stage.get("outs", []), *stage.get("metrics", [])}


def files(catalog: Any, names: set[str]) -> set[str]:
    """The project-relative files of these datasets, as Kedro's catalog resolves them."""
    found = set()
    for name in names:
        dataset = catalog.get(name)
        path = dataset._describe().get("filepath") if dataset is not None else None
        if path:
            found.add(Path(path).relative_to(PROJECT_ROOT).as_posix())
    return found


# ---- DVC in a copy of the repository


def run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        # dvc runs `kedro`, which must come from this interpreter's environment ...
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # ... and import the copy's code.
        "PYTHONPATH": os.pathsep.join([str(project / "src"), os.environ.get("PYTHONPATH", "")]),
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=env, capture_output=True, text=True
    )


def dvc(project: Path, *args: str) -> str:
    done = run(project, "-m", "dvc", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ran(output: str) -> list[str]:
    """The stages a ``dvc repro`` ran, by name (without the ``conf/<env>/dvc.yaml:`` of an
    environment's)."""
    return re.findall(r"Running stage '(?:[^']*:)?([^':]+)'", output)


def changed(project: Path, stages: str = "dvc.yaml") -> dict[str, Any]:
    """``dvc status``: the stages (of the base environment's ``dvc.yaml``, unless another file
    is named) whose own code, parameters or inputs changed."""
    return json.loads(dvc(project, "status", "--json", stages))


def downstream(stages: dict[str, Any], names: set[str]) -> set[str]:
    """The stages that read what ``names`` write, directly or not."""
    found = set(names)
    while True:
        written = set().union(*(outputs(stages[n]) for n in found))
        more = {n for n, stage in stages.items() if written & set(stage["deps"])} - found
        if not more:
            return found - names
        found |= more


def set_param(path: Path, key: str, value: str) -> None:
    text, count = re.subn(rf"(?m)^(\s+{key}:) .*$", rf"\1 {value}", path.read_text(), count=1)
    assert count == 1, key
    path.write_text(text)


def git(project: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    done = subprocess.run(["git", *identity, *args], cwd=project, check=True, capture_output=True)
    return done.stdout.decode().strip()


def set_single_budget(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    params["block_search"]["budgets"] = [{"flops": 0.5, "params": 0.2}]
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_repro_runs_each_stage_once_and_reruns_only_what_changed(project_copy: Path) -> None:
    conf = project_copy / "conf" / "base"
    set_single_budget(conf / "parameters_block_search.yml")
    set_param(conf / "parameters_data_processing.yml", "dataset", "digits")
    for stage in ("teacher", "block_search", "distillation"):
        set_param(conf / f"parameters_{stage}.yml", "epochs", "1")
    for parameters in ("training", "block_search"):  # the shared trainer, the block search's
        set_param(conf / f"parameters_{parameters}.yml", "device", "cpu")
    set_param(conf / "parameters_evaluation.yml", "latency_repeats", "3")

    # One budget: no budget_2 namespace, so dvc.yaml must be generated again.
    check = run(project_copy, "-m", "compactkd.dvc_stages", "--check")
    assert check.returncode == 1 and "-      - data/06_models/sweep/budget_2/" in check.stdout
    assert run(project_copy, "-m", "compactkd.dvc_stages").returncode == 0
    stages = yaml.safe_load((project_copy / "dvc.yaml").read_text())["stages"]
    assert "budget_2" not in (project_copy / "dvc.yaml").read_text()

    assert ran(dvc(project_copy, "repro")) == list(stages)  # each stage once, in order
    assert (project_copy / "data" / "08_reporting" / "teacher_metrics.json").is_file()
    assert (project_copy / "dvc.lock").is_file()
    second = dvc(project_copy, "repro")
    assert ran(second) == [] and "up to date" in second

    # Code: the stages that import distributed.py (their deps say which) rerun, and at most
    # what reads their outputs; data.py imports it, so data_processing is one of them.
    touched = {name for name, stage in stages.items() if DISTRIBUTED in stage["deps"]}
    assert {"data_processing", "teacher"} <= touched
    with (project_copy / DISTRIBUTED).open("a") as source:
        source.write("# an edit\n")
    third = ran(dvc(project_copy, "repro"))
    assert len(third) == len(set(third)) and touched <= set(third)
    assert set(third) <= touched | downstream(stages, touched)
    assert ran(dvc(project_copy, "repro")) == []

    # Parameters: `dvc status` names the stages whose parameters changed, and only them.
    runtime, teacher = conf / "parameters_runtime.yml", conf / "parameters_teacher.yml"
    saved = {path: path.read_text() for path in (runtime, teacher)}
    set_param(runtime, "threads", "1")
    status = changed(project_copy)
    assert set(status) == set(stages) and all("runtime" in str(status[n]) for n in stages)
    runtime.write_text(saved[runtime])
    set_param(teacher, "epochs", "2")  # the teacher's own key over the shared trainer
    assert set(changed(project_copy)) == {"teacher"}
    teacher.write_text(saved[teacher])
    assert changed(project_copy) == {}
    assert "test_top1" in dvc(project_copy, "metrics", "show")

    # An experiment on a distillation setting reruns distillation and what follows, nothing
    # upstream, and is compared with the committed baseline run.
    git(project_copy, "add", "-A")
    git(project_copy, "commit", "-qm", "baseline run")
    branch = git(project_copy, "rev-parse", "--abbrev-ref", "HEAD")

    # A remote on local disk, used as a team would: push the run; a fresh clone pulls it,
    # reruns nothing and shows the pushed figures; pulling one stage skips retraining it.
    remote = project_copy.parent / "dvc-remote"
    dvc(project_copy, "remote", "add", "-d", "shared", str(remote))
    git(project_copy, "commit", "-qam", "the team's DVC remote")
    assert "pushed" in dvc(project_copy, "push")
    clone = project_copy.parent / "clone"
    git(project_copy.parent, "clone", "-q", str(project_copy), str(clone))
    dvc(clone, "pull", "dvc.yaml")  # the default run's; the other environments' have no run
    assert ran(dvc(clone, "repro")) == [] and changed(clone) == {}
    metrics = "data/08_reporting/metrics.json"
    assert dvc(clone, "metrics", "show", "--json") == dvc(project_copy, "metrics", "show", "--json")
    assert (clone / metrics).read_text() == (project_copy / metrics).read_text()
    partial = project_copy.parent / "partial"
    git(project_copy.parent, "clone", "-q", str(project_copy), str(partial))
    dvc(partial, "pull", "data_processing", "teacher")  # the trained teacher and its data
    assert (partial / "data/06_models/teacher.pt").is_file()
    assert not (partial / "data/06_models/candidate_weights.pt").exists()
    # `dvc repro` would start at the search: only the later stages are out of date.
    assert set(changed(partial)) == set(stages) - {"data_processing", "teacher"}
    alpha = "conf/base/parameters_distillation.yml:distillation.kd.alpha"
    experiment = dvc(project_copy, "exp", "run", "-n", "alpha07", "-S", f"{alpha}=0.7")
    assert ran(experiment) == ["distillation", "evaluation", "reporting"]
    rows = list(csv.DictReader(io.StringIO(dvc(project_copy, "exp", "show", "--csv"))))
    column = next(c for c in rows[0] if c.endswith("distillation.kd.alpha"))
    by_name = {row["Experiment"] or row["rev"]: row for row in rows}
    assert {"workspace", branch, "alpha07"} <= set(by_name), list(by_name)
    assert by_name[branch][column] == "0.5" and by_name["alpha07"][column] == "0.7"
    diff = json.loads(dvc(project_copy, "metrics", "diff", "--all", "--json"))
    assert "data/08_reporting/metrics.json" in diff

    # The history and sweep plots render, with their axis labels, and the report's images.
    dvc(project_copy, "plots", "show", "-o", "plots")
    page = (project_copy / "plots" / "index.html").read_text()
    for label in (
        "FLOPs (fraction of the teacher",
        "test top-1 (%)",
        "validation accuracy (%)",
        "cross-entropy loss",
    ):
        assert label in page
    assert "pareto.png" in page and "curves.png" in page


def write_environment(project: Path, env: str, params: dict[str, Any]) -> None:
    """``conf/<env>/``: its own data root and these settings, one file per stage."""
    conf = project / "conf" / env
    conf.mkdir()
    (conf / "globals.yml").write_text(f"data_root: data/{env}\n")
    for section, value in params.items():
        (conf / f"parameters_{section}.yml").write_text(yaml.safe_dump({section: value}))


@pytest.mark.slow
def test_environments_reproduce_through_their_own_stages_apart(project_copy: Path) -> None:
    """Two tiny environments: each reproduces through ``conf/<env>/dvc.yaml`` into its own
    ``data/<env>/``; running one never makes the other rerun; an experiment sets one's
    parameter with ``dvc exp run -S``."""
    tiny = {
        **TINY_RUN,
        "teacher": {"training": {"epochs": 1}},
        "block_search": {**TINY_RUN["block_search"], "budgets": [{"flops": 0.5, "params": 0.2}]},
        "distillation": {**TINY_RUN["distillation"], "seeds": 1},
    }
    other = {**tiny, "distillation": {**tiny["distillation"], "inherited_lr": 0.01}}
    write_environment(project_copy, "tiny", tiny)
    write_environment(project_copy, "other", other)
    assert run(project_copy, "-m", "compactkd.dvc_stages").returncode == 0
    stages = yaml.safe_load((project_copy / "conf/tiny/dvc.yaml").read_text())["stages"]
    tiny_file, other_file = "conf/tiny/dvc.yaml", "conf/other/dvc.yaml"

    assert ran(dvc(project_copy, "repro", tiny_file)) == list(stages)
    metrics = project_copy / "data/tiny/08_reporting/metrics.json"
    first = metrics.read_text()
    assert not (project_copy / "data/08_reporting/metrics.json").exists()  # the base's place
    assert ran(dvc(project_copy, "repro", other_file)) == list(stages)
    assert json.loads((project_copy / "data/other/08_reporting/metrics.json").read_text())
    # Switching back and forth reruns nothing and leaves each one's outputs as they were.
    assert ran(dvc(project_copy, "repro", tiny_file)) == []
    assert ran(dvc(project_copy, "repro", other_file)) == []
    assert metrics.read_text() == first
    assert changed(project_copy, tiny_file) == {} and changed(project_copy, other_file) == {}

    # An environment's own setting reaches only its stages, from the right one on.
    override_name = "conf/tiny/parameters_distillation.yml"
    override = project_copy / override_name
    saved = override.read_text()
    set_param(override, "recalibration_batches", "3")
    readers = {n for n, st in stages.items() if override_name in parameters(st)}
    assert "distillation" in readers and "teacher" not in readers
    assert {key.rpartition(":")[2] for key in changed(project_copy, tiny_file)} == readers
    assert changed(project_copy, other_file) == {}
    override.write_text(saved)

    git(project_copy, "add", "-A")
    git(project_copy, "commit", "-qm", "two environments run")
    setting = "conf/tiny/parameters_distillation.yml:distillation.recalibration_batches"
    experiment = dvc(project_copy, "exp", "run", tiny_file, "-n", "recal3", "-S", f"{setting}=3")
    assert ran(experiment) == ["distillation", "evaluation", "reporting"]
    rows = list(csv.DictReader(io.StringIO(dvc(project_copy, "exp", "show", "--csv"))))
    # exp show names the setting by its file and key: the environment's, not the base's.
    assert {row["Experiment"]: row[setting] for row in rows if row["Experiment"]} == {"recal3": "3"}
