"""Partition of every supported teacher into stem, blocks and head, and narrowed stems and heads."""

from __future__ import annotations

import pytest
import torch
from helpers import randomised_teacher
from torch import nn

from compactkd.blocks.partition import (
    SUPPORTED_FAMILIES,
    Partition,
    narrow_head,
    narrow_stem,
    partition_model,
)
from compactkd.models import build_model

CIFAR_RESNETS = ["resnet20", "resnet32", "resnet56"]
TV_RESNETS = ["tv:resnet18", "tv:resnet34", "tv:resnet50"]
OTHERS = ["vgg11_bn", "vgg16_bn", "mobilenet_v2", "tv:mobilenet_v2"]
ALL = CIFAR_RESNETS + TV_RESNETS + OTHERS
CIFAR = {"resnet20", "resnet32", "resnet56", "vgg11_bn", "vgg16_bn", "mobilenet_v2"}

# (name, granularity) -> number of blocks.
BLOCK_COUNTS = {
    ("resnet20", "stage"): 3,
    ("resnet20", "unit"): 9,
    ("resnet32", "stage"): 3,
    ("resnet32", "unit"): 15,
    ("resnet56", "stage"): 3,
    ("resnet56", "unit"): 27,
    ("tv:resnet18", "stage"): 4,
    ("tv:resnet18", "unit"): 8,
    ("tv:resnet34", "stage"): 4,
    ("tv:resnet34", "unit"): 16,
    ("tv:resnet50", "stage"): 4,
    ("tv:resnet50", "unit"): 16,
    ("vgg11_bn", "stage"): 4,
    ("vgg16_bn", "stage"): 4,
    ("mobilenet_v2", "stage"): 7,
    ("mobilenet_v2", "unit"): 17,
    ("tv:mobilenet_v2", "stage"): 7,
    ("tv:mobilenet_v2", "unit"): 17,
}


def _cases() -> list[tuple[str, str, int, int]]:
    """(name, granularity, in_channels, size): 1 and 3 channels, 32x32 and, for CIFAR, 28x28."""
    cases = []
    for name, granularity in BLOCK_COUNTS:
        for in_channels in (1, 3):
            for size in (32, 28) if name in CIFAR else (32,):
                cases.append((name, granularity, in_channels, size))
    return cases


