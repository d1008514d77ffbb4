"""Kedro project settings: the defaults, with the catalog's custom datasets importable."""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (e.g. conf/cifar10/) overrides single settings, not whole stages.
    "merge_strategy": {"parameters": "soft", "catalog": "soft", "globals": "soft"},
}

from compactkd.hooks import (  # noqa: E402
    BudgetSweepHooks,
    DamagedInputHooks,
    MissingInputsHooks,
    NodeSummaryHooks,
    ParameterHooks,
    ProvenanceHooks,
    RunLockHooks,
    RuntimeHooks,
)

HOOKS = (
    RuntimeHooks(),
    ParameterHooks(),
    BudgetSweepHooks(),
    MissingInputsHooks(),
    DamagedInputHooks(),
    NodeSummaryHooks(),
    ProvenanceHooks(),
    RunLockHooks(),
)
