"""Gated Channel Transformation, GCT (Yang, Zhu, Wu & Yang, "Gated Channel Transformation for
Visual Recognition", CVPR 2020).

Equations (x ∈ R^{B×C×H×W}; α, γ, β ∈ R^C learnt; ε = 1e-5):
    global context embedding (paper Eq. 1), norm="l2":
        s_c = α_c ‖x_c‖₂ = α_c [Σ_{i,j} x_{c,i,j}² + ε]^{1/2}                      s ∈ R^{B×C}
    channel normalisation (Eq. 2):
        ŝ_c = √C · s_c / ‖s‖₂ = √C · s_c / [Σ_c s_c² + ε]^{1/2}
    gating adaptation (Eq. 3):
        g_c = 1 + tanh(γ_c ŝ_c + β_c) ∈ (0, 2),   y = g ⊙ x        (broadcast over H×W)
    norm="l1" (the paper's l1 alternative, in the official code's form):
        s_c = α_c Σ_{i,j} |x_{c,i,j}|,   ŝ_c = C · s_c / (Σ_c |s_c| + ε)

Init: α = 1, γ = 0, β = 0 (official code; the paper starts γ = β = 0 so that GCT begins as an
identity mapping): g = 1 + tanh(0) = 1. γ > 0 makes channels compete (a channel above the norm of the others is
amplified, the others damped), γ < 0 makes them cooperate.

Placement: ``"block"``, one GCT on the residual branch of every block, after its last BN and
before the addition (SE's position). This is a deviation: the paper puts a GCT before every
convolutional layer ("we employ one GCT layer before each convolutional layer"; official
``resnet.py``: before conv1, conv2, conv3 and the projection shortcut of each Bottleneck, and
before the stem conv), which our backbones cannot express through ``attn``. The authors' README
reports that one GCT per residual block (before its first or last 1×1 conv) costs only 0.1–0.2%
ImageNet top-1 against the full setting; our per-block position differs from those two as well.
Parameters: 3C per module; on ResNet-50 ours add 3 · 15,104 = 45,312, the paper's placement
would add 3 · 22,531 = 67,593.

Deviations and differences from the official code:
- placement (above);
- ε is added to the sum over channels, as in the paper's Eq. 2; the official code adds it to the
  mean over channels (C·ε to the sum), an ε-sized difference, not offered as an option;
- the official code's ``after_relu`` flag (skip |·| in l1 mode when x ≥ 0) is a speed shortcut
  with the same result, not offered;
- the official recipe applies no weight decay to β (the README: weight decay on β usually
  hurts); that is an optimiser setting, outside this module.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("l2", "l1")


class GatedChannelTransform(nn.Module):
    """GCT. Input and output (B, C, H, W); ``gate(x)`` gives g, (B, C, 1, 1) in (0, 2).

    The gate is 1 + tanh(·), not σ(logits): there is no ``logits``. ``embedding(x)`` gives s and
    ``normalized(s)`` ŝ, both (B, C, 1, 1).
    """

    placement = "block"
    paper = "Yang, Zhu, Wu & Yang, CVPR 2020"
    kind = "channel"

    def __init__(self, channels: int, norm: str = "l2", eps: float = 1e-5) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown GCT norm '{norm}'; valid: l2 (paper default), l1")
        if eps <= 0:
            raise ValueError(f"GCT eps must be > 0 (it keeps the l2 norms differentiable at 0), got {eps}")
        self.norm, self.eps = norm, eps
        # shaped (1, C, 1, 1) as the official code, so its checkpoints load
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """s = α · ‖x_c‖ over H×W: (B, C, H, W) → (B, C, 1, 1). ``vector_norm`` reads x once, with
        no x² temporary."""
        if self.norm == "l2":
            norms = (torch.linalg.vector_norm(x, 2, dim=(2, 3), keepdim=True).square() + self.eps).sqrt()
        else:
            norms = torch.linalg.vector_norm(x, 1, dim=(2, 3), keepdim=True)
        return self.alpha * norms

    def normalized(self, s: torch.Tensor) -> torch.Tensor:
        """ŝ: s scaled so that its l2 norm over channels is √C (l1: its l1 norm is C)."""
        c = s.shape[1]
        if self.norm == "l2":
            return s * (c / (s.square().sum(1, keepdim=True) + self.eps)).sqrt()
        return s * (c / (s.abs().sum(1, keepdim=True) + self.eps))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return 1 + torch.tanh(self.gamma * self.normalized(self.embedding(x)) + self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": g (B, C)} for input x, in (0, 2) (1 = unchanged)."""
        return {"channel": self.gate(x).flatten(1)}
