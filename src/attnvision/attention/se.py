"""Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI 2019).

Equations (x ∈ R^{B×C×H×W}, r = rd_ratio):
    z = GAP(x) ∈ R^{B×C}                          (squeeze)
    s = σ(W2 · ReLU(W1 · z + b1) + b2)             W1 ∈ R^{C·r×C}, W2 ∈ R^{C×C·r}  (excitation)
    y = s ⊙ x                                       (scale, broadcast over H×W)

Placement: on the residual branch of every block, after the last BN and before the addition
(paper Fig. 3), with r = 1/16.

Deviation: the paper's Eq. 3, σ(W2 δ(W1 z)), has no biases; the FC layers here carry b1, b2 as in
the official Caffe release (moskomule's PyTorch port drops them). With them SE-ResNet-50 has the
paper's 28.09M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Conv1x1, SigmoidChannelGate, reduced_channels


class SqueezeExcite(SigmoidChannelGate):
    """SE channel gate. Input and output (B, C, H, W); ``gate(x)`` gives s = σ(logits(x)), (B, C, 1, 1)."""

    placement = "block"
    paper = "Hu, Shen & Sun, CVPR 2018"
    kind = "channel"

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None) -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = Conv1x1(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = Conv1x1(hidden, channels)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
