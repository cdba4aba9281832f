"""Coordinate Attention (Hou, Zhou & Feng, "Coordinate Attention for Efficient Mobile Network
Design", CVPR 2021).

Channel attention factorised into two 1-D encodings, one per spatial direction (x ∈ R^{B×C×H×W},
m = max(8, ⌊C·r⌋) hidden channels with r = 1/32, δ = h-swish, σ = sigmoid):
    z^h = (1/W) Σ_w x[:, :, :, w]  ∈ R^{B×C×H},   z^w = (1/H) Σ_h x[:, :, h, :]  ∈ R^{B×C×W}
    f   = δ(BN(F_1([z^h ; z^w])))  ∈ R^{B×m×(H+W)}   F_1: shared 1×1 conv C → m (with bias); the BN
                                                       normalises the concatenated H+W strip
    f^h, f^w = split(f, [H, W])
    g^h = σ(F_h(f^h)) ∈ R^{B×C×H×1},   g^w = σ(F_w(f^w)) ∈ R^{B×C×1×W}   (1×1 convs m → C, with bias)
    out = x ⊙ g^h ⊙ g^w                (the gate g^h ⊗ g^w varies over channels and positions)
h-swish(t) = t · ReLU6(t + 3) / 6. The paper writes δ as "a non-linear activation function";
the official code (Andrew-Qibin/CoordAttention) uses h-swish, and its README notes that this
works better than ReLU6.

``gate(x)`` is g^h ⊗ g^w (B, C, H, W); ``directional_gates(x)`` returns the two factors.
``attention_maps`` reports the gate's means, computed from the factors without building the
(B, C, H, W) gate: "spatial" = (1/C) Σ_c g^h_c ⊗ g^w_c (B, 1, H, W) and "channel" =
mean_h(g^h) · mean_w(g^w) (B, C), the exact mean over positions of a separable gate.

Placement: ``"block"`` (the paper inserts it into the residual branch of inverted-residual and
sandglass blocks; in a ResNet block it goes after the last BN, before the addition, like SE).

Deviations: none from the official code. The floor of 8 hidden channels comes from that code
(``mip = max(8, inp // reduction)``, ``reduction=32``), not from the paper's equations; for
C < 8·32 it makes m larger than C/32 (e.g. 8 for CIFAR's 16 channels).
"""

from __future__ import annotations

import torch
from torch import nn

MIN_HIDDEN = 8  # the official code's floor on the hidden width


class CoordinateAttention(nn.Module):
    """Coordinate attention gate. Input and output (B, C, H, W).

    ``rd_ratio`` (1/32) gives the hidden width m = max(8, ⌊C·r⌋); ``rd_channels`` sets m directly.
    """

    placement = "block"
    paper = "Hou, Zhou & Feng, CVPR 2021"
    kind = "channel+spatial"

    def __init__(self, channels: int, rd_ratio: float = 1 / 32, rd_channels: int | None = None) -> None:
        super().__init__()
        if rd_channels is not None and rd_channels < 1:
            raise ValueError(f"rd_channels must be ≥ 1, got {rd_channels}")
        hidden = rd_channels if rd_channels is not None else max(MIN_HIDDEN, int(channels * rd_ratio))
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def directional_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g^h (B, C, H, 1), g^w (B, C, 1, W))."""
        h, w = x.shape[2:]
        strips = torch.cat([x.mean(3), x.mean(2)], 2).unsqueeze(-1)  # [z^h ; z^w]: (B, C, H + W, 1)
        f_h, f_w = self.act(self.bn1(self.conv1(strips))).split([h, w], 2)
        return self.conv_h(f_h).sigmoid(), self.conv_w(f_w.transpose(2, 3)).sigmoid()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        g_h, g_w = self.directional_gates(x)
        return g_h * g_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gate's means (module docstring): {"spatial": (B, 1, H, W), "channel": (B, C)}."""
        g_h, g_w = self.directional_gates(x)
        g_h, g_w = g_h.squeeze(3), g_w.squeeze(2)  # (B, C, H), (B, C, W)
        spatial = torch.einsum("bch,bcw->bhw", g_h, g_w).unsqueeze(1) / x.shape[1]
        return {"spatial": spatial, "channel": g_h.mean(2) * g_w.mean(2)}
