"""The ``pruned`` candidate family: a teacher block with its inner channels cut (docs/method.md §2).

``prune_block(block, in_keep, out_keep, ratio)`` builds a new module from a teacher block that

- reads the block's input interface restricted to the teacher channels ``in_keep``,
- writes only the teacher channels ``out_keep`` of the block's output interface, with the
  block's stride and spatial behaviour,
- keeps ``max(1, round(ratio * C))`` of every inner channel dimension of ``C`` channels, chosen
  as the filters of largest L1 norm, and inherits their weights and BatchNorm statistics.

Inside a stage the residual stream is carried at the width ``len(out_keep)``: every unit writes
the teacher channels ``out_keep`` and the next unit reads exactly those. Where a parameter-free
shortcut has to change the channel set (identity or zero-padding shortcut of the first unit, or
of a single unit) a :class:`ChannelMap` does it; a convolutional ``downsample`` (or
:class:`~compactkd.models.resnet.ConvShortcut`) is sliced.

With ``in_keep`` and ``out_keep`` complete and ``ratio == 1`` the result computes exactly what
the teacher block computes. At ``ratio == 1`` with a narrowed input it computes what the teacher
computes on an input whose other channels are zero, restricted to ``out_keep`` (exact for any
``out_keep`` in a single unit or a VGG block; in a stage of several units only for a complete
``out_keep``, as a narrowed ``out_keep`` also narrows the stream between the units).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual as TVInvertedResidual
from torchvision.models.resnet import BasicBlock as TVBasicBlock
from torchvision.models.resnet import Bottleneck as TVBottleneck

from compactkd.blocks.slicing import (
    KeepLike,
    check_keep,
    inner_width,
    is_depthwise,
    largest_l1,
    slice_bn,
    slice_conv,
)
from compactkd.models.mobilenetv2 import InvertedResidual
from compactkd.models.resnet import BasicBlock, PadShortcut

__all__ = ["SUPPORTED_BLOCKS", "ChannelMap", "PrunedResidual", "first_units", "prune_block"]

SUPPORTED_BLOCKS = (
    "compactkd BasicBlock, torchvision BasicBlock or Bottleneck, compactkd or torchvision "
    "InvertedResidual, an nn.Sequential stage of those units, or an nn.Sequential of "
    "Conv2d/BatchNorm2d/activation/pooling layers (a VGG block)"
)

# Layers that act on every channel separately and hold no parameters: copied as they are.
_CHANNELWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.Hardswish,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


class ChannelMap(nn.Module):
    """A parameter-free shortcut between narrowed interfaces.

    The teacher's shortcut copies input channel ``source[c]`` to output channel ``c`` (``-1``:
    a zero channel), after taking every ``stride``-th pixel. ``source=None`` means ``c -> c``,
    which covers both ``nn.Identity`` and :class:`~compactkd.models.resnet.PadShortcut`
    (its padded channels have no source among the input channels).

    On narrowed interfaces the input holds the teacher channels ``in_keep`` (in that order) and
    the output holds ``out_keep``: output position ``k`` copies input position ``j`` where
    ``source[out_keep[k]] == in_keep[j]``, and is zero where no kept input feeds it. Given an
    input whose dropped channels would be zero in the teacher, this is exactly the teacher's
    shortcut restricted to ``out_keep``. Also used to select a subset of channels (stride 1,
    ``out_keep`` within ``in_keep``).
    """

    def __init__(
        self,
        in_keep: KeepLike,
        out_keep: KeepLike,
        stride: int = 1,
        source: KeepLike | None = None,
    ) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        in_keep = torch.as_tensor(in_keep, dtype=torch.long).flatten().cpu()
        out_keep = torch.as_tensor(out_keep, dtype=torch.long).flatten().cpu()
        teacher_source = out_keep
        if source is not None:
            teacher_source = torch.as_tensor(source, dtype=torch.long).flatten().cpu()[out_keep]

        match = teacher_source.unsqueeze(1) == in_keep.unsqueeze(0)  # (out, in)
        found = match.any(dim=1)
        # Unmatched outputs point one past the input: forward appends a zero channel there.
        index = torch.where(found, match.long().argmax(dim=1), len(in_keep))
        # Saved with the weights: the channels a pruned depthwise unit reads are chosen by the
        # teacher's weights (largest L1), which a network rebuilt from its blueprint, on an
        # untrained teacher, would choose differently.
        self.register_buffer("index", index)
        self.in_channels = len(in_keep)
        self.out_channels = len(out_keep)
        self.stride = stride
        self.pads = not bool(found.all())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # A file saved before the index was kept: the one derived from the arguments stands.
        state_dict.setdefault(f"{prefix}index", self.index)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # The same pixels as PadShortcut and a 3x3/padding-1 stride-s conv take (7 -> 4).
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pads:
            x = F.pad(x, (0, 0, 0, 0, 0, 1))
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class PrunedResidual(nn.Module):
    """``activation(branch(x) + shortcut(x))``: a residual unit rebuilt at pruned widths.

    ``shortcut=None`` drops the addition (an InvertedResidual without residual connection),
    ``activation=None`` drops the activation (InvertedResidual's linear output).
    """

    def __init__(
        self,
        branch: nn.Sequential,
        shortcut: nn.Module | None,
        activation: nn.Module | None,
    ) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        if self.activation is not None:
            out = self.activation(out)
        return out


def prune_block(block: nn.Module, in_keep: KeepLike, out_keep: KeepLike, ratio: float) -> nn.Module:
    """A new module: ``block`` reading channels ``in_keep``, writing ``out_keep``, inner cut.

    ``in_keep`` / ``out_keep`` are distinct teacher channel indices of the block's input and
    output interfaces (sorted by convention; positions follow the given order). ``ratio`` in
    ``(0, 1]`` is the kept fraction of every inner channel dimension. The teacher block is
    neither modified nor shared: every weight and statistic is copied. The result is on the
    teacher's device, in its dtype, with trainable parameters, and in training mode if and only if
    the teacher's BatchNorm layers are (a block wrapped in a new Sequential may be flagged
    training while its layers are in eval mode).

    Raises ``ValueError`` for a ratio outside ``(0, 1]``, invalid channel indices, or a block
    that is not one of :data:`SUPPORTED_BLOCKS`.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    kind = _classify(block)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    # For every supported block the first conv reads the input and the last writes the output
    # (a torchvision downsample conv comes last but writes the same channels as the unit).
    in_keep = check_keep(in_keep, convs[0].in_channels, "in_keep")
    out_keep = check_keep(out_keep, convs[-1].out_channels, "out_keep")

    if kind == "unit":
        pruned = _prune_unit(block, in_keep, out_keep, ratio)
    elif kind == "stage":
        pruned = _prune_stage(list(block), in_keep, out_keep, ratio)
    else:
        pruned = _prune_chain(_flatten(block), in_keep, out_keep, ratio)
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    pruned.train(any(m.training for m in norms) if norms else block.training)
    # Weights are created on the teacher's device; this moves the ChannelMap index buffers too.
    return pruned.to(convs[0].weight.device)


