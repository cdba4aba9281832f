"""Light CBAM: timm's ``LightCbamModule`` (``timm/layers/cbam.py``), a cheaper variant of CBAM
(Woo, Park, Lee & Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018).

It has no paper of its own: timm's docstrings call it an experimental "lightweight" variant, and
this file reproduces what timm's code computes. CBAM pools twice and runs two MLP passes (channel)
or stacks two maps (spatial); the light variant averages the two poolings first, so each gate
sees one descriptor (x ∈ R^{B×C×H×W}, h = C·r hidden channels with r = 1/16, σ = sigmoid):
    z     = ½ GAP(x) + ½ GMP(x)                              (B, C, 1, 1)
    M_c   = σ(W1 · ReLU(W0 · z))                             W0 ∈ R^{h×C}, W1 ∈ R^{C×h}, no biases
    x'    = M_c ⊙ x
    m     = ½ Mean_c(x') + ½ Max_c(x')                       (B, 1, H, W)  one map, not two stacked
    M_s   = σ(BN(f^{k×k}(m)))                                1 → 1 conv, k = 7, no bias, pad k//2
    out   = M_s ⊙ x'
Channel gate first, then spatial gate, as CBAM.

Parameters per module: 2·C·h (MLP) + k² + 2 (conv, BN) — CBAM's minus its MLP biases and one
input channel of the spatial conv.

Placement: ``"block"``, where CBAM goes (residual branch after the last BN, before the addition).

Deviations: none from timm's module at its defaults (``mlp_bias=False``, ReLU, sigmoid gates);
its ``rd_divisor`` rounding is replaced by ``reduced_channels`` (rounds down; the same for every
multiple of 16). Its BN uses PyTorch's defaults like every BN here.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Conv1x1, reduced_channels


class LightChannelGate(nn.Module):
    """M_c = σ(MLP(½ GAP(x) + ½ GMP(x))), (B, C, H, W) → (B, C, 1, 1); ``logits(x)`` before σ."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None) -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = Conv1x1(channels, hidden, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = Conv1x1(hidden, channels, bias=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        pooled = 0.5 * (x.mean((2, 3), keepdim=True) + x.amax((2, 3), keepdim=True))
        return self.fc2(self.act(self.fc1(pooled)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()

    forward = gate


class LightSpatialGate(nn.Module):
    """M_s = σ(BN(conv_k(½ Mean_c(x) + ½ Max_c(x)))), (B, C, H, W) → (B, 1, H, W); ``logits(x)``
    before σ. ``kernel_size`` k is odd (the map keeps its H×W)."""

    def __init__(self, channels: int | None = None, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Light CBAM spatial kernel_size must be a positive odd integer (the map keeps "
                             f"its H×W), got {kernel_size}")
        # oneDNN's backward of this 1→1-channel conv runs ~5× faster (CPU, measured) with both the
        # weight and the input in channels-last strides
        self.conv = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv.to(memory_format=torch.channels_last)
        self.bn = nn.BatchNorm2d(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        pooled = 0.5 * (x.mean(1, keepdim=True) + x.amax(1, keepdim=True))
        return self.bn(self.conv(pooled.contiguous(memory_format=torch.channels_last)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()

    forward = gate


class LightCBAM(nn.Module):
    """Light channel gate then light spatial gate. Input and output (B, C, H, W).

    ``rd_ratio`` / ``rd_channels`` set the MLP's hidden width, ``spatial_kernel_size`` the spatial conv.
    """

    placement = "block"
    paper = "timm's LightCbamModule (Wightman 2020), after Woo et al., ECCV 2018"
    kind = "channel+spatial"

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 spatial_kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = LightChannelGate(channels, rd_ratio, rd_channels)
        self.spatial = LightSpatialGate(channels, spatial_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel.gate(x)
        return x * self.spatial.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": M_c (B, C), "spatial": M_s (B, 1, H, W)}, each on the input it reads."""
        channel = self.channel.gate(x)
        return {"channel": channel.flatten(1), "spatial": self.spatial.gate(x * channel)}
