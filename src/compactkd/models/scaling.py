"""Uniform width scaling, shared by the zoo's families."""

from __future__ import annotations


def scaled_width(channels: int, width_mult: float) -> int:
    """A layer's width under a uniform multiplier (the ``uniform`` baseline), at least 1."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    return max(1, round(channels * width_mult))
