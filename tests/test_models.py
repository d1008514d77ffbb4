"""Tests of the model zoo (compactkd.models): shapes, sizes, FLOPs, spec round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import compactkd.models as models_pkg
from compactkd.models import available_models, build_model

CIFAR_MODELS = ["resnet20", "resnet32", "resnet56", "vgg11_bn", "vgg16_bn", "mobilenet_v2"]
TV_MODELS = ["tv:resnet18", "tv:mobilenet_v2"]
NUM_CLASSES = 7


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """FLOPs of one forward pass; FlopCounterMode counts a multiply-add as 2 FLOPs."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(shape))
    return counter.get_total_flops()


def test_available_models_lists_the_zoo() -> None:
    assert available_models() == CIFAR_MODELS
    with_tv = available_models(include_torchvision=True)
    assert set(TV_MODELS) <= set(with_tv)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", CIFAR_MODELS + TV_MODELS)
def test_output_shape_32x32(name: str, in_channels: int) -> None:
    model = build_model({"name": name, "num_classes": NUM_CLASSES, "in_channels": in_channels})
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("size", [28, 8])
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_models_take_small_inputs(name: str, size: int) -> None:
    model = build_model({"name": name, "num_classes": NUM_CLASSES, "in_channels": 1})
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018)],
)
def test_resnet_parameter_counts_match_paper(name: str, expected: int) -> None:
    # He et al. (2016) table 6: 0.27M, 0.46M, 0.85M with parameter-free (option A) shortcuts.
    model = build_model({"name": name, "num_classes": 10, "in_channels": 3})
    assert n_params(model) == expected


def test_resnet_structure() -> None:
    model = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 3})
    for attr in ["conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"]:
        assert hasattr(model, attr)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    assert isinstance(model.layer2[0].shortcut, models_pkg.PadShortcut)


def test_mobilenet_v2_flops() -> None:
    # About 88M multiply-adds at 32x32 = 176M FLOPs.
    model = build_model({"name": "mobilenet_v2", "num_classes": 10, "in_channels": 3})
    assert flops(model) == pytest.approx(176e6, rel=0.1)
    blocks = list(model.features)[1:-1]
    assert all(isinstance(b, models_pkg.InvertedResidual) for b in blocks)
    assert len(blocks) == 17


def test_mobilenet_v2_width_mult_shrinks() -> None:
    full = build_model({"name": "mobilenet_v2", "num_classes": 10, "in_channels": 3})
    half = build_model(
        {"name": "mobilenet_v2", "num_classes": 10, "in_channels": 3, "width_mult": 0.5}
    )
    assert n_params(half) < n_params(full)
    assert flops(half) < flops(full) / 2


@pytest.mark.parametrize(
    "spec",
    [
        *({"name": n, "num_classes": NUM_CLASSES, "in_channels": 1} for n in CIFAR_MODELS),
        {"name": "mobilenet_v2", "num_classes": 3, "in_channels": 3, "width_mult": 0.5},
        {"name": "tv:resnet18", "num_classes": NUM_CLASSES, "in_channels": 1},
    ],
    ids=lambda spec: f"{spec['name']}-{spec.get('width_mult', 1.0)}",
)
def test_spec_round_trip(spec: dict) -> None:
    model = build_model(spec)
    assert model.spec == spec
    assert model.spec is not spec
    saved = json.loads(json.dumps(model.spec))  # survives a JSON file

    rebuilt = build_model(saved)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    rebuilt.eval()
    x = torch.randn(2, spec["in_channels"], 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_standard_init() -> None:
    model = build_model({"name": "resnet20", "num_classes": 10, "in_channels": 3})
    bn = model.layer1[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    # kaiming normal, fan_out: std = sqrt(2 / (out_channels * 3 * 3)) = sqrt(2 / 144)
    w = model.layer1[0].conv1.weight
    assert w.std().item() == pytest.approx((2 / 144) ** 0.5, rel=0.2)


def test_tv_in_channels_1_replaces_first_conv() -> None:
    model = build_model({"name": "tv:resnet18", "num_classes": NUM_CLASSES, "in_channels": 1})
    conv = model.conv1
    assert isinstance(conv, nn.Conv2d)
    assert conv.in_channels == 1 and conv.out_channels == 64
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3)
    assert conv.bias is None
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, NUM_CLASSES)


def test_unknown_name_lists_available_models() -> None:
    with pytest.raises(ValueError, match="resnet20") as info:
        build_model({"name": "resnet999", "num_classes": 10, "in_channels": 3})
    assert "resnet999" in str(info.value)
    assert "tv:<name>" in str(info.value)


def test_unknown_torchvision_name() -> None:
    with pytest.raises(ValueError, match="resnet18") as info:
        build_model({"name": "tv:not_a_model", "num_classes": 10, "in_channels": 3})
    assert "not_a_model" in str(info.value)


def test_missing_name() -> None:
    with pytest.raises(ValueError, match="'name'"):
        build_model({"num_classes": 10})


@pytest.mark.parametrize("name", ["resnet20", "vgg11_bn", "mobilenet_v2", "tv:resnet18"])
def test_unknown_kwarg(name: str) -> None:
    with pytest.raises(TypeError, match="bogus"):
        build_model({"name": name, "num_classes": 10, "in_channels": 3, "bogus": 1})


def test_models_do_not_import_kedro() -> None:
    # The zoo is plain PyTorch, usable outside the Kedro project.
    for path in Path(models_pkg.__file__).parent.glob("*.py"):
        assert "kedro" not in path.read_text().lower(), path
