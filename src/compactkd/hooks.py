"""Kedro hooks: the budget sweep's pipelines follow the run's own parameters."""

from __future__ import annotations

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl


class BudgetSweepHooks:
    """Tells the registry how many budgets this run sweeps (environment and --params included).

    Kedro loads the pipelines lazily, after the context is created, so the namespaces of
    the sweep can follow ``block_search.budgets`` as the run resolved it.
    """

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        from compactkd import pipeline_registry  # lazily: it imports every stage (and torch)

        pipeline_registry.use_budgets(context.params["block_search"]["budgets"])
