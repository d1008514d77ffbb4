"""CIFAR ResNets of He et al. (2016), "Deep Residual Learning for Image Recognition", section 4.2.

Three stages of ``n`` BasicBlocks with 16, 32 and 64 channels on a 3x3 stem, depth ``6n + 2``.
Shortcuts are option A: identity, with stride-2 subsampling and zero-padded channels where the
shape changes, so shortcuts add no parameters (ResNet-20 has 0.27M, as in the paper's table 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .scaling import scaled_width

__all__ = ["BasicBlock", "PadShortcut", "ResNet", "resnet20", "resnet32", "resnet56"]

# Output channels of the three stages; the second and third halve the resolution.
STAGE_CHANNELS: tuple[int, int, int] = (16, 32, 64)

# Blocks per stage for each depth: depth = 6 * n + 2.
BLOCKS_PER_STAGE: dict[str, int] = {"resnet20": 3, "resnet32": 5, "resnet56": 9}


class PadShortcut(nn.Module):
    """Parameter-free shortcut (option A): subsample by ``stride``, zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"PadShortcut cannot drop channels ({in_channels} -> {out_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Taking every stride-th pixel matches the output size of the 3x3, padding-1 conv of the
        # residual branch for even and odd inputs alike (e.g. 7 -> 4).
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C front, C back).
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        # Convs feed BatchNorm, whose shift makes a conv bias redundant.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out)


class ResNet(nn.Module):
    """CIFAR ResNet: stem, three stages of ``num_blocks`` BasicBlocks, global pool, linear."""

    def __init__(
        self,
        num_blocks: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        c1, c2, c3 = (scaled_width(c, width_mult) for c in STAGE_CHANNELS)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(c1, c1, num_blocks, stride=1)
        self.layer2 = self._make_layer(c1, c2, num_blocks, stride=2)
        self.layer3 = self._make_layer(c2, c3, num_blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_layer(
        in_channels: int, out_channels: int, num_blocks: int, stride: int
    ) -> nn.Sequential:
        # Only the first block of a stage changes resolution and width.
        blocks = [BasicBlock(in_channels, out_channels, stride)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet20(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """ResNet-20 (0.27M parameters at 10 classes)."""
    return ResNet(BLOCKS_PER_STAGE["resnet20"], num_classes, in_channels, width_mult)


def resnet32(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """ResNet-32 (0.46M parameters at 10 classes)."""
    return ResNet(BLOCKS_PER_STAGE["resnet32"], num_classes, in_channels, width_mult)


def resnet56(*, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> ResNet:
    """ResNet-56 (0.85M parameters at 10 classes)."""
    return ResNet(BLOCKS_PER_STAGE["resnet56"], num_classes, in_channels, width_mult)
