"""Effective Squeeze-Excitation, eSE (Lee & Park, "CenterMask: Real-Time Anchor-Free Instance
Segmentation", CVPR 2020: the channel attention of VoVNetV2).

SE's two FC layers reduce C to C/r and back, which the paper argues loses channel information;
eSE keeps one FC layer of full width instead.

Equations (x ∈ R^{B×C×H×W}):
    z = GAP(x) ∈ R^{B×C}
    a = W_C · z + b                     W_C ∈ R^{C×C}, b ∈ R^C  (one FC layer, no reduction)
    A = σ(a)                                           variant="paper"  (sigmoid)
      = hsigmoid(a) = ReLU6(a + 3) / 6                 variant="code"   (hard sigmoid)
    y = A ⊙ x                           (broadcast over H×W)

The paper's A_eSE = σ(W_C(F_gap(X))) reuses the σ it defines for SE one equation earlier, the
sigmoid. The official code (youngwanLEE/CenterMask and vovnet-detectron2, class ``Hsigmoid``)
and timm (``EffectiveSEModule``, gate ``hard_sigmoid``) use MobileNetV3's hard sigmoid
ReLU6(a + 3)/6 = clip(a/6 + 1/2, 0, 1) (``F.hardsigmoid``; not Keras's clip(0.2·a + 0.5, 0, 1)),
so their weights (VoVNetV2, timm's ese_vovnet*) need ``variant="code"``. The default follows the
paper.

Placement: ``"block"``, on the residual branch of every block after its last BN and before the
addition, as SE. VoVNetV2 puts it at the end of each OSA module, after the concatenating 1×1
conv and before the module's identity addition: the same position relative to the residual.

Deviations: none. The paper gives no ResNet-50 with eSE (it builds VoVNetV2), so there is no
published count to check against. On wide stages the C×C layer is costly: C² + C weights per
block, 20.1M on a ResNet-50 (almost doubling it), against SE's 2.5M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv1x1

VARIANTS = {"paper": torch.sigmoid, "code": F.hardsigmoid}


class EffectiveSqueezeExcite(nn.Module):
    """eSE channel gate. Input and output (B, C, H, W); ``logits(x)`` gives a, ``gate(x)`` gives
    A = σ(a) (``variant="paper"``) or ReLU6(a + 3)/6 (``"code"``), both (B, C, 1, 1)."""

    placement = "block"
    paper = "Lee & Park, CVPR 2020"
    kind = "channel"

    def __init__(self, channels: int, variant: str = "paper") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown eSE variant '{variant}'; valid: paper (sigmoid), code (hard sigmoid "
                             "of the official code and timm)")
        self.activation = VARIANTS[variant]
        self.fc = Conv1x1(channels, channels)  # a 1×1 conv on the pooled map, as the official code

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3), keepdim=True))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.logits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": A (B, C)} for input x (``attnvision.explain.attention_maps``)."""
        return {"channel": self.gate(x).flatten(1)}
