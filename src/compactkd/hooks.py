"""Kedro hooks: the sweep follows the run's budgets; a stage run too early says what to run;
every node ends with a one-line summary of what it produced and how long it took."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node

from compactkd.config import is_number

logger = logging.getLogger(__name__)


class BudgetSweepHooks:
    """Tells the registry how many budgets this run sweeps (environment and --params included).

    Kedro loads the pipelines lazily, after the context is created, so the namespaces of
    the sweep can follow ``block_search.budgets`` as the run resolved it.
    """

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        from compactkd import pipeline_registry  # lazily: it imports every stage (and torch)

        # The loader's parameters (runtime ones merged), not ``context.params``: that loads the
        # pipelines to validate them, before they know the budgets, and the registry's own
        # config loader would then take over the ``globals`` resolver (OmegaConf keeps one).
        parameters = context.config_loader["parameters"]
        pipeline_registry.use_budgets(parameters["block_search"]["budgets"])


_WORKER_OF = "COMPACTKD_PARALLEL_RUN_PID"  # set by a ParallelRunner run's main process


class RuntimeHooks:
    """Threads from ``runtime.threads`` (or the machine); torchrun's process group.

    Started by ``torchrun --nproc_per_node N -m kedro run ...``, every process joins the
    group and runs the pipeline, training its share of each batch; only rank 0 writes:
    the other ranks keep what the run produces in memory.

    Under ``kedro run --runner ParallelRunner`` every node runs in a worker process of its
    own, as many at once as there are cores: each worker then trains with one thread, not
    with the run's (which would put several threads on every core).
    """

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        import torch  # lazily, as every torch import here: `kedro --help` stays quick

        from compactkd import distributed

        torch.set_num_threads(context.params["runtime"]["threads"] or distributed.default_threads())
        distributed.start()

    @hook_impl
    def before_node_run(self) -> None:
        if os.environ.get(_WORKER_OF) not in (None, str(os.getpid())):  # a ParallelRunner worker
            import torch

            torch.set_num_threads(1)

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        from compactkd import distributed

        if "ParallelRunner" in str(run_params.get("runner")):
            _check_parallel(pipeline, catalog)
            os.environ[_WORKER_OF] = str(os.getpid())  # workers, forked or spawned, inherit it
        shard = distributed.current()
        if shard.rank == 0:
            return
        logger.info("rank %d of %d: outputs stay in memory; rank 0 writes them",
                    shard.rank, shard.world_size)  # fmt: skip
        for name in pipeline.all_outputs():
            catalog[name] = MemoryDataset(copy_mode="assign")

    @hook_impl
    def after_pipeline_run(self) -> None:
        _end_run()

    @hook_impl
    def on_pipeline_error(self) -> None:
        _end_run()


def _check_parallel(pipeline: Pipeline, catalog: Any) -> None:
    """Refuse, before any work, what ParallelRunner would break: a dataset the catalog keeps
    in one process's memory (``MemoryDataset``) passed from one node to another."""
    passed = pipeline.all_outputs() & pipeline.all_inputs()
    in_memory = sorted(n for n in passed if type(catalog.get(n)) is MemoryDataset)
    if in_memory:
        raise ValueError(
            "ParallelRunner runs every node in its own process, but the in-memory dataset(s) "
            f"{', '.join(in_memory)} pass from one node to another: run those stages with the "
            "default runner (e.g. `kedro run --pipelines data_processing,teacher,block_search`, "
            "then `kedro run --pipelines distillation --runner ParallelRunner`)"
        )


def _end_run() -> None:
    from compactkd import distributed

    distributed.stop()
    os.environ.pop(_WORKER_OF, None)  # later processes started from this one are not workers


class RunLockHooks:
    """One run at a time per project (:mod:`compactkd.run_lock`): a second ``kedro run``, or
    a ``dvc repro`` stage beside a run, stops before any work, naming the running one.

    Its ``before_pipeline_run`` comes after the other hooks' (``trylast``): a run that
    another hook stops never takes the lock. Under torchrun only rank 0, the one that
    writes, holds it.
    """

    def __init__(self) -> None:
        self._lock: Any = None

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        from compactkd import distributed
        from compactkd.run_lock import RunLock
        from compactkd.serialization import remove_temporaries

        self._release()  # one this process kept after a failed hook: it is no longer running
        if distributed.current().rank != 0:
            return
        lock = RunLock(run_params["project_path"])
        lock.acquire()
        self._lock = lock
        # Sole writer now: what a killed run's interrupted saves left can go.
        stale = remove_temporaries(Path(run_params["project_path"]) / "data")
        if stale:
            logger.info("removed %d temporary file(s) of an interrupted save: %s",
                        len(stale), ", ".join(p.name for p in stale))  # fmt: skip

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class ParameterHooks:
    """Every stage's parameters checked before the run starts (:mod:`compactkd.validation`)."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, catalog: Any) -> None:
        from compactkd.validation import check_parameters

        check_parameters(catalog.load("parameters"))


class MissingInputsHooks:
    """A stage run before the stage it needs fails at once, naming the stage to run first."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline: Pipeline, catalog: Any) -> None:
        from kedro.framework.project import pipelines

        missing = [
            name
            for name in sorted(pipeline.inputs())
            if not name.startswith("params:") and name != "parameters" and not catalog.exists(name)
        ]
        if not missing:
            return
        producers = {
            name: stage
            for stage, stages in pipelines.items()
            if stage != "__default__"
            for name in stages.all_outputs()
        }
        needs = sorted({producers.get(name, "?") for name in missing})
        raise FileNotFoundError(
            f"{', '.join(missing)} not found: run `kedro run --pipelines {','.join(needs)}` "
            f"first (or `kedro run` for every stage)"
        )


