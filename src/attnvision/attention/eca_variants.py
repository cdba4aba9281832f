"""Two variants of ECA (Wang, Wu, Zhu, Li, Zuo & Hu, "ECA-Net: Efficient Channel Attention for
Deep Convolutional Neural Networks", CVPR 2020) from timm (Wightman, "PyTorch Image Models",
``timm/layers/eca.py``). Neither has a paper of its own: cite ECA-Net and timm.

Both start from ECA's descriptor y = GAP(x) ∈ R^{B×C}, read as a sequence of length C along the
channel axis, and keep ECA's adaptive kernel size k = ψ(C) = |log2(C)/2 + 1/2|_odd
(``eca.eca_kernel_size``: 5, 5, 5, 7 on ResNet-50's stages); ``kernel_size`` overrides it.

"ecam", ECA with an MLP (timm's ``EcaModule(use_mlp=True)``; its code calls it "a timm
experiment, not in paper"). Each channel's scalar y_i is lifted to r hidden features by weights
shared over channels, and a k-tap 1-D conv maps the hidden sequence back to one logit per channel:
    h_i = ReLU(w_1 · y_i + b_1) ∈ R^r                w_1, b_1 ∈ R^r        (1×1 conv, 1 → r)
    a_i = b_2 + Σ_{j=1..k} w_2,j · h_{i+j-1-(k-1)/2}  w_2,j ∈ R^r, b_2 ∈ R  (k-tap conv, r → 1,
                                                      zero padding (k-1)/2)
    ω = σ(a),  out = ω ⊙ x
    r = rd_channels, or ⌊C · rd_ratio⌋ with rd_ratio = 1/8 (timm's default); 2r + k·r + 1 weights.

"ceca", circular ECA (timm's ``CecaModule``, written for timm by Chris Ha, not by the ECA
authors): ECA's bias-free k-tap conv with the channel axis padded circularly, so the first and
last channels are neighbours instead of meeting zeros:
    ω_i = σ(Σ_{j=1..k} w_j · y_{(i+j-1-(k-1)/2) mod C}),  out = ω ⊙ x       (k weights)

Placement: ``"block"``, as ECA (residual branch, after the last BN, before the addition).

Differences from timm:
- k is not clamped to ≥ 3 (timm's ``max(k, 3)``), as in our ``eca`` (the ECA paper has no clamp);
  on ResNet widths (C ≥ 64) this changes nothing;
- r = ⌊C/8⌋ (at least 1), where timm rounds C/8 to a multiple of 8 (at least 8): equal for every
  C that is a multiple of 64, so on ResNet-50; CIFAR stages of 16 and 32 channels get r = 2 and 4
  here against 8 in timm.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import SigmoidChannelGate, reduced_channels
from .eca import eca_kernel_size


def checked_kernel_size(channels: int, kernel_size: int | None) -> int:
    """ECA's adaptive k for ``channels``, or ``kernel_size`` after checking it is odd and positive."""
    k = eca_kernel_size(channels) if kernel_size is None else kernel_size
    if k < 1 or k % 2 == 0:
        raise ValueError(f"ECA kernel_size must be a positive odd integer, got {k}; "
                         "pass None to use the adaptive size from the channel count")
    return k


class EfficientChannelAttentionMLP(SigmoidChannelGate):
    """ECA with a per-channel MLP (timm's ``use_mlp``). Input and output (B, C, H, W);
    ``logits(x)`` gives a, ``gate(x)`` = σ(a), both (B, C, 1, 1)."""

    placement = "block"
    paper = "ECA: Wang et al., CVPR 2020; MLP variant: timm"
    kind = "channel"

    def __init__(self, channels: int, kernel_size: int | None = None, rd_ratio: float = 1 / 8,
                 rd_channels: int | None = None) -> None:
        super().__init__()
        k = checked_kernel_size(channels, kernel_size)
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.conv = nn.Conv1d(1, hidden, 1)  # w_1, b_1: the same lift for every channel position
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(hidden, 1, k, padding=(k - 1) // 2)  # w_2, b_2

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = x.mean((2, 3)).view(b, 1, c)  # channels become the 1-D sequence axis
        return self.conv2(self.act(self.conv(y))).view(b, c, 1, 1)  # hidden (B, r, C) in between


class CircularEfficientChannelAttention(SigmoidChannelGate):
    """ECA with circular padding of the channel axis. Input and output (B, C, H, W);
    ``logits(x)`` gives a, ``gate(x)`` = σ(a) = ω, both (B, C, 1, 1).

    The state dict is ECA's (``conv.weight``, (1, 1, k)), so ECA weights load as they are.
    """

    placement = "block"
    paper = "ECA: Wang et al., CVPR 2020; circular variant: timm"
    kind = "channel"

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = checked_kernel_size(channels, kernel_size)
        if k > channels:
            raise ValueError(f"circular ECA needs kernel_size <= channels, got kernel_size={k} for {channels} "
                             "channels: a wider window would wrap onto itself; pass a smaller odd kernel_size")
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, padding_mode="circular", bias=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return self.conv(x.mean((2, 3)).view(b, 1, c)).view(b, c, 1, 1)
