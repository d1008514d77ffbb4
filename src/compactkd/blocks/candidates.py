"""Candidate student blocks (docs/method.md §2): the design space, made into modules.

Every candidate of block ``B_i`` reads interface ``i-1`` at some kept fraction of its
channels and writes interface ``i`` at some kept fraction. The kept channels of an
interface are a fixed subset of the teacher's (the most important ones), so a candidate
learns ``x_i[:, keep_out]`` from ``x_{i-1}[:, keep_in]`` exactly as the teacher computes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compactkd.blocks.partition import Partition
from compactkd.blocks.pruning import ChannelMap, first_units, prune_block
from compactkd.models.mobilenetv2 import ConvBNReLU, InvertedResidual

# Per interface: the sorted indices of its kept channels, by kept fraction.
Keeps = Sequence[Mapping[float, torch.Tensor]]

# Each family and the hyper-parameters its entry in the design space may list.
FAMILY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "teacher": (),
    "pruned": ("ratio",),
    "mbconv": ("expansion", "depth", "kernel"),
    "dsconv": ("depth", "width"),
    "conv": ("depth", "width"),
    "skip": (),
}
# Settings a family may list or leave out (then the whole teacher stage).
OPTIONAL_PARAMETERS: dict[str, tuple[str, ...]] = {"pruned": ("depth",)}


@dataclass
class Candidate:
    """One candidate block: what it is, which interface widths it joins, and its module."""

    block: str
    family: str
    params: dict[str, Any]
    in_fraction: float
    out_fraction: float
    module: nn.Module = field(repr=False)

    @property
    def name(self) -> str:
        # An unset optional setting (a pruned stage's depth: null) leaves the name alone.
        settings = "".join(
            f"_{key[0]}{value}" for key, value in self.params.items() if value is not None
        )
        return f"{self.block}:{self.family}{settings}@{self.in_fraction:g}-{self.out_fraction:g}"


# ---------------------------------------------------------------- generic families


def _mbconv(
    cin: int, cout: int, stride: int, expansion: int, depth: int, kernel: int
) -> nn.Sequential:
    """MobileNetV2's inverted residuals; only the first carries the stride."""
    units = [InvertedResidual(cin, cout, stride, expansion, kernel)]
    units += [InvertedResidual(cout, cout, 1, expansion, kernel) for _ in range(depth - 1)]
    return nn.Sequential(*units)


