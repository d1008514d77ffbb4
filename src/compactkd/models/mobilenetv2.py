"""MobileNetV2 (Sandler et al., 2018) adapted to 32x32 inputs.

Same blocks and widths as the ImageNet network, but the stem and the second stage keep stride 1,
so a 32x32 image is downsampled three times (to 4x4) instead of five; that costs about 88M
multiply-adds at width 1.0.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models._utils import _make_divisible

__all__ = ["CIFAR_SETTING", "ConvBNReLU", "InvertedResidual", "MobileNetV2", "mobilenet_v2"]

# (t, c, n, s): expansion factor, output channels, repeats, stride of the first repeat.
# The ImageNet setting has s=2 for c=24; CIFAR keeps that stage at full resolution.
CIFAR_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias, BN follows), BatchNorm2d and ReLU6 (or ``activation``), 'same' padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] = nn.ReLU6,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            activation(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion, k x k depthwise conv, linear 1x1 projection; residual when shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels

        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, kernel_size, stride, groups=hidden),
            # No activation after the projection: the paper's "linear bottleneck", since ReLU
            # in a narrow layer destroys information.
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """``features`` = [stem, InvertedResidual..., last 1x1 conv], then pool and linear."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        inverted_residual_setting: list[tuple[int, int, int, int]] | None = None,
        round_nearest: int = 8,
        last_width_mult: float | None = None,
    ) -> None:
        super().__init__()
        if width_mult <= 0 or (last_width_mult is not None and last_width_mult <= 0):
            raise ValueError(f"width multipliers must be positive, got {width_mult}, "
                             f"{last_width_mult}")  # fmt: skip
        setting = CIFAR_SETTING if inverted_residual_setting is None else inverted_residual_setting

        channels = _make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        # As in the paper, the last layer is not thinned for width_mult < 1, unless
        # last_width_mult says how (a network thinned everywhere, the `uniform` baseline).
        last = max(1.0, width_mult) if last_width_mult is None else last_width_mult
        self.last_channel = _make_divisible(LAST_CHANNELS * last, round_nearest)

        layers: list[nn.Module] = [ConvBNReLU(in_channels, channels, stride=1)]
        for t, c, n, s in setting:
            out_channels = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
        layers.append(ConvBNReLU(channels, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.last_channel, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
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


def mobilenet_v2(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    last_width_mult: float | None = None,
) -> MobileNetV2:
    """CIFAR MobileNetV2; ``width_mult`` scales every layer but the last 1x1 conv, which
    ``last_width_mult`` scales when given (default: the paper's ``max(1, width_mult)``)."""
    return MobileNetV2(num_classes, in_channels, width_mult, last_width_mult=last_width_mult)
