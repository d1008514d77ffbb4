"""The trained teacher pruned by the ``torch-pruning`` package (DepGraph; Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023), as a user of that package would prune it.

``tp.pruner.BasePruner`` (its older name ``MetaPruner`` is an alias) with group magnitude
importance (the L2 norm of every weight coupled to a channel, over its whole dependency group,
normalised by the group's mean), global ranking across layers and ``ITERATIVE_STEPS`` steps of
a linear schedule; the classifier's outputs are never cut. :func:`compactkd.baselines.
torch_pruned` picks the global pruning ratio.

A zoo ResNet's option-A shortcuts zero-pad channels, a channel mapping DepGraph cannot trace:
the network is first rebuilt with ``shortcut: conv``, where each of them is a 1x1 conv holding
the zero-padded identity, the same function (their few parameters and FLOPs are counted).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from compactkd.models import MODELS, build_model

ITERATIVE_STEPS = 5  # pruning steps, importance measured again before each
# Beyond this, whole layers would go and torch-pruning skips their groups: the cut stops shrinking.
MAX_RATIO = 0.95


def prunable_copy(teacher: nn.Module) -> nn.Module:
    """A trainable CPU copy of ``teacher`` that DepGraph can trace: a zoo ResNet with its
    zero-padding shortcuts as equal 1x1 convs, any other model as it is."""
    builder = MODELS.get(teacher.spec["name"])
    if builder is None or "shortcut" not in inspect.signature(builder).parameters:
        return copy.deepcopy(teacher).cpu().eval().requires_grad_(True)
    model = build_model({**teacher.spec, "shortcut": "conv"})
    # The teacher's weights; the new shortcuts keep the zero-padded identity they start with.
    model.load_state_dict(model.state_dict() | teacher.state_dict())
    return model.eval()


def prune(model: nn.Module, input_shape: Sequence[int], ratio: float) -> nn.Module:
    """A copy of ``model`` with the share ``ratio`` of its prunable channels removed (global
    ranking), marked ``narrowed`` (saved as its spec plus weights of the pruned widths)."""
    model = copy.deepcopy(model)
    model.narrowed = True
    if ratio == 0:
        return model
    classifiers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not classifiers:
        raise ValueError(f"{model.spec['name']} ends in no nn.Linear classifier")
    pruner = tp.pruner.BasePruner(
        model,
        torch.zeros(1, *input_shape),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True,
        pruning_ratio=ratio,
        iterative_steps=ITERATIVE_STEPS,
        ignored_layers=[classifiers[-1]],  # the class scores keep their number
    )
    for _ in range(ITERATIVE_STEPS):
        pruner.step()
    return model
