"""Model zoo: build any model from a plain-data spec.

A spec is a JSON-serialisable mapping such as
``{"name": "resnet20", "num_classes": 10, "in_channels": 3}``; any further keys are passed to
the builder (e.g. ``"width_mult": 0.5`` for ``mobilenet_v2``). The built model keeps a copy in
``model.spec``, so a model can be saved as spec + state_dict and rebuilt with ``build_model``.

Names: the CIFAR models below, or ``tv:<name>`` for any torchvision classification model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .mobilenetv2 import InvertedResidual, MobileNetV2, mobilenet_v2
from .resnet import BasicBlock, ConvShortcut, PadShortcut, ResNet, resnet20, resnet32, resnet56
from .torchvision import PREFIX as TORCHVISION_PREFIX
from .torchvision import build_torchvision_model, torchvision_model_names
from .vgg import VGG, vgg11_bn, vgg16_bn

__all__ = [
    "MODELS",
    "TORCHVISION_PREFIX",
    "VGG",
    "BasicBlock",
    "ConvShortcut",
    "InvertedResidual",
    "MobileNetV2",
    "PadShortcut",
    "ResNet",
    "available_models",
    "build_model",
]

# The zoo proper: name -> builder taking keyword arguments only.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "vgg11_bn": vgg11_bn,
    "vgg16_bn": vgg16_bn,
    "mobilenet_v2": mobilenet_v2,
}


def available_models(include_torchvision: bool = False) -> list[str]:
    """Zoo model names; with ``include_torchvision`` also every ``tv:<name>``."""
    names = list(MODELS)
    if include_torchvision:
        names += [TORCHVISION_PREFIX + n for n in torchvision_model_names()]
    return names


def _check_kwargs(name: str, builder: Callable[..., nn.Module], kwargs: Mapping[str, Any]) -> None:
    # Fail with the accepted keys listed, rather than deep inside a constructor.
    accepted = [p for p in inspect.signature(builder).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} got unexpected spec keys {unknown}; it accepts 'name' and {accepted}"
        )


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Build the model described by ``spec`` and attach ``model.spec = dict(spec)``.

    Raises ``ValueError`` for an unknown name and ``TypeError`` for keys the model does not take.
    """
    if "name" not in spec:
        raise ValueError(f"model spec needs a 'name' key, got keys {sorted(spec)}")
    name = spec["name"]
    kwargs = {k: v for k, v in spec.items() if k != "name"}

    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        model = build_torchvision_model(name.removeprefix(TORCHVISION_PREFIX), **kwargs)
    elif name in MODELS:
        builder = MODELS[name]
        _check_kwargs(name, builder, kwargs)
        model = builder(**kwargs)
    else:
        raise ValueError(
            f"unknown model {name!r}; available: {', '.join(available_models())}, "
            f"or '{TORCHVISION_PREFIX}<name>' for a torchvision classification model"
        )

    # A plain attribute, not a buffer: it stays out of the state_dict.
    model.spec = dict(spec)
    return model
