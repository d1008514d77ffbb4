"""Cutting channels out of layers while keeping the teacher's weights for the rest.

One set of slicers for every narrowing in compactkd: interfaces (the stem's output, the
head's input) and the inner channels of ``pruned`` candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import skip_init

KeepLike = torch.Tensor | Sequence[int]


def check_keep(keep: KeepLike, channels: int, name: str = "keep") -> torch.Tensor:
    """``keep`` as a CPU LongTensor of distinct indices in ``[0, channels)``."""
    keep = torch.as_tensor(keep).cpu()
    if keep.ndim != 1 or len(keep) == 0 or keep.is_floating_point() or keep.dtype == torch.bool:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of channel indices, got {keep}")
    keep = keep.long()
    if keep.min() < 0 or keep.max() >= channels:
        raise ValueError(f"{name} must index {channels} channels, got {keep.tolist()}")
    if len(keep.unique()) != len(keep):
        raise ValueError(f"{name} has repeated channels: {keep.tolist()}")
    return keep


def is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def slice_conv(conv: nn.Conv2d, out_keep: torch.Tensor, in_keep: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` with output filters ``out_keep`` reading input channels ``in_keep``.

    For a depthwise conv ``out_keep`` equals ``in_keep``: it keeps those channels' filters.
    """
    weight = conv.weight.detach()
    out_idx = out_keep.to(weight.device)
    depthwise = is_depthwise(conv)
    new = skip_init(
        nn.Conv2d,
        len(in_keep),
        len(out_keep),
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=len(out_keep) if depthwise else 1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    sliced = weight[out_idx]
    if not depthwise:
        sliced = sliced[:, in_keep.to(weight.device)]
    with torch.no_grad():
        new.weight.copy_(sliced)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach()[out_idx])
    return new


def slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    """A copy of ``bn`` for channels ``keep``: affine parameters and running statistics."""
    # A BN without affine parameters or without statistics still has one of the two.
    reference = bn.weight if bn.affine else bn.running_mean
    placement = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    new = nn.BatchNorm2d(
        len(keep),
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        **placement,
    )
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            source = getattr(bn, name)
            if source is not None:
                getattr(new, name).copy_(source.detach()[keep.to(source.device)])
        if bn.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def slice_linear_inputs(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` that reads only the input features ``keep``."""
    new = nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight.detach()[:, keep.to(linear.weight.device)])
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach())
    return new.to(linear.weight.device, linear.weight.dtype)


def inner_width(channels: int, ratio: float) -> int:
    """How many of ``channels`` a cut to ``ratio`` keeps: at least one."""
    return max(1, round(ratio * channels))


def largest_l1(conv: nn.Conv2d, n: int, among: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted indices of the ``n`` output filters of ``conv`` with the largest L1 norm.

    The norm is taken over the teacher's whole filter, so the choice depends on the teacher
    and ``ratio`` only, not on which interface channels are kept. ``among`` restricts the
    candidates. Ties go to the lower index (stable sort), so the choice is deterministic.
    """
    l1 = conv.weight.detach().abs().sum(dim=(1, 2, 3)).cpu()
    candidates = torch.arange(conv.out_channels) if among is None else among
    order = torch.argsort(l1[candidates], descending=True, stable=True)[:n]
    return candidates[order].sort().values
