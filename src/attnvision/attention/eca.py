"""Efficient Channel Attention (Wang et al., "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020).

Equations (x ∈ R^{B×C×H×W}):
    y = GAP(x) ∈ R^{B×C}
    ω = σ(C1D_k(y))          a bias-free 1-D convolution of size k along the channel axis
                             (zero-padded by (k-1)/2), i.e. ω_i = σ(Σ_{j=1..k} w_j · y_{i+j-1-(k-1)/2}),
                             the k weights shared by all channels
    out = ω ⊙ x              (broadcast over H×W)
    k = ψ(C) = |log2(C)/γ + b/γ|_odd,  γ = 2, b = 1      (adaptive kernel size)

``|t|_odd`` is "the nearest odd number of t"; we compute it as t' = int(|t|), k = t' if t' is odd
else t' + 1 (as timm does). That equals the nearest odd number
except at even integers t, which the paper leaves ambiguous and which this rounds up
(C = 2048: t = 6 → k = 7). ResNet-50's stages (C = 256, 512, 1024, 2048) get k = 5, 5, 5, 7.

Placement: ``"block"``, on the residual branch of every block after its last BN and before the
addition (paper Fig. 2 / official ``eca_resnet.py``), like SE.

Deviations: none from the paper. Differences from other code, kept out on purpose:
- the official ECA-Net release does not code the formula; its checkpoints were trained with
  per-stage kernels [3, 5, 5, 7] (ResNet-50). Pass them through the backbone, e.g.
  ``attn_stage_kw=[{"kernel_size": 3}, {}, {}, {}]``;
- timm's ``EcaModule`` clamps k to at least 3 (``max(k, 3)``); the paper does not, so here
  C < 8 gives k = 1, a gate without cross-channel interaction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import SigmoidChannelGate
from .pooling import ChannelPool


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size k = |log2(C)/γ + b/γ|_odd (ECA paper), e.g. 256 → 5, 2048 → 7."""
    if channels < 1 or gamma <= 0:
        raise ValueError(f"ECA needs channels >= 1 and gamma > 0, got channels={channels}, gamma={gamma}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(SigmoidChannelGate):
    """ECA channel gate. Input and output (B, C, H, W).

    ``kernel_size`` overrides the adaptive k (must be odd so the output keeps C channels);
    ``logits(x)`` gives C1D_k(y), (B, C, 1, 1), ``gate(x)`` the attention weights ω = σ(logits).
    ``pool`` picks the descriptor y (``pooling.py``; the paper's GAP by default); with several
    descriptors ("avgmax") the conv's outputs are summed, as CBAM sums its MLP's.
    """

    placement = "block"
    paper = "Wang, Wu, Zhu, Li, Zuo & Hu, CVPR 2020"
    kind = "channel"

    def __init__(self, channels: int, kernel_size: int | None = None, pool: str = "avg") -> None:
        super().__init__()
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA kernel_size must be a positive odd integer, got {k}; "
                             "pass None to use the adaptive size from the channel count")
        self.pool = ChannelPool(pool, channels)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        descriptors = self.pool(x)
        y = torch.cat(descriptors).view(-1, 1, c)  # channels become the 1-D sequence axis
        return sum(self.conv(y).view(-1, c, 1, 1).chunk(len(descriptors)))