def first_units(block: nn.Module, depth: int | None) -> nn.Module | None:
    """The first ``depth`` residual units of a stage (all of it for ``None``), or None where
    that is no new block: not a stage of residual units, or ``depth`` >= its units.

    The units after a stage's first read and write the same shape through an identity
    shortcut, so dropping them (MobileNetV2's and ResNet's depth choice) keeps the stage's
    interfaces.
    """
    if depth is None:
        return block
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(
            f"a pruned candidate's depth is a whole number of units >= 1, got {depth!r}"
        )
    units = list(block) if isinstance(block, nn.Sequential) else []
    if depth >= len(units) or not all(_unit_pruner(u) is not None for u in units):
        return None
    later = [_shape_preserving(u) for u in units[1:]]
    return nn.Sequential(*units[:depth]) if all(later) else None


def _shape_preserving(unit: nn.Module) -> bool:
    convs = [m for m in unit.modules() if isinstance(m, nn.Conv2d)]
    return convs[0].in_channels == _out_channels(unit) and all(
        c.stride in (1, (1, 1)) for c in convs
    )


# --- block kinds -------------------------------------------------------------------------------


def _unit_pruner(module: nn.Module) -> Callable[..., PrunedResidual] | None:
    """The pruning function for a residual unit, or None if ``module`` is not one."""
    if isinstance(module, BasicBlock | TVBasicBlock):
        return _prune_basic_block
    if isinstance(module, TVBottleneck):
        return _prune_bottleneck
    if isinstance(module, InvertedResidual | TVInvertedResidual):
        return _prune_inverted_residual
    return None


