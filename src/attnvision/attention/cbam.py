"""Convolutional Block Attention Module (Woo et al., "CBAM: Convolutional Block Attention Module",
ECCV 2018).

Equations (x ∈ R^{B×C×H×W}, r = rd_ratio, σ = sigmoid):
    M_c(x) = σ(MLP(AvgPool(x)) + MLP(MaxPool(x)))          ∈ R^{B×C×1×1}   (one shared MLP)
             MLP(z) = W1 · ReLU(W0 · z + b0) + b1,  W0 ∈ R^{C·r×C}, W1 ∈ R^{C×C·r}
    x'     = M_c(x) ⊙ x
    M_s(x') = σ(BN(f^{7×7}([Max_c(x'); Mean_c(x')])))      ∈ R^{B×1×H×W}
             (max and mean over the channel axis, stacked as 2 channels; 7×7 conv, no bias, pad 3)
    out    = M_s(x') ⊙ x'
Channel gate first, then spatial gate (the paper's best arrangement); no residual inside the
module: the block's own shortcut adds the input back.

Placement: ``"block"``, on the residual branch of every block after its last BN and before the
addition (paper Fig. 3).

Deviations from the paper's equations, all taken from the official code (Jongchan/attention-module),
whose structure produced the published numbers (its checkpoints store the MLP as nn.Linear, so
loading them needs a reshape of those weights to 1×1 convolutions):
- the MLP layers carry biases (the paper's equation omits them); as 1×1 convolutions;
- the spatial map is followed by a BatchNorm (not in the paper's Eq. 3);
- channel pooling is stacked [max, mean]; the paper writes [avg; max]. The order only permutes
  the conv's two input channels (the same function family), but matters when loading weights.
  timm stacks [mean, max].
Differences from the official code:
- the spatial BN uses PyTorch's default momentum 0.1 like every other BN in the backbone; the
  official code uses 0.01 (a TF-style 0.99 decay), which only changes how fast running
  statistics track training and lags on short schedules;
- the official ResNet init zeroes that BN's γ, so every spatial gate starts as a constant 0.5.
  The paper does not mention it; it is off by default and available as ``zero_init_bn=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Conv1x1, reduced_channels
from .gate import Gate
from .pooling import ChannelPool, z_pool


class ChannelGate(nn.Module):
    """A shared two-layer MLP over pooled channel descriptors, logits summed: CBAM's M_c with
    ``pool="avgmax"``, SE's excitation with ``"avg"`` (``pooling.py`` lists the rules).
    ``logits(x)``: (B, C, H, W) → (B, C, 1, 1); ``gate(x)`` = σ(logits) (also ``forward``)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 pool: str = "avgmax") -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.pool = ChannelPool(pool, channels)
        self.mlp = nn.Sequential(Conv1x1(channels, hidden), nn.ReLU(inplace=True), Conv1x1(hidden, channels))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # All pooled descriptors go through the shared MLP in one call: (n·B, C, 1, 1).
        descriptors = self.pool(x)
        return sum(self.mlp(torch.cat(descriptors)).chunk(len(descriptors)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()

    forward = gate


class SpatialGate(nn.Module):
    """CBAM's spatial attention map M_s. ``logits(x)``: (B, C, H, W) → (B, 1, H, W);
    ``gate(x)`` = σ(logits) (also ``forward``).

    ``kernel_size`` is the conv size (odd; the paper compares 3 and 7 and picks 7).
    ``zero_init_bn`` sets the BN's γ to 0 as the official ResNet init does (gate = σ(β) = 0.5 at start).
    """

    def __init__(self, channels: int | None = None, kernel_size: int = 7, zero_init_bn: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM spatial kernel_size must be a positive odd integer (the map keeps "
                             f"its H×W), got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        if zero_init_bn:
            nn.init.zeros_(self.bn.weight)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        pooled = z_pool(x, 1)  # [max, mean] over channels: (B, 2, H, W)
        # oneDNN's backward of this 2→1-channel conv runs 3.5× faster on a channels-last input
        # (CPU, measured); for two channels the conversion itself is cheap.
        return self.bn(self.conv(pooled.contiguous(memory_format=torch.channels_last)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()

    forward = gate


class CBAM(Gate):
    """Channel gate then spatial gate. Input and output (B, C, H, W): the gate composer's
    sequential combination of ``ChannelGate`` (avg+max) and ``SpatialGate`` (``gate.py``).

    ``rd_ratio`` / ``rd_channels`` set the MLP's hidden width, ``spatial_kernel_size`` the spatial conv.
    """

    placement = "block"
    paper = "Woo, Park, Lee & Kweon, ECCV 2018"
    kind = "channel+spatial"

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 spatial_kernel_size: int = 7, zero_init_bn: bool = False) -> None:
        super().__init__(channels, channel="se", spatial="cbam", pool="avgmax",
                         channel_kw={"rd_ratio": rd_ratio, "rd_channels": rd_channels},
                         spatial_kw={"kernel_size": spatial_kernel_size, "zero_init_bn": zero_init_bn})
