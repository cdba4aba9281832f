"""Triplet Attention (Misra, Nalamada, Arasanipalai & Hou, "Rotate to Attend: Convolutional Triplet
Attention Module", WACV 2021).

Three branches, each capturing the interaction of two of the three axes (C, H, W) of
x ∈ R^{B×C×H×W}; each pools the third axis with Z-pool and gates with a 7×7 conv (σ = sigmoid):
    Z-pool_a(x)   = [max_a(x) ; mean_a(x)]                       two maps, stacked (max first)
    branch (i, j) = σ(BN(f^{7×7}(Z-pool_a(x))))  over the plane of axes (i, j), a the third axis
    s_CW = branch(C, W)  pooled over H  → (B, C, 1, W)     (the paper rotates x about H)
    s_HC = branch(H, C)  pooled over W  → (B, C, H, 1)     (rotated about W; the conv's plane is H × C)
    s_HW = branch(H, W)  pooled over C  → (B, 1, H, W)     (CBAM-like spatial branch, no rotation)
    out  = x ⊙ (s_CW + s_HC + s_HW) / 3
f^{7×7}: 2 → 1 channel, no bias, padding 3; each branch has its own conv and BN (100 parameters).
The three branch outputs x ⊙ s are averaged in the paper; multiplying x once by the averaged gate
is the same function.

No rotation is materialised: each branch reduces x along its pooled axis directly (``z_pool``
over dim 2, 3 or 1, ``pooling.py``), and only the small pooled maps are transposed to the orientation the
official code feeds its conv ((C, W) rows × columns for the first branch, (H, C) for the second),
so the weights have the official layout. The gate is then broadcast back.

Placement: ``"block"``, in every residual block after the last BN, before the addition (the
official ResNet's ``triplet_attention`` after ``bn3`` / ``bn2``).

Deviations: none from the paper. Differences from the official code (landskape-ai/triplet-attention):
the BNs use PyTorch's default momentum 0.1 (the code: 0.01), like every BN here.
"""

from __future__ import annotations

import torch
from torch import nn

from .pooling import z_pool


class ZPoolGate(nn.Module):
    """One branch's gate on pooled maps: (B, 2, P, Q) → σ(BN(conv_{k×k})) (B, 1, P, Q); ``logits``
    before σ."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        # as CBAM's spatial gate: oneDNN's backward of a 2→1-channel conv is much faster on a
        # channels-last input (CPU), and the conversion of two small maps is cheap
        return self.bn(self.conv(pooled.contiguous(memory_format=torch.channels_last)))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.logits(pooled).sigmoid()


class TripletAttention(nn.Module):
    """Triplet attention. Input and output (B, C, H, W). ``gate(x)`` is the averaged gate
    (B, C, H, W); ``branch_gates(x)`` the three (s_CW, s_HC, s_HW), each broadcastable to x."""

    placement = "block"
    paper = "Misra, Nalamada, Arasanipalai & Hou, WACV 2021"
    kind = "channel+spatial"

    def __init__(self, channels: int | None = None, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"triplet attention kernel_size must be a positive odd integer (the maps keep "
                             f"their size), got {kernel_size}")
        self.cw = ZPoolGate(kernel_size)
        self.hc = ZPoolGate(kernel_size)
        self.hw = ZPoolGate(kernel_size)

    def branch_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        s_cw = self.cw(z_pool(x, 2)).view(b, c, 1, w)  # conv plane (C, W)
        s_hc = self.hc(z_pool(x, 3).transpose(2, 3))  # conv plane (H, C): (B, 1, H, C)
        s_hc = s_hc.transpose(2, 3).reshape(b, c, h, 1)
        s_hw = self.hw(z_pool(x, 1))  # conv plane (H, W)
        return s_cw, s_hc, s_hw

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        s_cw, s_hc, s_hw = self.branch_gates(x)
        return (s_cw + s_hc).add_(s_hw).mul_(1 / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """The averaged gate summarised by its means, as BAM's: {"spatial": mean over channels
        (B, 1, H, W), "channel": mean over positions (B, C)}."""
        gate = self.gate(x)
        return {"spatial": gate.mean(1, keepdim=True), "channel": gate.mean((2, 3))}
