"""Cut a teacher into ``stem -> B_1 -> ... -> B_N -> head``, narrow its ends (docs/method.md §1-2).

``partition_model`` recognises the model family by class and applies that family's split, declared
once in ``_FAMILIES``. The parts hold the teacher's own modules, so a partition shares weights with
the teacher and costs no memory. ``narrow_stem`` / ``narrow_head`` return sliced *copies* of the
stem and head for interfaces that keep only a subset of their channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

import torch
import torchvision
from torch import Tensor, nn

from compactkd.blocks.slicing import (
    check_keep,
    inner_width,
    largest_l1,
    slice_bn,
    slice_conv,
    slice_linear_inputs,
)
from compactkd.models import VGG, InvertedResidual, MobileNetV2, ResNet

__all__ = [
    "SUPPORTED_FAMILIES",
    "Partition",
    "head_inner_channels",
    "narrow_head",
    "narrow_stem",
    "partition_model",
]

GRANULARITIES = ("stage", "unit")


@dataclass(eq=False)
class Partition:
    """A teacher written as ``stem -> B_1 -> ... -> B_N -> head``.

    ``blocks`` are the teacher's own modules (shared, not copied): training or changing the
    mode of a partition's part does the same to the teacher. ``interfaces[i]`` is the (C, H, W)
    shape of ``x_i`` for the input shape given to ``partition_model``; ``x_0`` is the stem output.
    The caller sets train/eval mode and grad mode, as for any module.
    """

    family: str
    stem: nn.Module = field(repr=False)
    blocks: nn.ModuleList = field(repr=False)
    head: nn.Module = field(repr=False)
    block_names: list[str]
    interfaces: list[tuple[int, int, int]]

    def __post_init__(self) -> None:
        if not len(self.block_names) == len(self.blocks) == len(self.interfaces) - 1:
            raise ValueError(
                f"{len(self.blocks)} blocks need as many names and one interface more; got "
                f"{len(self.block_names)} names and {len(self.interfaces)} interfaces"
            )

    def interface_tensors(self, x: Tensor) -> list[Tensor]:
        """``[x_0, ..., x_N]``: the stem output, then each block's output."""
        return _run_to_interfaces(self.stem, self.blocks, x)

    def forward(self, x: Tensor) -> Tensor:
        """``head(B_N(...B_1(stem(x))))``, the teacher's own output."""
        return self.head(self.interface_tensors(x)[-1])


def _run_to_interfaces(stem: nn.Module, blocks: nn.ModuleList, x: Tensor) -> list[Tensor]:
    tensors = [stem(x)]
    for block in blocks:
        tensors.append(block(tensors[-1]))
    return tensors


# --- family splits -------------------------------------------------------------------------------

# What a splitter returns: stem, blocks in order, head.
Split = tuple[nn.Module, list[nn.Module], nn.Module]


def _split_resnet(model: nn.Module, stem: list[str], stages: list[str], granularity: str) -> Split:
    # Both ResNets pool and flatten functionally before ``fc``, so the head gets an nn.Flatten.
    stage_modules = [model.get_submodule(name) for name in stages]
    if granularity == "unit":
        blocks = [unit for stage in stage_modules for unit in stage]
    else:
        blocks = stage_modules
    head = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    return nn.Sequential(*(model.get_submodule(name) for name in stem)), blocks, head


def _split_resnet_cifar(model: nn.Module, granularity: str) -> Split:
    return _split_resnet(
        model, ["conv1", "bn1", "relu"], ["layer1", "layer2", "layer3"], granularity
    )


def _split_tv_resnet(model: nn.Module, granularity: str) -> Split:
    return _split_resnet(
        model,
        ["conv1", "bn1", "relu", "maxpool"],
        ["layer1", "layer2", "layer3", "layer4"],
        granularity,
    )


