"""Helpers shared by attention modules."""

from __future__ import annotations


def reduced_channels(channels: int, rd_ratio: float, rd_channels: int | None = None) -> int:
    """Hidden width of a bottleneck MLP: ``rd_channels`` if given, else ``channels * rd_ratio``
    rounded down, at least 1 (CIFAR stages have 16 channels: 16/16 = 1 hidden unit)."""
    if rd_channels is not None:
        if rd_channels < 1:
            raise ValueError(f"rd_channels must be ≥ 1, got {rd_channels}")
        return rd_channels
    return max(int(channels * rd_ratio), 1)
