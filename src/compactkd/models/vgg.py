"""CIFAR-style VGG with batch norm (Simonyan & Zisserman, 2015; BN variant as in torchvision).

The convolutional part follows the paper's configurations A (VGG-11) and D (VGG-16); the three
large fully connected layers are replaced by global average pooling and one linear layer, as is
usual for 32x32 inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from .scaling import scaled_width

__all__ = ["CFGS", "VGG", "make_features", "vgg11_bn", "vgg16_bn"]

# An int is a 3x3 conv-BN-ReLU with that many output channels; "M" is a 2x2 max pool.
# fmt: off
CFGS: dict[str, list[int | str]] = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [
        64, 64, "M",
        128, 128, "M",
        256, 256, 256, "M",
        512, 512, 512, "M",
        512, 512, 512, "M",
    ],
}
# fmt: on


def make_features(cfg: list[int | str], in_channels: int = 3) -> nn.Sequential:
    """Flat ``nn.Sequential`` of Conv2d, BatchNorm2d, ReLU triples and MaxPool2d layers."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            # ceil_mode keeps a 1x1 map at 1x1, so five pools also work on 8x8 or 28x28 inputs.
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            out_channels = int(v)
            # No conv bias: the BatchNorm shift that follows makes it redundant.
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG features, global average pool and a single linear classifier."""

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        cfg = [v if v == "M" else scaled_width(int(v), width_mult) for v in cfg]
        self.features = make_features(cfg, in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channels = [v for v in cfg if v != "M"][-1]
        self.classifier = nn.Linear(int(last_channels), num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


def vgg11_bn(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    """VGG-11 with batch norm (configuration A)."""
    return VGG(CFGS["vgg11_bn"], num_classes, in_channels, width_mult)


def vgg16_bn(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    """VGG-16 with batch norm (configuration D)."""
    return VGG(CFGS["vgg16_bn"], num_classes, in_channels, width_mult)