def _split_vgg(model: nn.Module, granularity: str) -> Split:
    """Stem: the first conv-bn-relu. Then one block per pool, opening with that pool.

    Any further conv-bn-relu before the first pool (VGG-16's second 64-channel conv) opens
    block_1, so the search can replace it rather than freezing it into the stem. The last pool
    goes to the head, so the last interface is the last conv's full-resolution output.
    """
    layers = list(model.features)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    if len(pools) < 2 or not isinstance(layers[0], nn.Conv2d):
        raise ValueError("VGG features must start with a conv and hold at least two pools")
    stem = nn.Sequential(*layers[:3])  # conv, bn, relu
    # Block k runs from the (k-1)-th pool (block_1: from after the stem) up to the k-th pool.
    bounds = [3, *pools[1:]]
    blocks = [nn.Sequential(*layers[start:end]) for start, end in pairwise(bounds)]
    head = nn.Sequential(*layers[pools[-1] :], model.avgpool, nn.Flatten(1), model.classifier)
    return stem, blocks, head


def _split_mobilenet_v2(model: nn.Module, granularity: str) -> Split:
    """Stem ``features[0]``; one block per stage (or per inverted residual, ``unit``); head:
    last 1x1 conv, pool, classifier.

    A stage is a run of inverted residuals with the same output width, i.e. one (t, c, n, s) row
    of the setting (two rows can only merge if width rounding gives them equal widths).
    """
    features = list(model.features)
    units = features[1:-1]
    unit_types = (InvertedResidual, torchvision.models.mobilenetv2.InvertedResidual)
    if not units or not all(isinstance(u, unit_types) for u in units):
        raise ValueError("MobileNetV2 features must be [stem, InvertedResidual..., last conv]")

    stages: list[list[nn.Module]] = []
    for unit in units:
        if granularity == "stage" and stages and stages[-1][-1].out_channels == unit.out_channels:
            stages[-1].append(unit)
        else:
            stages.append([unit])
    # Both MobileNetV2s pool and flatten functionally before the classifier.
    head = nn.Sequential(features[-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier)
    return features[0], [nn.Sequential(*stage) for stage in stages], head


class _Family(NamedTuple):
    model_class: type[nn.Module]
    split: Callable[[nn.Module, str], Split]
    granularities: tuple[str, ...]


# The one place where each supported family is declared: its model class, its split and the
# granularities it has (unit-level blocks: ResNets' residual units, MobileNetV2's inverted
# residuals; a VGG stage has no units to split at).
_FAMILIES: dict[str, _Family] = {
    "resnet_cifar": _Family(ResNet, _split_resnet_cifar, ("stage", "unit")),
    "vgg": _Family(VGG, _split_vgg, ("stage",)),
    "mobilenet_v2": _Family(MobileNetV2, _split_mobilenet_v2, ("stage", "unit")),
    "tv_resnet": _Family(torchvision.models.ResNet, _split_tv_resnet, ("stage", "unit")),
    "tv_mobilenet_v2": _Family(
        torchvision.models.MobileNetV2, _split_mobilenet_v2, ("stage", "unit")
    ),
}

SUPPORTED_FAMILIES: list[str] = list(_FAMILIES)


def _family_of(model: nn.Module) -> str:
    for name, family in _FAMILIES.items():
        if isinstance(model, family.model_class):
            return name
    supported = ", ".join(
        f"{name} ({family.model_class.__module__}.{family.model_class.__name__})"
        for name, family in _FAMILIES.items()
    )
    raise ValueError(f"cannot partition a {type(model).__name__}; supported: {supported}")


# --- partition -----------------------------------------------------------------------------------


@contextmanager
def _probing(*roots: nn.Module) -> Iterator[None]:
    """Eval mode and no grad, then every module's own mode back (mixed modes included)."""
    modes = [(m, m.training) for root in roots for m in root.modules()]
    try:
        for root in roots:
            root.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _shape(x: Tensor) -> tuple[int, int, int]:
    if x.dim() != 4:
        raise ValueError(f"interfaces must be (N, C, H, W) maps, got shape {tuple(x.shape)}")
    _, c, h, w = x.shape
    return int(c), int(h), int(w)


def _measure_interfaces(
    stem: nn.Module, blocks: nn.ModuleList, input_shape: tuple[int, int, int], like: Tensor | None
) -> list[tuple[int, int, int]]:
    # A zeros probe on the model's device and dtype; eval mode so BN does not update its stats.
    options = {} if like is None else {"device": like.device, "dtype": like.dtype}
    probe = torch.zeros(1, *input_shape, **options)
    with _probing(stem, blocks):
        try:
            tensors = _run_to_interfaces(stem, blocks, probe)
        except RuntimeError as e:
            raise ValueError(f"input_shape {tuple(input_shape)} does not fit the model: {e}") from e
    return [_shape(t) for t in tensors]


def partition_model(
    model: nn.Module, input_shape: tuple[int, int, int], granularity: str = "stage"
) -> Partition:
    """Split ``model`` into stem, blocks and head; ``input_shape`` is one image's (C, H, W).

    ``granularity`` is ``"stage"`` (one block per stage) or ``"unit"`` (one block per residual
    unit: ResNets and MobileNetV2). Raises ``ValueError`` for an unsupported model or granularity.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    name = _family_of(model)
    family = _FAMILIES[name]
    if granularity not in family.granularities:
        with_unit = [n for n, f in _FAMILIES.items() if "unit" in f.granularities]
        raise ValueError(
            f"granularity {granularity!r} is not available for {name}, which has "
            f"{list(family.granularities)}; 'unit' is for {with_unit}"
        )

    stem, block_list, head = family.split(model, granularity)
    blocks = nn.ModuleList(block_list)
    like = next(model.parameters(), None)
    return Partition(
        family=name,
        stem=stem,
        blocks=blocks,
        head=head,
        block_names=[f"block_{i}" for i in range(1, len(blocks) + 1)],
        interfaces=_measure_interfaces(stem, blocks, input_shape, like),
    )


# --- narrowed interfaces -------------------------------------------------------------------------


def _leaves(module: nn.Module) -> list[nn.Module]:
    # Registration order, which is execution order for the Sequential stems and heads built here.
    return [m for m in module.modules() if next(m.children(), None) is None]


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` where ``old`` sits inside ``root``, in ``old``'s train/eval mode."""
    new.train(old.training)
    name = next(n for n, m in root.named_modules() if m is old)
    parent_name, _, attribute = name.rpartition(".")
    setattr(root.get_submodule(parent_name), attribute, new)


def narrow_stem(stem: nn.Module, keep: Tensor) -> nn.Module:
    """A copy of ``stem`` whose output is exactly ``stem(x)[:, keep]``; ``stem`` is untouched.

    Slices the out-channels of the last Conv2d and of the BatchNorm2d right after it; the layers
    after those must be parameter-free and channel-wise (ReLU, MaxPool), as in every family here.
    """
    narrowed = copy.deepcopy(stem)
    leaves = _leaves(narrowed)
    convs = [i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"stem has no Conv2d to narrow: {stem}")
    conv = leaves[convs[-1]]
    if conv.groups != 1:
        raise ValueError(f"the stem's last conv is grouped ({conv.groups}); cannot narrow it")
    keep = check_keep(keep, conv.out_channels)

    after = leaves[convs[-1] + 1 :]
    norm = after.pop(0) if after and isinstance(after[0], nn.BatchNorm2d) else None
    stateful = [m for m in after if _has_state(m)]
    if stateful:
        raise ValueError(f"cannot narrow a stem with {stateful} after its last conv+BN")

    _replace(narrowed, conv, slice_conv(conv, keep, torch.arange(conv.in_channels)))
    if norm is not None:
        _replace(narrowed, norm, slice_bn(norm, keep))
    return narrowed


def _is_global_pool(module: nn.Module) -> bool:
    size = getattr(module, "output_size", None)
    return isinstance(module, nn.AdaptiveAvgPool2d) and size in (1, (1, 1))


def head_inner_channels(head: nn.Module) -> int | None:
    """The output width of the head's inner conv (MobileNetV2's last 1x1 conv), which
    ``narrow_head(..., width)`` can cut; None for a head that starts with its Linear."""
    layer = next((m for m in _leaves(head) if isinstance(m, nn.Conv2d | nn.Linear)), None)
    return layer.out_channels if isinstance(layer, nn.Conv2d) else None


def narrow_head(head: nn.Module, keep: Tensor, width: float = 1.0) -> nn.Module:
    """A copy of ``head`` that reads only the ``keep`` channels; ``head`` is untouched.

    ``narrow_head(head, keep)(x[:, keep])`` equals ``head(x)`` with the other channels zeroed:
    the in-channels of the first Conv2d (MobileNetV2) or Linear (ResNet, VGG) are sliced. The
    layers before it must be parameter-free and channel-wise, and a Linear must follow a global
    average pool, so that its input features are exactly the channels.

    ``width`` < 1 also keeps only that fraction of the inner conv's outputs (the filters of
    largest L1 norm), with their BatchNorm and the classifier's inputs: the head's own width
    is then a choice, as every other width (a head without an inner conv has none).
    """
    if not 0 < width <= 1:
        raise ValueError(f"a head width is a fraction in (0, 1], got {width}")
    narrowed = copy.deepcopy(head)
    leaves = _leaves(narrowed)
    first = next((i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d | nn.Linear)), None)
    if first is None:
        raise ValueError(f"head has no Conv2d or Linear to narrow: {head}")
    layer, before = leaves[first], leaves[:first]
    stateful = [m for m in before if _has_state(m)]
    if stateful:
        raise ValueError(f"cannot narrow a head with {stateful} before its first conv/linear")

    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"the head's first conv is grouped ({layer.groups}); cannot narrow")
        keep = check_keep(keep, layer.in_channels)
        outputs = torch.arange(layer.out_channels)
        if width < 1:
            outputs = largest_l1(layer, inner_width(layer.out_channels, width))
            _narrow_head_outputs(narrowed, leaves[first + 1 :], outputs)
        _replace(narrowed, layer, slice_conv(layer, outputs, keep))
    else:
        if width < 1:
            raise ValueError("this head starts with its Linear: it has no inner width to cut "
                             "(a head width needs an inner conv, as MobileNetV2's)")  # fmt: skip
        if not any(_is_global_pool(m) for m in before):
            raise ValueError("a head's Linear can only be narrowed after a global average pool")
        _replace(narrowed, layer, slice_linear_inputs(layer, check_keep(keep, layer.in_features)))
    return narrowed


def _narrow_head_outputs(head: nn.Module, after: list[nn.Module], outputs: Tensor) -> None:
    """Cut what follows the head's inner conv to its ``outputs``: its BatchNorm, then the
    Linear that reads the globally pooled channels; what lies between must hold no state."""
    norm = after.pop(0) if after and isinstance(after[0], nn.BatchNorm2d) else None
    linear = next((i for i, m in enumerate(after) if isinstance(m, nn.Linear)), None)
    between = after if linear is None else after[:linear]
    if linear is None or any(_has_state(m) for m in between):
        raise ValueError("a head width needs conv (+ BatchNorm), parameter-free layers, a global "
                         f"average pool and the Linear; got {after}")  # fmt: skip
    if not any(_is_global_pool(m) for m in between):
        raise ValueError("a head width needs a global average pool before the Linear")
    if norm is not None:
        _replace(head, norm, slice_bn(norm, outputs))
    _replace(head, after[linear], slice_linear_inputs(after[linear], outputs))
