"""Dual attention, DANet (Fu, Liu, Tian, Li, Bao, Fang & Lu, "Dual Attention Network for Scene
Segmentation", CVPR 2019): a position attention module and a channel attention module in parallel.

Equations (A = x ∈ R^{B×C×H×W} seen as N = H·W positions A_i ∈ R^C, or as C channels A^c ∈ R^N;
C' = C/8):
  Position attention (paper §3.2):
    B = W_B A,  C = W_C A,  D = W_D A        1×1 convs (with bias): C → C', C → C', C → C
    s_ji = exp(B_i · C_j) / Σ_i exp(B_i · C_j)          query position j, key position i
    P_j = α Σ_i s_ji D_i                                  α ∈ R, initialised to 0
  Channel attention (paper §3.3, no projections):
    x_ji = exp(A^i · A^j) / Σ_i exp(A^i · A^j)            variant="paper"
    x_ji = softmax_i(max_k(A^k · A^j) − A^i · A^j)        variant="code" (official DANet code,
                                                          ``CAM_Module``: equal to softmax_i(−A^i·A^j),
                                                          the most dissimilar channels weigh most)
    Q^j = β Σ_i x_ji A^i                                  β ∈ R, initialised to 0
  Output:  E = A + P + Q

α = β = 0 at init, as in the paper (both scales are learned starting from 0), so the module starts
as the identity.

Placement ``"stage"``: once after every stage but the last (stages 1–3 of an ImageNet ResNet-50,
C = 256, 512, 1024, N = 56², 28², 14² at 224×224). Position attention is O(N²) per image: the
forward pass uses ``F.scaled_dot_product_attention``, which on CUDA can use the memory-efficient
kernel (it accepts values of width C next to queries of width C/8, given 4-aligned widths, 8 in
half precision) and then stores no N×N matrix; on CPU PyTorch computes the explicit softmax.

ResNet-50 count: the paper gives none (it uses DANet on a dilated ResNet for segmentation). Ours,
``create_model("resnet50", 1000, attn="danet")``: 25,557,032 + 1,722,566 = 27,279,598 (per module
2·(C·C/8 + C/8) + C² + C + 2).

Deviations (DANet is a segmentation head; this is its attention as a classification plug-in):
- The head's convolutions are left out: the 3×3 conv + BN + ReLU reducing the 2048 backbone
  channels to 512 before each module, the 3×3 conv + BN + ReLU after each module, and the
  dropout + 1×1 classifier. The modules act directly on the stage output, with its C channels.
- One skip for both modules. The paper's modules each return their input plus their attention
  term (E_pos = A + P, E_chan = A + Q) and the head sums them after the convs; summed directly
  that would be 2A + P + Q, doubling the stage output. Here E = A + P + Q, the identity at init.
- C' = ⌊C/8⌋, at least 1 (``rd_ratio``/``rd_channels``), so small CIFAR widths work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import query_pixels, reduced_channels

VARIANTS = ("paper", "code")


class PositionAttention(nn.Module):
    """DANet's position attention term P = α Σ_i s_ji D_i, (B, C, H, W) → (B, C, H, W) (no skip:
    ``residual(x)`` gives P, ``forward(x)`` gives the paper's module output x + P).
    ``weights(x, rows, cols)``: s of the query positions (rows[q], cols[q]), (B, Q, H, W)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 8, rd_channels: int | None = None) -> None:
        super().__init__()
        inner = reduced_channels(channels, rd_ratio, rd_channels)
        self.query = nn.Conv2d(channels, inner, 1)  # the paper's C (indexed by the query j)
        self.key = nn.Conv2d(channels, inner, 1)  # the paper's B (indexed by the key i)
        self.value = nn.Conv2d(channels, channels, 1)  # the paper's D
        self.alpha = nn.Parameter(torch.zeros(1))

    def weights(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Explicit softmax for a few queries (the forward pass leaves s to the fused kernel): (B, Q, H, W)."""
        b, _, h, w = x.shape
        q = self.query(x)[:, :, rows, cols]  # (B, C', Q)
        logits = torch.einsum("bcq,bcn->bqn", q, self.key(x).flatten(2))
        return logits.softmax(-1).view(b, len(rows), h, w)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, N, C')
        k = self.key(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, N, C')
        v = self.value(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, N, C)
        y = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # the paper's logits are unscaled
        return self.alpha * y[:, 0].transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class ChannelAttention(nn.Module):
    """DANet's channel attention term Q = β Σ_i x_ji A^i, (B, C, H, W) → (B, C, H, W) (no skip:
    ``residual(x)`` gives Q, ``forward(x)`` gives the paper's module output x + Q).
    ``weights(x)``: the channel affinity x_ji, (B, C, C), rows j summing to 1."""

    def __init__(self, variant: str = "paper") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown DANet variant '{variant}'; valid: paper (softmax of the Gram matrix), "
                             "code (official code: softmax of rowmax minus the Gram matrix)")
        self.variant = variant
        self.beta = nn.Parameter(torch.zeros(1))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        a = x.flatten(2)  # (B, C, N)
        energy = a @ a.transpose(1, 2)  # (B, C, C): A^j · A^i
        if self.variant == "code":
            energy = energy.amax(-1, keepdim=True) - energy
        return energy.softmax(-1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * (self.weights(x) @ x.flatten(2)).view_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class DualAttention(nn.Module):
    """DANet's position and channel attention on one skip: x + P(x) + Q(x). Input and output
    (B, C, H, W); the identity at init."""

    placement = "stage"
    paper = "Fu, Liu, Tian et al., CVPR 2019"
    kind = "self-attention"

    def __init__(self, channels: int, rd_ratio: float = 1 / 8, rd_channels: int | None = None,
                 variant: str = "paper") -> None:
        super().__init__()
        self.position = PositionAttention(channels, rd_ratio, rd_channels)
        self.channel = ChannelAttention(variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.position.residual(x) + self.channel.residual(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, 1, Q, H, W)}: the position weights s of the query points, fractions
        (Q, 2) of the map, over the key positions (one "head"); {"channel": (B, C)}: the channel
        affinity summarised per source channel i, the mean over output channels j of x_ji (a
        distribution over channels: it sums to 1; uniform attention gives 1/C everywhere)."""
        rows, cols = query_pixels(queries, *x.shape[2:])
        return {"attention": self.position.weights(x, rows, cols)[:, None],
                "channel": self.channel.weights(x).mean(1)}
