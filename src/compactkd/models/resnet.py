"""CIFAR ResNets of He et al. (2016), "Deep Residual Learning for Image Recognition", section 4.2.

Three stages of ``n`` BasicBlocks with 16, 32 and 64 channels on a 3x3 stem, depth ``6n + 2``.
Shortcuts are option A: identity, with stride-2 subsampling and zero-padded channels where the
shape changes, so shortcuts add no parameters (ResNet-20 has 0.27M, as in the paper's table 6).
``shortcut="conv"`` writes those zero-padding shortcuts as strided 1x1 convolutions holding the
zero-padded identity (:class:`ConvShortcut`): the same function, a few parameters more, and a
graph that tools which trace channels through convolutions (torch-pruning) can follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .scaling import scaled_width

__all__ = [
    "SHORTCUTS", "BasicBlock", "ConvShortcut", "PadShortcut", "ResNet", "resnet20", "resnet32",
    "resnet56",
]  # fmt: skip

# Output channels of the three stages; the second and third halve the resolution.
STAGE_CHANNELS: tuple[int, int, int] = (16, 32, 64)

# Blocks per stage for each depth: depth = 6 * n + 2.
BLOCKS_PER_STAGE: dict[str, int] = {"resnet20": 3, "resnet32": 5, "resnet56": 9}

# How a block whose shape changes carries its input: zero-padding, or a 1x1 conv doing the same.
SHORTCUTS = ("pad", "conv")


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


class ConvShortcut(nn.Conv2d):
    """:class:`PadShortcut` as a strided 1x1 conv without bias: output channel ``c`` copies
    input channel ``c`` (a zero-padded identity matrix), the new channels are zero.

    It starts as exactly the option-A shortcut and is an ordinary conv after that (trained,
    pruned); the zoo's Kaiming initialisation leaves it alone.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        if out_channels < in_channels:
            raise ValueError(f"ConvShortcut cannot drop channels ({in_channels} -> {out_channels})")
        super().__init__(in_channels, out_channels, 1, stride, bias=False)

    def reset_parameters(self) -> None:
        # Called by nn.Conv2d's constructor: the shortcut starts as option A.
        with torch.no_grad():
            self.weight.copy_(torch.eye(self.out_channels, self.in_channels).view_as(self.weight))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the addition."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "pad"
    ) -> None:
        super().__init__()
        # Convs feed BatchNorm, whose shift makes a conv bias redundant.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "conv":
            self.shortcut = ConvShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out)


class ResNet(nn.Module):
    """CIFAR ResNet: stem, three stages of ``num_blocks`` BasicBlocks, global pool, linear.

    ``shortcut``: ``"pad"`` (option A, :class:`PadShortcut`) or ``"conv"`` (the same function
    as a 1x1 conv, :class:`ConvShortcut`) where a block changes shape.
    """

    def __init__(
        self,
        num_blocks: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        shortcut: str = "pad",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        c1, c2, c3 = (scaled_width(c, width_mult) for c in STAGE_CHANNELS)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(c1, c1, num_blocks, 1, shortcut)
        self.layer2 = self._make_layer(c1, c2, num_blocks, 2, shortcut)
        self.layer3 = self._make_layer(c2, c3, num_blocks, 2, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, ConvShortcut):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_layer(
        in_channels: int, out_channels: int, num_blocks: int, stride: int, shortcut: str
    ) -> nn.Sequential:
        # Only the first block of a stage changes resolution and width.
        blocks = [BasicBlock(in_channels, out_channels, stride, shortcut)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet20(
    *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "pad"
) -> ResNet:
    """ResNet-20 (0.27M parameters at 10 classes)."""
    return ResNet(BLOCKS_PER_STAGE["resnet20"], num_classes, in_channels, width_mult, shortcut)


def resnet32(
    *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "pad"
) -> ResNet:
    """ResNet-32 (0.46M parameters at 10 classes)."""
    return ResNet(BLOCKS_PER_STAGE["resnet32"], num_classes, in_channels, width_mult, shortcut)


def resnet56(
    *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, shortcut: str = "pad"
) -> ResNet:
    """ResNet-56 (0.85M parameters at 10 classes)."""
    return ResNet(BLOCKS_PER_STAGE["resnet56"], num_classes, in_channels, width_mult, shortcut)
