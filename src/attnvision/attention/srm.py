"""Style-based Recalibration Module, SRM (Lee, Kim & Nam, "SRM: A Style-based Recalibration
Module for Convolutional Neural Networks", ICCV 2019).

Equations (x ∈ R^{B×C×H×W}, sample n, channel c, ε = 1e-5):
    style pooling:      μ_nc = (1/HW) Σ_{h,w} x_nchw
                        σ_nc = [(1/HW) Σ_{h,w} (x_nchw − μ_nc)² + ε]^{1/2}
                        t_nc = [μ_nc, σ_nc] ∈ R²                           T ∈ R^{B×C×2}
    style integration:  z_nc = w_c · t_nc        w_c ∈ R² per channel: the channel-wise fully
                                                 connected (CFC) layer, 2C weights, no bias
                        ẑ_nc = γ_c (z_nc − μ_c^(z)) / σ_c^(z) + β_c     BatchNorm over the batch
                        g_nc = σ(ẑ_nc)
    y = g ⊙ x                                    (broadcast over H×W)

Parameters: 2C (CFC) + 2C (BN's γ, β) = 4C per module; the BN's running mean and variance are
buffers. On ResNet-50: 4 · 15,104 = 60,416, i.e. 25,617,448 = the paper's 25.62M for
SRM-ResNet-50. The CFC has no bias: BN's β takes that role (with a bias the count would be 5C
per module, 25.63M).

Init: the CFC weights start at 0, as in the official code (hyunjaelee410/style-based-
recalibration-module); the paper states none. So z = 0, ẑ = β = 0 and every gate starts at
σ(0) = 0.5 (not an identity: SRM, like SE, has no identity setting).

Placement: ``"block"``, on the residual branch of every block after its last BN and before the
addition, as SE (official ``models/resnet.py``).

Deviations and differences from the official code:
- ε = 1e-5 under the square root of σ: the paper writes none, but σ = 0 on a constant map (any
  1×1 map) and √· has an infinite derivative at 0;
- σ uses the population variance (1/HW), as the paper; the official code's ``std`` is
  Bessel-corrected (1/(HW−1): × 1.0002 at 56×56, × 1.0104 at 7×7) and is NaN on a 1×1 map;
  not offered as an option;
- BatchNorm1d on (B, C) instead of the code's BatchNorm2d on (B, C, 1, 1): the same function and
  the same state-dict keys (``cfc``, ``bn.*``), so official checkpoints load.

BatchNorm needs more than one sample per batch in training mode; a batch of 1 in training raises a
ValueError naming the fix. Eval mode works at batch 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import SigmoidChannelGate

STYLE_EPS = 1e-5


def style_pool(x: torch.Tensor, eps: float = STYLE_EPS) -> torch.Tensor:
    """SRM's style features T = [μ, σ] per channel: (B, C, H, W) → (B, C, 2), in one pass over x."""
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
    return torch.stack((mean, (var + eps).sqrt()), -1)


class StyleRecalibration(SigmoidChannelGate):
    """SRM. Input and output (B, C, H, W); ``logits(x)`` gives ẑ, ``gate(x)`` = σ(ẑ) = g, both
    (B, C, 1, 1)."""

    placement = "block"
    paper = "Lee, Kim & Nam, ICCV 2019"
    kind = "channel"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))  # w_c = cfc[c], for (μ, σ)
        self.bn = nn.BatchNorm1d(channels)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        if self.training and b == 1:
            raise ValueError("SRM normalises its style weights with BatchNorm, which needs more than one "
                             "sample per batch in training mode; use a batch size >= 2 or call .eval()")
        z = (style_pool(x) * self.cfc).sum(-1)  # (B, C)
        return self.bn(z).view(b, c, 1, 1)
