"""The ``torch_pruning`` baseline: the teacher pruned by torch-pruning (DepGraph), saved as a
narrowed zoo model (compactkd.depgraph, compactkd.baselines, compactkd.models.narrowing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import randomised_teacher
from torch import nn

from compactkd import baselines
from compactkd.baselines import fits_budgets, torch_pruned, torch_pruning_recipe
from compactkd.blocks.pruning import prune_block
from compactkd.costs import count_flops, count_params
from compactkd.data import input_shape
from compactkd.datasets import TensorDictDataset
from compactkd.depgraph import prunable_copy, prune
from compactkd.distillation import Recipe
from compactkd.export import export_onnx, max_abs_difference, onnx_session
from compactkd.model_files import (
    NARROWED_FORMAT,
    load_model,
    network_from_package,
    network_package,
    save_model,
)
from compactkd.models import ConvShortcut, PadShortcut, build_model
from compactkd.models.narrowing import load_narrowed
from compactkd.serialization import safe_load

CIFAR = (3, 32, 32)


def budgets_of(teacher: nn.Module, flops: float, params: float) -> dict[str, float]:
    return {
        "flops": flops * count_flops(teacher, CIFAR),
        "params": params * count_params(teacher),
    }


@pytest.fixture(scope="module")
def recipe() -> Recipe:
    """ResNet-20 on CIFAR-sized images pruned to 0.5x FLOPs and 0.2x parameters."""
    teacher = randomised_teacher("resnet20")
    return torch_pruning_recipe(teacher, CIFAR, {"budgets": budgets_of(teacher, 0.5, 0.2)})


def test_conv_shortcuts_compute_what_zero_padding_computes() -> None:
    teacher = randomised_teacher("resnet20")
    copy = prunable_copy(teacher)
    shortcuts = [m for m in copy.modules() if isinstance(m, ConvShortcut)]
    assert len(shortcuts) == 2 and not any(isinstance(m, PadShortcut) for m in copy.modules())
    assert copy.spec == {**teacher.spec, "shortcut": "conv"}
    # 16 -> 32 and 32 -> 64 channels: the conv form's only extra parameters.
    assert count_params(copy) - count_params(teacher) == 16 * 32 + 32 * 64
    images = torch.randn(4, *CIFAR)
    with torch.no_grad():
        assert torch.allclose(copy(images), teacher(images), atol=1e-5)
    # A fresh conv-shortcut ResNet starts as option A too; the zoo's Kaiming init leaves it.
    fresh = build_model({"name": "resnet20", "shortcut": "conv"})
    padded = [m.weight.flatten(1) for m in fresh.modules() if isinstance(m, ConvShortcut)]
    assert all(torch.equal(w, torch.eye(*w.shape)) for w in padded)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        build_model({"name": "resnet20", "shortcut": "projection"})


def test_the_pruned_family_slices_a_conv_shortcut_as_it_maps_a_padded_one() -> None:
    teacher = randomised_teacher("resnet20")
    conv_stage, pad_stage = prunable_copy(teacher).layer2, teacher.layer2
    in_keep, out_keep = torch.arange(0, 16, 2), torch.arange(0, 32, 3)
    images = torch.randn(2, 16, 16, 16)[:, in_keep]
    with torch.no_grad():
        expected = prune_block(pad_stage, in_keep, out_keep, 0.5)(images)
        actual = prune_block(conv_stage, in_keep, out_keep, 0.5)(images)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_the_cut_fits_both_budgets_and_is_the_largest_that_does(recipe: Recipe) -> None:
    teacher = randomised_teacher("resnet20")
    budgets = budgets_of(teacher, 0.5, 0.2)
    network, ratio = recipe.initial(0), recipe.facts["pruning_ratio"]
    assert fits_budgets(network, CIFAR, budgets) and 0 < ratio < 1
    assert recipe.facts["params_ratio"] <= 0.2 and recipe.facts["flops_ratio"] <= 0.5
    assert recipe.facts["params_ratio"] > 0.18  # the binding budget is nearly used up
    assert not fits_budgets(prune(prunable_copy(teacher), CIFAR, ratio - 0.01), CIFAR, budgets)
    assert recipe.name == "torch_pruning" and recipe.distilled and recipe.inherited
    # No budget: nothing is pruned (the conv shortcuts' few parameters aside).
    _, none = torch_pruned(teacher, CIFAR, {"flops": 1e18, "params": 1e18})
    assert none == 0
    with pytest.raises(ValueError, match="cannot fit the budgets"):
        torch_pruned(teacher, CIFAR, {"params": 100})


def test_the_saved_network_reloads_without_pickles_and_costs_what_the_recipe_says(
    recipe: Recipe, tmp_path: Path
) -> None:
    network = recipe.initial(0)
    path = tmp_path / "torch_pruning.pt"
    save_model(network, path)
    package = torch.load(path, weights_only=True)  # plain data: no pickled module
    assert package["format"] == NARROWED_FORMAT and package["spec"]["shortcut"] == "conv"
    rebuilt = load_model(path)
    assert count_flops(rebuilt, CIFAR) == recipe.facts["flops"] == count_flops(network, CIFAR)
    assert count_params(rebuilt) == recipe.facts["params"] == count_params(network)
    images = torch.randn(4, *CIFAR)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), network.eval()(images))
    assert network_package(rebuilt)["format"] == NARROWED_FORMAT  # saved again as it came


def test_the_pruned_network_exports_to_onnx(recipe: Recipe) -> None:
    network = recipe.initial(0)
    session = onnx_session(export_onnx(network, CIFAR))
    assert max_abs_difference(session, network, torch.randn(5, *CIFAR)) < 1e-4


def test_a_mobilenet_keeps_its_depthwise_convs_through_pruning_and_reloading() -> None:
    teacher = randomised_teacher("mobilenet_v2")
    network = prune(prunable_copy(teacher), CIFAR, 0.4)
    rebuilt = load_narrowed(build_model(teacher.spec), network.state_dict())
    depthwise = [m for m in rebuilt.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert count_params(rebuilt) == count_params(network) < count_params(teacher)
    images = torch.randn(2, *CIFAR)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), network.eval()(images))


def test_grouped_convs_are_not_narrowed() -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    narrower = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2)).state_dict()
    with pytest.raises(ValueError, match="only the channels of plain or depthwise convs"):
        load_narrowed(model, narrower)


def test_a_teacher_torch_pruning_cannot_prune_fails_naming_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def untraceable(*args: object) -> nn.Module:
        raise RuntimeError("a graph DepGraph cannot follow")

    monkeypatch.setattr(baselines, "prune", untraceable)
    teacher = randomised_teacher("resnet20")
    with pytest.raises(ValueError, match=r"distillation.baselines.torch_pruning: false"):
        torch_pruning_recipe(teacher, CIFAR, {"budgets": budgets_of(teacher, 0.5, 0.2)})


@pytest.mark.slow
def test_the_stage_reports_the_costs_of_the_networks_it_saved(finished_run: Path) -> None:
    reporting = finished_run / "data/08_reporting"
    metrics = json.loads((reporting / "metrics.json").read_text())["torch_pruning"]
    summary = json.loads((reporting / "finetune/torch_pruning_summary.json").read_text())
    shape = input_shape(safe_load(finished_run / "data/05_model_input/splits.pt"))
    finetuned = TensorDictDataset(
        filepath=str(finished_run / "data/06_models/finetuned/torch_pruning.pt")
    ).load()
    for package in finetuned["packages"]:
        assert package["format"] == NARROWED_FORMAT
        network = network_from_package(package)
        assert count_flops(network, shape) == metrics["flops"] == summary["flops"]
        assert count_params(network) == metrics["params"] == summary["params"]
