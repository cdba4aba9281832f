"""Helpers shared by attention modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def reduced_channels(channels: int, rd_ratio: float, rd_channels: int | None = None) -> int:
    """Hidden width of a bottleneck MLP: ``rd_channels`` if given, else ``channels * rd_ratio``
    rounded down, at least 1 (CIFAR stages have 16 channels: 16/16 = 1 hidden unit)."""
    if rd_channels is not None:
        if rd_channels < 1:
            raise ValueError(f"rd_channels must be ≥ 1, got {rd_channels}")
        return rd_channels
    return max(int(channels * rd_ratio), 1)


def query_pixels(queries: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (Q,) of query points given as fractions (Q, 2) = (y, x) in [0, 1] of an
    H×W map: pixel ⌊y·H⌋, ⌊x·W⌋, clamped to the map (so 1.0 is the last row or column). Fractions
    let one set of points address every layer of a network, whatever its resolution."""
    if queries.ndim != 2 or queries.shape[1] != 2 or not ((queries >= 0) & (queries <= 1)).all():
        raise ValueError(f"query points must be (Q, 2) fractions (y, x) in [0, 1], got {queries.tolist()}")
    rows = (queries[:, 0] * height).long().clamp(max=height - 1)
    cols = (queries[:, 1] * width).long().clamp(max=width - 1)
    return rows.to(queries.device), cols.to(queries.device)


class Conv1x1(nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, 1)`` (same parameters, state-dict keys, init and
    function) that runs as a matrix product on pooled (B, C, 1, 1) descriptors: y = W·z + b with W
    the (out, in) view of the kernel. On CPU, oneDNN's convolution of a 1×1 map costs about 75 µs
    per call at batch 128 against 9 µs for ``F.linear`` (1 thread, an ad-hoc timing loop that is
    not kept), and a channel gate's MLP makes two such calls per block, forward and backward. On
    whole resnet20 training steps (``benchmarks/descriptor_conv_speed.py``, batch 64, one thread,
    channels-last, idle machine) that saved 0.024 of the plain step for SE (1.141 → 1.117×) and
    0.006-0.010 for CBAM and eSE, within the run's noise for light CBAM and GC (±0.03):
    ``docs/benchmarks.md``. Inputs with a larger map run the convolution. Grouped convolutions are
    not offered (a block-diagonal W would be needed)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]


class SigmoidChannelGate(nn.Module):
    """A channel attention module whose gate is σ(logits(x)), (B, C, 1, 1), applied as y = gate ⊙ x.
    Subclasses define ``logits``; ``attention_maps`` reports the gate as {"channel": (B, C)}."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": the gate (B, C)} for input x (``attnvision.explain.attention_maps``)."""
        return {"channel": self.gate(x).flatten(1)}


def check_input_channels(module: nn.Module, x: torch.Tensor) -> None:
    """A conv-replacing module's input must be (B, module.in_channels, H, W): else a ValueError
    naming the shape it got and the in_channels to build it with."""
    if x.ndim != 4 or x.shape[1] != module.in_channels:
        raise ValueError(
            f"{type(module).__name__} expects (B, {module.in_channels}, H, W), got {tuple(x.shape)}; "
            f"build it with in_channels={x.shape[1] if x.ndim == 4 else '?'}"
        )