def _conv_bn_relu(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> ConvBNReLU:
    return ConvBNReLU(cin, cout, kernel, stride, groups, activation=nn.ReLU)


def _dsconv(cin: int, cout: int, stride: int, depth: int, width: float) -> nn.Sequential:
    """Depthwise-separable layers; inner layers at ``width`` times the output channels."""
    inner = max(1, round(width * cout))
    layers, channels = [], cin
    for index in range(depth):
        out = cout if index == depth - 1 else inner
        layers += [
            _conv_bn_relu(channels, channels, 3, stride if index == 0 else 1, groups=channels),
            _conv_bn_relu(channels, out, 1),
        ]
        channels = out
    return nn.Sequential(*layers)


def _conv(cin: int, cout: int, stride: int, depth: int, width: float) -> nn.Sequential:
    """Plain 3x3 conv layers; inner layers at ``width`` times the output channels."""
    inner = max(1, round(width * cout))
    widths = [cin] + [inner] * (depth - 1) + [cout]
    return nn.Sequential(
        *(_conv_bn_relu(widths[i], widths[i + 1], 3, stride if i == 0 else 1) for i in range(depth))
    )


# ---------------------------------------------------------------- design space


def expand_space(space: Mapping[str, Mapping[str, Sequence[Any]] | None]) -> list[tuple]:
    """``{"pruned": {"ratio": [0.25, 0.5]}}`` -> ``[("pruned", {"ratio": 0.25}), ...]``."""
    variants = []
    for family, settings in space.items():
        if family not in FAMILY_PARAMETERS:
            raise ValueError(f"unknown candidate family {family!r}; choose from "
                             f"{sorted(FAMILY_PARAMETERS)}")  # fmt: skip
        settings = dict(settings or {})
        optional = OPTIONAL_PARAMETERS.get(family, ())
        unknown = set(settings) - {*FAMILY_PARAMETERS[family], *optional}
        missing = set(FAMILY_PARAMETERS[family]) - set(settings)
        if unknown or missing:
            raise ValueError(
                f"family {family!r} takes {list(FAMILY_PARAMETERS[family])}"
                + (f" and optionally {list(optional)}" if optional else "")
                + f"; unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        keys = [*FAMILY_PARAMETERS[family], *(k for k in optional if k in settings)]
        for values in itertools.product(*(_as_list(settings[k]) for k in keys)):
            variants.append((family, dict(zip(keys, values, strict=True))))
    return variants


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def block_spaces(
    block_names: Sequence[str],
    space: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[tuple]]:
    """The variants each block may use: the global space, replaced or restricted per block.

    ``overrides[block]`` may hold ``space`` (a whole design space for that block) and/or
    ``families`` (a list naming which families of its space it keeps).
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(block_names)
    if unknown:
        raise ValueError(f"unknown block(s) {sorted(unknown)}; the blocks are {list(block_names)}")
    spaces = {}
    for block in block_names:
        override = dict(overrides.get(block) or {})
        bad_keys = set(override) - {"space", "families"}
        if bad_keys:
            raise ValueError(f"{block}: unknown setting(s) {sorted(bad_keys)}; use space, families")
        block_space = override.get("space", space)
        families = override.get("families", list(block_space))
        missing = set(families) - set(block_space)
        if missing:
            raise ValueError(f"{block}: families {sorted(missing)} are not in its design space "
                             f"{sorted(block_space)}")  # fmt: skip
        spaces[block] = expand_space({f: block_space[f] for f in families})
    return spaces


def interface_keeps(
    importance: Sequence[torch.Tensor], fractions: Sequence[float]
) -> list[dict[float, torch.Tensor]]:
    """Per interface, per kept fraction: the sorted indices of its most important channels."""
    if 1.0 not in fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"interface_fractions must lie in (0, 1] and include 1.0, got {fractions}")
    keeps = []
    for scores in importance:
        order = torch.argsort(scores, descending=True, stable=True)
        keeps.append(
            {
                f: torch.sort(order[: max(1, round(f * len(scores)))]).values
                for f in sorted(set(fractions))
            }
        )
    return keeps


def _stride(in_shape: Sequence[int], out_shape: Sequence[int]) -> int:
    return max(1, round(in_shape[1] / out_shape[1]))


def make_candidate_module(
    partition: Partition,
    index: int,
    family: str,
    params: Mapping[str, Any],
    in_keep: torch.Tensor,
    out_keep: torch.Tensor,
) -> nn.Module | None:
    """The module of one candidate for block ``index`` (0-based), or None where it cannot exist."""
    teacher_block = partition.blocks[index]
    in_shape, out_shape = partition.interfaces[index], partition.interfaces[index + 1]
    cin, cout, stride = len(in_keep), len(out_keep), _stride(in_shape, out_shape)
    if family == "teacher":  # the block itself, exactly: only between full-width interfaces
        full = cin == in_shape[0] and cout == out_shape[0]
        return prune_block(teacher_block, in_keep, out_keep, 1.0) if full else None
    if family == "pruned":
        block = first_units(teacher_block, params.get("depth"))
        return None if block is None else prune_block(block, in_keep, out_keep, params["ratio"])
    if family == "mbconv":
        return _mbconv(cin, cout, stride, params["expansion"], params["depth"], params["kernel"])
    if family == "dsconv":
        return _dsconv(cin, cout, stride, params["depth"], params["width"])
    if family == "conv":
        return _conv(cin, cout, stride, params["depth"], params["width"])
    if family == "skip":  # only where the teacher's interfaces have the same shape
        return ChannelMap(in_keep, out_keep) if tuple(in_shape) == tuple(out_shape) else None
    raise ValueError(f"unknown candidate family {family!r}")


def build_candidates(
    partition: Partition,
    spaces: Mapping[str, list[tuple]],
    keeps: Sequence[Mapping[float, torch.Tensor]],
) -> list[Candidate]:
    """Every variant of every block at every pair of (input, output) interface fractions."""
    candidates = []
    for index, block in enumerate(partition.block_names):
        pairs = itertools.product(keeps[index].items(), keeps[index + 1].items())
        for (fin, in_keep), (fout, out_keep) in pairs:
            for family, params in spaces[block]:
                module = make_candidate_module(partition, index, family, params, in_keep, out_keep)
                if module is not None:
                    candidates.append(Candidate(block, family, params, fin, fout, module))
    return candidates