def _classify(block: nn.Module) -> str:
    """``"unit"``, ``"stage"`` (Sequential of units) or ``"chain"`` (Sequential of layers)."""
    if _unit_pruner(block) is not None:
        return "unit"
    if isinstance(block, nn.Sequential) and len(block) > 0:
        if all(_unit_pruner(child) is not None for child in block):
            return "stage"
        layers = _flatten(block)
        plain = all(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, *_CHANNELWISE)) for m in layers)
        if plain and any(isinstance(m, nn.Conv2d) for m in layers):
            return "chain"
    raise ValueError(f"cannot prune a {type(block).__name__}; supported: {SUPPORTED_BLOCKS}")


def _prune_unit(
    unit: nn.Module, in_keep: torch.Tensor, out_keep: torch.Tensor, ratio: float
) -> PrunedResidual:
    pruner = _unit_pruner(unit)
    assert pruner is not None  # _classify checked it
    return pruner(unit, in_keep, out_keep, ratio)


def _prune_stage(
    units: list[nn.Module], in_keep: torch.Tensor, out_keep: torch.Tensor, ratio: float
) -> nn.Sequential:
    """Prune each unit; the stream between units carries the stage's ``out_keep`` channels."""
    out_width = _out_channels(units[-1])
    pruned = []
    keep = in_keep
    for i, unit in enumerate(units):
        width = _out_channels(unit)
        unit_out = out_keep
        if i < len(units) - 1 and width != out_width:
            # A Sequential spanning several stages: nothing says which channels of this inner
            # interface to drop, so it keeps them all.
            unit_out = torch.arange(width)
        pruned.append(_prune_unit(unit, keep, unit_out, ratio))
        keep = unit_out
    return nn.Sequential(*pruned)


