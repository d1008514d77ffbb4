"""Kedro hooks: the sweep follows the run's budgets; a stage run too early says what to run."""

from __future__ import annotations

from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline


class BudgetSweepHooks:
    """Tells the registry how many budgets this run sweeps (environment and --params included).

    Kedro loads the pipelines lazily, after the context is created, so the namespaces of
    the sweep can follow ``block_search.budgets`` as the run resolved it.
    """

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        from compactkd import pipeline_registry  # lazily: it imports every stage (and torch)

        pipeline_registry.use_budgets(context.params["block_search"]["budgets"])


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
