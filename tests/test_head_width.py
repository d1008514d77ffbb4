"""Every width searchable: the head's inner width (MobileNetV2's last 1x1 conv, 1,280 outputs)
is a choice of the search, and the baselines cut it too."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import randomised_teacher
from torch import nn

from compactkd.baselines import pruned_blueprint, uniform_width_spec
from compactkd.blocks.partition import head_inner_channels, narrow_head, partition_model
from compactkd.config import config_from_params
from compactkd.costs import module_costs
from compactkd.depgraph import prunable_copy, prune
from compactkd.model_files import load_model, save_model
from compactkd.models import build_model
from compactkd.search.config import BlockSearchConfig
from compactkd.search.pool import (
    CandidatePool,
    build_pool,
    head_name,
    selection_options,
    slots,
    student_blueprint,
    student_spec,
    teacher_costs,
)
from compactkd.search.select import resolve_budgets, select

SHAPE = (3, 16, 16)


def mobilenet() -> nn.Module:
    return randomised_teacher("mobilenet_v2")


def test_a_narrowed_head_width_is_the_teachers_head_without_the_dropped_channels() -> None:
    head = partition_model(mobilenet(), SHAPE).head
    assert head_inner_channels(head) == 1280
    x = torch.randn(4, 320, 2, 2)
    everything = torch.arange(320)
    assert torch.equal(narrow_head(head, everything, 1.0)(x), head(x))

    narrowed = narrow_head(head, everything, 0.25)
    conv = narrowed[0][0]
    assert conv.out_channels == 320 and narrowed[-1].in_features == 320
    l1 = head[0][0].weight.abs().sum(dim=(1, 2, 3))
    kept = torch.argsort(l1, descending=True)[:320]
    dropped = torch.ones(1280, dtype=torch.bool)
    dropped[kept] = False

    def zero_dropped(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return output.masked_fill(dropped[None, :, None, None], 0.0)

    hook = head[0].register_forward_hook(zero_dropped)  # after conv, BatchNorm and ReLU6
    try:
        expected = head(x)
    finally:
        hook.remove()
    torch.testing.assert_close(narrowed(x), expected)


def test_a_linear_head_has_no_width_to_cut() -> None:
    head = partition_model(randomised_teacher("resnet20"), SHAPE).head
    assert head_inner_channels(head) is None
    with pytest.raises(ValueError, match="no inner width"):
        narrow_head(head, torch.arange(64), 0.5)
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        narrow_head(head, torch.arange(64), 1.5)


def config(**settings: object) -> BlockSearchConfig:
    return config_from_params(BlockSearchConfig, {"budgets": {}, **settings}, "block_search")


def test_head_widths_are_checked() -> None:
    with pytest.raises(ValueError, match="hold 1.0"):
        config(head_widths=[0.5])
    with pytest.raises(ValueError, match=r"fractions in \(0, 1\]"):
        config(head_widths=[1.0, 0.0])
    teacher = randomised_teacher("resnet20")
    importance = [torch.ones(c) for c, _, _ in partition_model(teacher, SHAPE).interfaces]
    with pytest.raises(ValueError, match="resnet_cifar head has no inner width"):
        build_pool(teacher, SHAPE, importance, config(head_widths=[1.0, 0.5]))


def test_the_search_narrows_the_head_when_the_budget_needs_it() -> None:
    """A parameter budget below the full head's share is met by a narrower head; the chosen
    width travels through the spec into the assembled student, whose measured costs are
    the selection's."""
    teacher = mobilenet()
    partition = partition_model(teacher, SHAPE)
    importance = [torch.rand(c) for c, _, _ in partition.interfaces]
    settings = config(head_widths=[1.0, 0.5, 0.25])
    pool = build_pool(teacher, SHAPE, importance, settings)
    assert set(pool.heads) == {(1.0, w) for w in (1.0, 0.5, 0.25)}
    assert pool.heads[1.0, 0.25]["params"] < pool.heads[1.0, 1.0]["params"]

    reference = teacher_costs(pool)
    assert reference == module_costs(teacher, SHAPE)
    options = selection_options(pool, dict.fromkeys(range(len(pool.candidates)), 0.0))
    assert {o.name for o in options if o.slot == "head"} == {
        "head@1",
        "head@1_w0.5",
        "head@1_w0.25",
    }
    # Narrower heads scored worse: the search keeps the full head while it can.
    widths = {head_name(f, w): w for f, w in pool.heads}
    scored = [replace(o, score=1 - widths[o.name]) if o.slot == "head" else o for o in options]
    roomy = select(scored, slots(pool), resolve_budgets({"params": 1.0}, reference), reference)
    assert roomy.chosen["head"].name == "head@1"
    # Just room for the half-width head, the blocks being the teacher's.
    saved = pool.heads[1.0, 1.0]["params"] - pool.heads[1.0, 0.5]["params"]
    budget = resolve_budgets({"params": {"absolute": reference["params"] - saved}}, reference)
    tight = select(scored, slots(pool), budget, reference)
    assert tight.chosen["head"].name == head_name(1.0, 0.5)

    spec = student_spec(pool, tight, reference, budget, settings)
    assert spec["head_width"] == 0.5
    table = _table(pool)
    student = student_blueprint(teacher.spec, SHAPE, pool.keeps, spec, table).build(teacher)
    assert student[-1][0][0].out_channels == 640
    assert module_costs(student, SHAPE) == {k: tight.totals[k] for k in ("flops", "params")}


def _table(pool: CandidatePool) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"candidate": c.name, "family": c.family, "params_json": json.dumps(c.params)}
            for c in pool.candidates
        ]
    )


def test_the_baselines_cut_the_head_width_too(tmp_path: Path) -> None:
    teacher = mobilenet()
    reference = module_costs(teacher, SHAPE)
    budgets = resolve_budgets({"flops": 0.5, "params": 0.2}, reference)

    uniform = build_model(uniform_width_spec(teacher.spec, SHAPE, budgets))
    assert uniform.last_channel < 1280
    assert all(module_costs(uniform, SHAPE)[k] <= budgets[k] for k in ("flops", "params"))

    partition = partition_model(teacher, SHAPE)
    importance = [torch.rand(c) for c, _, _ in partition.interfaces]
    cut = pruned_blueprint(teacher, SHAPE, "stage", importance, budgets)
    fraction = cut.blocks[0].in_fraction
    assert cut.head_width == fraction < 1
    network = cut.build(teacher)
    assert network[-1][0][0].out_channels == round(1280 * fraction)
    assert all(module_costs(network, SHAPE)[k] <= budgets[k] for k in ("flops", "params"))
    # The head width is saved with the blueprint and comes back on load.
    save_model(network, tmp_path / "pruned.pt")
    reloaded = load_model(tmp_path / "pruned.pt")
    assert reloaded.blueprint.head_width == fraction
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(reloaded.eval()(x), network.eval()(x))

    torch.manual_seed(0)
    pruned = prune(prunable_copy(teacher), SHAPE, 0.5)
    assert pruned.features[-1][0].out_channels < 1280  # DepGraph's global ranking reaches it
    assert pruned.classifier.in_features == pruned.features[-1][0].out_channels