def _out_channels(unit: nn.Module) -> int:
    return [m for m in unit.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


# --- residual units ----------------------------------------------------------------------------


def _prune_basic_block(
    unit: BasicBlock | TVBasicBlock, in_keep: torch.Tensor, out_keep: torch.Tensor, ratio: float
) -> PrunedResidual:
    """Two 3x3 convs: conv1's outputs are the inner channels; shortcut mapped or sliced."""
    layers = [unit.conv1, unit.bn1, unit.relu, unit.conv2, unit.bn2]
    branch = _prune_chain(layers, in_keep, out_keep, ratio)
    # compactkd names it `shortcut` (Identity, PadShortcut or ConvShortcut), torchvision
    # `downsample`.
    teacher_shortcut = unit.shortcut if isinstance(unit, BasicBlock) else unit.downsample
    shortcut = _prune_shortcut(teacher_shortcut, in_keep, out_keep)
    return PrunedResidual(branch, shortcut, copy.deepcopy(unit.relu))


def _prune_bottleneck(
    unit: TVBottleneck, in_keep: torch.Tensor, out_keep: torch.Tensor, ratio: float
) -> PrunedResidual:
    """1x1, 3x3 (stride), 1x1: the two bottleneck widths are the inner channels."""
    layers = [unit.conv1, unit.bn1, unit.relu, unit.conv2, unit.bn2, unit.relu]
    branch = _prune_chain([*layers, unit.conv3, unit.bn3], in_keep, out_keep, ratio)
    shortcut = _prune_shortcut(unit.downsample, in_keep, out_keep)
    return PrunedResidual(branch, shortcut, copy.deepcopy(unit.relu))


def _prune_inverted_residual(
    unit: InvertedResidual | TVInvertedResidual,
    in_keep: torch.Tensor,
    out_keep: torch.Tensor,
    ratio: float,
) -> PrunedResidual:
    """Expansion, depthwise, linear projection: the expanded channels are the inner ones.

    Without expansion (t = 1) the depthwise conv works on the input channels themselves, so
    the cut keeps ``round(ratio * len(in_keep))`` of the kept input channels (see
    :func:`_prune_chain`), and what the dropped input channels still add is folded in.
    """
    layers = _flatten(unit.conv)
    branch = _prune_chain(layers, in_keep, out_keep, ratio)
    if is_depthwise(next(m for m in layers if isinstance(m, nn.Conv2d))):
        _fold_absent_inputs(layers, branch, in_keep, out_keep)
    # The residual adds the unit's input to its output; on narrowed interfaces those hold
    # different channel sets (in_keep vs out_keep) only for a stage's first unit.
    shortcut = _channel_map(in_keep, out_keep, 1) if unit.use_res_connect else None
    return PrunedResidual(branch, shortcut, None)


def _fold_absent_inputs(
    layers: list[nn.Module], branch: nn.Sequential, in_keep: torch.Tensor, out_keep: torch.Tensor
) -> None:
    """Fold into ``branch`` what the input channels outside ``in_keep`` add in the teacher.

    In a unit without expansion a zeroed input channel stays zero through the depthwise conv,
    but its BatchNorm shift and activation make it a constant, which the 1x1 projection adds
    to every output pixel. Subtracting that constant from the projection BN's running mean
    keeps the pruned unit equal to the teacher on an input whose dropped channels are zero (in
    training mode BN removes a constant shift by itself).
    """
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    depthwise, project, norm = layers[convs[0]], layers[convs[-1]], branch[-1]
    if project.kernel_size != (1, 1) or not isinstance(norm, nn.BatchNorm2d):
        raise ValueError("an InvertedResidual must end with a 1x1 conv and a BatchNorm2d")
    absent = torch.ones(depthwise.in_channels, dtype=torch.bool)
    absent[in_keep] = False
    if norm.running_mean is None or not absent.any():
        return
    weight = project.weight.detach()
    with torch.no_grad():
        # A copy in eval mode: the teacher's own layers keep their mode.
        before_projection = copy.deepcopy(nn.Sequential(*layers[: convs[-1]])).eval()
        zeros = weight.new_zeros(1, depthwise.in_channels, 1, 1)
        constant = before_projection(zeros) * absent.to(weight.device).view(1, -1, 1, 1)
        shift = F.conv2d(constant, weight).flatten()  # weight only: the bias is kept anyway
        norm.running_mean -= shift[out_keep.to(weight.device)]


def _prune_shortcut(
    shortcut: nn.Module | None, in_keep: torch.Tensor, out_keep: torch.Tensor
) -> nn.Module:
    """The teacher's shortcut from ``in_keep`` to ``out_keep`` channels."""
    if shortcut is None or isinstance(shortcut, nn.Identity):
        return _channel_map(in_keep, out_keep, 1)
    if isinstance(shortcut, PadShortcut):
        return _channel_map(in_keep, out_keep, shortcut.stride)
    if isinstance(shortcut, nn.Sequential | nn.Conv2d):
        # torchvision downsample (a strided 1x1 conv and BN) or a ConvShortcut (the conv
        # alone), sliced to [out_keep, in_keep].
        return _prune_chain(_flatten(shortcut), in_keep, out_keep, 1.0)
    raise ValueError(f"unsupported shortcut {type(shortcut).__name__}")


def _channel_map(in_keep: torch.Tensor, out_keep: torch.Tensor, stride: int) -> nn.Module:
    # A plain Identity where nothing moves keeps the common case free.
    if stride == 1 and torch.equal(in_keep, out_keep):
        return nn.Identity()
    return ChannelMap(in_keep, out_keep, stride)


# --- chains of layers --------------------------------------------------------------------------


def _prune_chain(
    layers: Sequence[nn.Module], in_keep: torch.Tensor, out_keep: torch.Tensor, ratio: float
) -> nn.Sequential:
    """Slice a chain of Conv2d / BatchNorm2d / channel-wise layers.

    The last conv writes ``out_keep``; every earlier conv keeps its largest-L1 filters. A
    depthwise conv keeps the channels it receives, except as the chain's first conv, where it
    works on the input channels directly: then it keeps the largest-L1 ``ratio`` of the kept
    input channels, picked from the input by a :class:`ChannelMap`.
    """
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    keep = in_keep
    pruned: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, nn.Conv2d) and is_depthwise(layer):
            if layer is convs[-1]:
                raise ValueError("a depthwise conv cannot write the block's output")
            if layer is convs[0]:
                selected = largest_l1(layer, inner_width(len(keep), ratio), among=keep)
                if not torch.equal(selected, keep):
                    pruned.append(ChannelMap(keep, selected))
                keep = selected
            pruned.append(slice_conv(layer, keep, keep))
        elif isinstance(layer, nn.Conv2d):
            if layer.groups != 1:
                raise ValueError(f"cannot prune grouped conv {layer} (groups={layer.groups})")
            if layer is convs[-1]:
                out = out_keep
            else:
                out = largest_l1(layer, inner_width(layer.out_channels, ratio))
            pruned.append(slice_conv(layer, out, keep))
            keep = out
        elif isinstance(layer, nn.BatchNorm2d):
            pruned.append(slice_bn(layer, keep))
        elif isinstance(layer, _CHANNELWISE):
            pruned.append(copy.deepcopy(layer))
        else:
            raise ValueError(f"cannot prune layer {type(layer).__name__}")
    return nn.Sequential(*pruned)


def _flatten(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of nested Sequentials (ConvBNReLU, Conv2dNormActivation, ...)."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _flatten(child)]
    return [module]
