"""A zoo model at other layer widths: what a structural pruner (torch-pruning) leaves of it.

Such a network has the graph its spec builds, but every layer may have lost channels. It is
saved as the spec plus its ``state_dict`` and rebuilt by :func:`load_narrowed`: the spec's
model, each ``Conv2d``, ``BatchNorm`` and ``Linear`` resized to the shapes in the state dict,
then the weights loaded. Depthwise convs stay depthwise (their groups follow their channels);
other grouped convs are refused. A narrowed network carries ``narrowed = True``, which tells
:mod:`compactkd.model_files` to save it in the narrowed format.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["load_narrowed"]

_BatchNorm = nn.modules.batchnorm._BatchNorm


def load_narrowed(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """``model`` (built from its spec) resized in place to the widths of ``state_dict``, with
    those weights loaded; marked ``narrowed``."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Conv2d):
            _resize_conv(module, state_dict[f"{prefix}weight"].shape, name)
        elif isinstance(module, nn.Linear):
            out_features, in_features = state_dict[f"{prefix}weight"].shape
            module.in_features, module.out_features = in_features, out_features
            _replace(module, (out_features, in_features), out_features)
        elif isinstance(module, _BatchNorm):
            _resize_norm(module, state_dict, prefix)
    model.load_state_dict(state_dict)
    model.narrowed = True
    return model


def _resize_conv(conv: nn.Conv2d, shape: torch.Size, name: str) -> None:
    if shape == conv.weight.shape:
        return
    out_channels, in_per_group, *kernel = shape
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if tuple(kernel) != conv.kernel_size or (conv.groups > 1 and not depthwise):
        raise ValueError(
            f"cannot narrow {name} ({conv}) to weight shape {tuple(shape)}: only the channels "
            "of plain or depthwise convs can change"
        )
    conv.out_channels = out_channels
    conv.groups = out_channels if depthwise else 1
    conv.in_channels = out_channels if depthwise else in_per_group
    _replace(conv, tuple(shape), out_channels)


def _resize_norm(norm: _BatchNorm, state_dict: Mapping[str, torch.Tensor], prefix: str) -> None:
    # A BatchNorm holds running statistics, affine parameters or both: either gives the width.
    key = "running_mean" if norm.track_running_stats else "weight"
    (channels,) = state_dict[f"{prefix}{key}"].shape
    norm.num_features = channels
    if norm.affine:
        _replace(norm, (channels,), channels)
    if norm.track_running_stats:
        norm.running_mean = norm.running_mean.new_empty(channels)
        norm.running_var = norm.running_var.new_empty(channels)


def _replace(module: nn.Module, weight_shape: tuple[int, ...], outputs: int) -> None:
    """New, uninitialised weight (and bias) of the given shapes: load_state_dict fills them."""
    module.weight = nn.Parameter(module.weight.new_empty(weight_shape))
    if module.bias is not None:
        module.bias = nn.Parameter(module.bias.new_empty(outputs))