def random_keep(channels: int, generator: torch.Generator) -> torch.Tensor:
    count = max(1, channels // 2)
    return torch.randperm(channels, generator=generator)[:count].sort().values


@pytest.mark.parametrize(("name", "granularity", "in_channels", "size"), _cases())
def test_partition_reproduces_the_teacher(
    name: str, granularity: str, in_channels: int, size: int
) -> None:
    model = randomised_teacher(name, in_channels)
    part = partition_model(model, (in_channels, size, size), granularity)
    torch.manual_seed(1)
    x = torch.randn(2, in_channels, size, size)

    with torch.no_grad():
        expected = model(x)
        assert torch.equal(part.forward(x), expected)
        tensors = part.interface_tensors(x)
        # Stored interfaces are intact (no in-place op of a later part changed them).
        for block, before, after in zip(part.blocks, tensors, tensors[1:], strict=False):
            assert torch.equal(block(before), after)
        assert torch.equal(part.head(tensors[-1]), expected)

    assert part.interfaces == [tuple(t.shape[1:]) for t in tensors]
    assert len(part.blocks) == BLOCK_COUNTS[name, granularity]
    assert part.block_names == [f"block_{i}" for i in range(1, len(part.blocks) + 1)]
    assert part.family in SUPPORTED_FAMILIES


@pytest.mark.parametrize(("name", "granularity"), list(BLOCK_COUNTS))
def test_parts_are_the_teachers_own_modules(name: str, granularity: str) -> None:
    model = randomised_teacher(name, 3)
    part = partition_model(model, (3, 32, 32), granularity)

    # Every teacher parameter and buffer is in exactly one part, as the same object.
    def tensor_ids(module: nn.Module) -> list[int]:
        return [id(t) for t in (*module.parameters(), *module.buffers())]

    in_parts = [i for m in (part.stem, *part.blocks, part.head) for i in tensor_ids(m)]
    assert sorted(in_parts) == sorted(tensor_ids(model))

    teacher_modules = {id(m) for m in model.modules()}
    for block in part.blocks:
        # Containers built for VGG and MobileNetV2 stages wrap the teacher's own layers.
        children = list(block.children()) if id(block) not in teacher_modules else [block]
        assert all(id(c) in teacher_modules for c in children)
    if name in CIFAR_RESNETS + TV_RESNETS and granularity == "stage":
        assert all(b is getattr(model, f"layer{i}") for i, b in enumerate(part.blocks, 1))


def test_family_specific_splits() -> None:
    vgg = partition_model(randomised_teacher("vgg11_bn", 3), (3, 32, 32))
    assert [type(m) for m in vgg.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert all(isinstance(b[0], nn.MaxPool2d) for b in vgg.blocks)
    assert [len(b) for b in vgg.blocks] == [4, 7, 7, 7]  # pool + 1, 2, 2, 2 conv-bn-relu
    assert isinstance(vgg.head[0], nn.MaxPool2d)
    assert vgg.interfaces[0] == (64, 32, 32) and vgg.interfaces[-1] == (512, 2, 2)

    # VGG-16's second 64-channel conv opens block_1 instead of joining the stem.
    vgg16 = partition_model(randomised_teacher("vgg16_bn", 3), (3, 32, 32))
    assert len(vgg16.stem) == 3 and isinstance(vgg16.blocks[0][3], nn.MaxPool2d)

    mobilenet = partition_model(randomised_teacher("mobilenet_v2", 3), (3, 32, 32))
    assert [len(b) for b in mobilenet.blocks] == [1, 2, 3, 4, 3, 3, 1]
    assert [c for c, _, _ in mobilenet.interfaces] == [32, 16, 24, 32, 64, 96, 160, 320]

    tv = partition_model(randomised_teacher("tv:mobilenet_v2", 3), (3, 32, 32))
    assert isinstance(tv.head[-1][0], nn.Dropout)  # torchvision's classifier kept whole


def test_partition_keeps_each_module_mode() -> None:
    model = build_model({"name": "resnet20"}).train()
    model.layer2.eval()  # a mixed state, e.g. frozen BN, must come back as it was
    modes = [m.training for m in model.modules()]
    partition_model(model, (3, 32, 32))
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("name", ALL)
def test_narrowed_stem_and_head_are_exact(name: str) -> None:
    model = randomised_teacher(name, 3)
    part = partition_model(model, (3, 32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=generator)

    with torch.no_grad():
        x0 = part.stem(x)
        keep = random_keep(x0.shape[1], generator)
        assert torch.allclose(narrow_stem(part.stem, keep).eval()(x), x0[:, keep], atol=1e-6)

        xn = part.interface_tensors(x)[-1]
        keep = random_keep(xn.shape[1], generator)
        zeroed = torch.zeros_like(xn)
        zeroed[:, keep] = xn[:, keep]
        narrowed = narrow_head(part.head, keep).eval()
        assert torch.allclose(narrowed(xn[:, keep]), part.head(zeroed), atol=1e-6)

        # Keeping every channel changes nothing.
        every = torch.arange(xn.shape[1])
        assert torch.allclose(narrow_head(part.head, every).eval()(xn), part.head(xn), atol=1e-6)
        every = torch.arange(x0.shape[1])
        assert torch.equal(narrow_stem(part.stem, every).eval()(x), x0)

    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher is untouched


@pytest.mark.parametrize(
    "keep",
    [torch.tensor([]), torch.tensor([0, 16]), torch.tensor([1, 1]), torch.tensor([0.0, 1.0])],
    ids=["empty", "out-of-range", "repeated", "float"],
)
def test_bad_keep_is_refused(keep: torch.Tensor) -> None:
    part = partition_model(randomised_teacher("resnet20", 3), (3, 32, 32))  # 16 stem channels
    with pytest.raises(ValueError, match="keep"):
        narrow_stem(part.stem, keep)


def test_bad_granularity_and_model_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'stage', 'unit'"):
        partition_model(randomised_teacher("resnet20", 3), (3, 32, 32), "layer")
    with pytest.raises(ValueError, match="not available for vgg.*'unit' is for"):
        partition_model(randomised_teacher("vgg11_bn", 3), (3, 32, 32), "unit")
    with pytest.raises(ValueError, match="cannot partition a Sequential; supported: resnet_cifar"):
        partition_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (3, 32, 32))
    with pytest.raises(ValueError, match="does not fit"):
        partition_model(randomised_teacher("resnet20", 3), (1, 32, 32))


def test_partition_checks_its_lengths() -> None:
    with pytest.raises(ValueError, match="one interface more"):
        Partition("vgg", nn.Identity(), nn.ModuleList([nn.Identity()]), nn.Identity(), [], [])
