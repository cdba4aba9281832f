"""Bottleneck Attention Module (Park et al., "BAM: Bottleneck Attention Module", BMVC 2018).

Equations (x ∈ R^{B×C×H×W}, h = C·rd_ratio hidden channels (r = 16), d = dilation = 4, σ = sigmoid):
    M_c(x) = W1 · ReLU(BN1d(W0 · GAP(x) + b0)) + b1                  ∈ R^{B×C×1×1}
    M_s(x) = f_3^{1×1}(g_2(g_1(g_0(x))))                              ∈ R^{B×1×H×W}
             g_0 = ReLU∘BN∘f_0^{1×1} (C → h),  g_i = ReLU∘BN∘f_i^{3×3, dilation d, pad d} (h → h),
             f_3^{1×1}: h → 1 (every conv with bias)
    M(x)   = σ(M_c(x) + M_s(x))     combine="sum"      (paper: both broadcast to C×H×W, added)
           = σ(M_c(x) ⊙ M_s(x))     combine="product"  (official code; its released weights use it)
    out    = x + x ⊙ M(x)                                               (= (1 + M(x)) ⊙ x)

Placement: ``"stage"``: once at the end of every stage but the last (the network's "bottlenecks",
where the feature map is downsampled: after stages 1–3 of a ResNet-50, C = 256, 512, 1024).

Deviations from the paper:
- BN placement follows the official code (Jongchan/attention-module), which its weights and the
  published 25.92M parameters of BAM-ResNet-50 match: BN + ReLU after the MLP's hidden layer and
  after each hidden conv. The paper's equations instead put one BN on each branch's output
  (M_c = BN(MLP(AvgPool(x))), M_s = BN(f^{1×1}(...))) "to adjust the scale"; this is a known
  paper/code mismatch (official repo issue #49).
- the convs and linears before a BN keep their biases (redundant after BN), as the official code
  does; with them the count matches the published 25.92M.
Differences from the official code: ``combine`` defaults to the paper's sum; the spatial branch
works for any H, W (the official code assumed H = W, and used the wrong pooling size otherwise).

BatchNorm1d on the pooled (B, h) vector needs more than one sample per batch in training mode;
a batch of 1 in training raises a ValueError naming the fix. Eval mode works at batch 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import reduced_channels

COMBINE = ("sum", "product")


class BottleneckAttention(nn.Module):
    """BAM. Input and output (B, C, H, W).

    ``rd_ratio`` / ``rd_channels`` set the hidden width h of both branches, ``dilation`` the two
    3×3 convs' dilation (= their padding, so H×W is kept), ``combine`` "sum" or "product".
    """

    placement = "stage"

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 dilation: int = 4, combine: str = "sum") -> None:
        super().__init__()
        if combine not in COMBINE:
            raise ValueError(f"unknown BAM combine '{combine}'; valid: sum (paper), product (official code)")
        if dilation < 1:
            raise ValueError(f"BAM dilation must be >= 1, got {dilation}")
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.combine = combine
        self.channel = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """M(x), (B, C, H, W) in (0, 1)."""
        b, c = x.shape[:2]
        if self.training and b == 1:
            raise ValueError("BAM's channel branch uses BatchNorm1d, which needs more than one sample per "
                             "batch in training mode; use a batch size >= 2 or call .eval()")
        m_c = self.channel(x.mean((2, 3))).view(b, c, 1, 1)
        m_s = self.spatial(x)
        logits = m_c + m_s if self.combine == "sum" else m_c * m_s  # broadcast to (B, C, H, W)
        return logits.sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """The 3-D gate M(x) summarised per position and per channel (its means):
        {"spatial": (B, 1, H, W), "channel": (B, C)}. BAM's M mixes both branches in every entry,
        so neither summary is a branch on its own."""
        gate = self.gate(x)
        return {"channel": gate.mean((2, 3)), "spatial": gate.mean(1, keepdim=True)}
