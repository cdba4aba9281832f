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
from .gate import Gate

COMBINE = {"sum": "sum", "product": "logit_product"}  # BAM's names → the gate composer's rules


class BAMChannelBranch(nn.Sequential):
    """M_c: GAP, Linear C → h, BN1d, ReLU, Linear h → C. ``logits(x)``: (B, C, H, W) → (B, C, 1, 1)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None) -> None:
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        super().__init__(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, channels))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        if self.training and b == 1:
            raise ValueError("BAM's channel branch uses BatchNorm1d, which needs more than one sample per "
                             "batch in training mode; use a batch size >= 2 or call .eval()")
        return super().forward(x.mean((2, 3))).view(b, c, 1, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()


class BAMSpatialBranch(nn.Sequential):
    """M_s: 1×1 conv C → h, two dilated 3×3 convs h → h (each with BN, ReLU), 1×1 conv h → 1.
    ``logits(x)``: (B, C, H, W) → (B, 1, H, W)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 dilation: int = 4) -> None:
        if dilation < 1:
            raise ValueError(f"BAM dilation must be >= 1, got {dilation}")
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        super().__init__(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()


class BottleneckAttention(Gate):
    """BAM. Input and output (B, C, H, W): the gate composer's parallel, residual combination of
    ``BAMChannelBranch`` and ``BAMSpatialBranch`` (``gate.py``).

    ``rd_ratio`` / ``rd_channels`` set the hidden width h of both branches, ``dilation`` the two
    3×3 convs' dilation (= their padding, so H×W is kept), ``combine`` "sum" or "product".
    ``gate(x)`` gives M(x), (B, C, H, W) in (0, 1).
    """

    placement = "stage"
    paper = "Park, Woo, Lee & Kweon, BMVC 2018"
    kind = "channel+spatial"

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 dilation: int = 4, combine: str = "sum") -> None:
        if combine not in COMBINE:
            raise ValueError(f"unknown BAM combine '{combine}'; valid: sum (paper), product (official code)")
        reduction = {"rd_ratio": rd_ratio, "rd_channels": rd_channels}
        super().__init__(channels, channel="bam", spatial="bam", order="parallel", combine=COMBINE[combine],
                         residual=True, channel_kw=reduction, spatial_kw={**reduction, "dilation": dilation})
