"""Adaptive pooling attention (Li, Liu, Zhang & Cheng, "Object detection based on an adaptive
attention mechanism", Scientific Reports 10:11307, 2020, doi 10.1038/s41598-020-67529-x).

The paper's point: average pooling suits large or background content and max pooling small,
local objects, so the two pooled attentions are mixed with weights learnt from the data instead
of being summed with fixed weights as in CBAM. No official code exists; this is our reading,
as a channel gate (x ∈ R^{B×C×H×W}, r = rd_ratio):
    z_avg = GAP(x),  z_max = GMP(x) ∈ R^{B×C}
    a_avg = MLP(z_avg),  a_max = MLP(z_max)      one shared MLP C → C·r → C with ReLU (as CBAM)
    (α_avg, α_max) = softmax(W_α [z_avg; z_max] + b_α)     W_α ∈ R^{2×2C}, one pair per sample
    y = σ(α_avg · a_avg + α_max · a_max) ⊙ x

The weights α are data-dependent (computed from each sample's pooled descriptors) and sum to 1,
so the gate interpolates between an average-pooled and a max-pooled channel attention; with α
fixed at (1, 1) instead it would be CBAM's channel gate.

Placement: ``"block"``, on the residual branch before the addition (like SE and CBAM).

Deviations: the module is a reading, not a transcription (see above): the channel-only gate,
the shared MLP, and α computed per sample from the concatenated pooled vectors are our choices.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import reduced_channels


class AdaptivePoolingAttention(nn.Module):
    """Channel gate mixing avg- and max-pooled attention with learnt per-sample weights.
    Input and output (B, C, H, W); ``weights(x)`` gives α, (B, 2) = (α_avg, α_max)."""

    placement = "block"
    paper = "Li, Liu, Zhang & Cheng, Sci. Rep. 2020"
    kind = "channel"

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None) -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.mix = nn.Linear(2 * channels, 2)

    def _mix(self, z_avg: torch.Tensor, z_max: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat((z_avg, z_max), 1)).softmax(-1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix(x.mean((2, 3)), x.amax((2, 3)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """σ(α_avg · a_avg + α_max · a_max), (B, C) in (0, 1)."""
        z_avg, z_max = x.mean((2, 3)), x.amax((2, 3))
        alpha = self._mix(z_avg, z_max)  # (B, 2)
        return (alpha[:, :1] * self.mlp(z_avg) + alpha[:, 1:] * self.mlp(z_max)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": the gate (B, C), "mix": α = (α_avg, α_max) (B, 2)}. A channel gate: no
        spatial map exists."""
        return {"channel": self.gate(x), "mix": self.weights(x)}
