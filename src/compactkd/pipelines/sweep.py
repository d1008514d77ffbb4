"""The budget sweep: the first budget is the student's, each further one a Kedro namespace.

One block-wise candidate training serves every budget; selection, distillation and
evaluation run once per budget. Outputs of the first budget keep their plain names
(``student_spec``, ``metrics``...); those of budget ``k`` live in namespace ``budget_k``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from kedro.pipeline import Node, Pipeline, node, pipeline


def budget_namespaces(budget_count: int) -> list[str | None]:
    """``[None, "budget_2", ...]``: no namespace for the student's own budget."""
    return [None] + [f"budget_{k}" for k in range(2, budget_count + 1)]


def qualified(namespace: str | None, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


def across_budgets(func: Callable, inputs: list[str], outputs: list[str], *, name: str) -> Node:
    """A node that reads or writes the datasets of every budget, namespaced ones included.

    Reaching into the namespaces from outside is such a node's job, so Kedro's advice
    against dotted dataset names does not apply to it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return node(func, inputs, outputs, name=name)


def per_budget(
    base: Pipeline,
    namespaces: Sequence[str | None],
    shared_inputs: set[str],
    parameters: set[str],
) -> Pipeline:
    """``base`` once per budget: as is for the first, namespaced for the others."""
    copies = [
        pipeline(base, namespace=ns, inputs=shared_inputs, parameters=parameters) if ns else base
        for ns in namespaces
    ]
    return sum(copies, Pipeline([]))


def stage(name: str, nodes: Pipeline) -> Pipeline:
    """A stage's nodes grouped under its name (a collapsible group in kedro viz).

    Only the nodes are namespaced: the datasets keep their catalog names.
    """
    return pipeline(nodes, namespace=name, prefix_datasets_with_namespace=False)
