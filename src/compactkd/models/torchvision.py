"""Any torchvision classification model, randomly initialised, as ``tv:<name>``.

Weights are never downloaded: models are built with ``weights=None``. For grayscale (or other
non-RGB) input the stem convolution is swapped for one with the right number of input channels.
"""

from __future__ import annotations

from typing import Any

import torchvision
from torch import nn

__all__ = ["PREFIX", "build_torchvision_model", "replace_first_conv", "torchvision_model_names"]

PREFIX = "tv:"


def torchvision_model_names() -> list[str]:
    """Names of torchvision's classification models (detection, video etc. are excluded)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first ``nn.Conv2d`` of ``model`` (in place) by one taking ``in_channels``.

    Kernel size, stride, padding, dilation, bias and output channels are kept; the new weight is
    freshly initialised (kaiming normal), like the rest of an untrained model.
    """
    convs = ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    first = next(convs, None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d whose input channels could change")
    name, module = first
    if module.in_channels == in_channels:
        return model
    if module.groups != 1:
        raise ValueError(f"first conv {name!r} is grouped ({module.groups}); cannot change input")

    conv = nn.Conv2d(
        in_channels,
        module.out_channels,
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)

    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, conv)
    return model


def build_torchvision_model(
    name: str, *, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """Build torchvision model ``name`` (without the ``tv:`` prefix) with random weights.

    Extra ``kwargs`` go to the torchvision constructor (e.g. ``dropout``).
    """
    names = torchvision_model_names()
    if name not in names:
        raise ValueError(
            f"unknown torchvision classification model {name!r}; "
            f"use '{PREFIX}<name>' with one of: {', '.join(names)}"
        )
    if "weights" in kwargs:
        raise TypeError(f"'{PREFIX}{name}' is always built without pretrained weights")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        # Usually an unexpected keyword argument; say which model it came from.
        raise TypeError(f"cannot build '{PREFIX}{name}' with {sorted(kwargs)}: {e}") from e
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    return model