class DamagedInputError(RuntimeError):
    """A stage's input file exists but cannot be read: what to run to rebuild it."""


class DamagedInputHooks:
    """A truncated or foreign input file (``teacher.pt``, ``splits.pt``, a JSON spec) stops
    the run with one line naming the file and the stage that rebuilds it, instead of a
    traceback from inside torch, zipfile or json."""

    @hook_impl
    def on_pipeline_error(
        self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
    ) -> None:
        from kedro.framework.project import pipelines

        messages = [str(e) for e in _chain(error)]
        for name in sorted(pipeline.inputs()):
            path = _filepath(catalog, name)
            if path is None or not any(path in message for message in messages):
                continue
            if Path(path).is_relative_to(run_params["project_path"]):
                path = str(Path(path).relative_to(run_params["project_path"]))
            stage = next(
                (s for s, p in pipelines.items() if s != "__default__" and name in p.all_outputs()),
                None,
            )
            fix = f"`kedro run --pipelines {stage}`" if stage else "the command that wrote it"
            reason = messages[-1].splitlines()[0] if messages else type(error).__name__
            raise DamagedInputError(
                f"{path} ({name}) cannot be read ({reason}): rebuild it with {fix}, or delete "
                "it and run again"
            ) from None


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        context = None if error.__suppress_context__ else error.__context__
        error = error.__cause__ or context
    return chain


def _filepath(catalog: Any, name: str) -> str | None:
    try:
        description = catalog.get(name)._describe()
    except Exception:  # params, memory datasets and anything without a file
        return None
    path = description.get("filepath") if isinstance(description, dict) else None
    return str(path) if path else None


class ProvenanceHooks:
    """Every DVC metrics file of a run (catalog ``metadata: {dvc: metrics}``) carries the run's
    record under ``provenance`` (:mod:`compactkd.provenance`): commit, environment,
    parameters hash, package versions, device, threads and date.

    It is added to the node's output after the node ran and before Kedro saves it, so the
    nodes stay free of it. A ParallelRunner worker started by spawning (not forking) has no
    record and adds none.
    """

    def __init__(self) -> None:
        self._record: dict[str, Any] | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        from compactkd.provenance import run_provenance

        params = catalog.load("parameters")
        self._record = run_provenance(run_params["project_path"], run_params["env"], params)

    @hook_impl
    def after_node_run(self, catalog: Any, outputs: dict[str, Any]) -> None:
        if self._record is None:
            return
        for name, value in outputs.items():
            if isinstance(value, dict) and _is_metric(catalog, name):
                value["provenance"] = self._record


def _is_metric(catalog: Any, name: str) -> bool:
    try:
        metadata = getattr(catalog.get(name), "metadata", None) or {}
    except Exception:  # a name the catalog resolves to nothing with metadata
        return False
    return isinstance(metadata, dict) and metadata.get("dvc") == "metrics"


class NodeSummaryHooks:
    """Logs ``<node> done in <s>: <output> (<what it holds>), ...`` when a node ends."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        produced = ", ".join(f"{name}{describe(value)}" for name, value in outputs.items())
        logger.info("%s done in %.1f s: %s", node.name, seconds, produced or "no outputs")


def describe(value: Any) -> str:
    """A few words on an output: a model's size, a table's rows, a metric's headline figure."""
    if hasattr(value, "parameters") and callable(value.parameters):
        return f" ({sum(p.numel() for p in value.parameters()):,} params)"
    if hasattr(value, "shape") and hasattr(value, "columns"):
        return f" ({len(value)} rows)"
    if isinstance(value, dict):
        # Summaries of a whole comparison quote the student.
        prefix, figures = ("student ", value["student"]) if "student" in value else ("", value)
        headline = [
            f"{prefix}{key} {figures[key]:.4g}"
            for key in HEADLINE_KEYS
            if isinstance(figures, dict) and is_number(figures.get(key))
        ]
        return f" ({', '.join(headline[:2])})" if headline else ""
    return ""


# Metric keys worth quoting in a node's summary, most telling first.
HEADLINE_KEYS = ("test_top1", "val_top1", "top1", "flops_reduction", "params_reduction", "seconds")
