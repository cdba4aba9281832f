"""FcaNet multi-spectral channel attention (Qin, Zhang, Wu & Li, "FcaNet: Frequency Channel
Attention Networks", ICCV 2021).

GAP is, up to a constant, the lowest (0, 0) coefficient of a channel's 2D DCT. FcaNet splits the
channels into groups and pools each group with a different DCT coefficient, then excites as SE.

Equations (x ∈ R^{B×C×H×W}; F frequencies (u_f, v_f) on a 7×7 grid; the channels split into F
contiguous groups of C/F, channel c in group f = ⌊c·F/C⌋):
    DCT-II basis on N points, orthonormal scaling (i = 0 … N−1):
        b_k^N(i) = a_k^N cos(π k (i + ½) / N),   a_0^N = √(1/N),  a_k^N = √(2/N) for k > 0
    frequency of group f on an H×W map:   k_f = ⌊u_f · H / 7⌋,  l_f = ⌊v_f · W / 7⌋
    Freq_c = Σ_{i,j} x_{c,i,j} · b_{k_f}^H(i) · b_{l_f}^W(j)                        (B, C)
    s = σ(W_2 · ReLU(W_1 · Freq))     W_1 ∈ R^{C/r×C}, W_2 ∈ R^{C×C/r}, no biases, r = 16
    y = s ⊙ x                         (broadcast over H×W)
With the single frequency (0, 0), Freq = √(HW) · GAP(x): SE without biases, up to that scale.

Frequencies. The paper divides the 2D DCT spectrum into 7×7 parts (the smallest ResNet map on
ImageNet is 7×7) and names frequencies on that grid; a map of H = 7m rows uses frequency u·m,
which is k_f above (the official code's ``u · (H // 7)``): on ImageNet ResNets at 224×224 (maps
56, 28, 14, 7) our basis is exactly the official one. For H not a multiple of 7 the floor keeps
k_f a true DCT frequency of the map (0 ≤ k_f ≤ H − 1, the first frequency of the u-th of 7 equal
bands); maps smaller than 7 merge neighbouring u, and a 1×1 map gives every group its mean.
``freq_sel`` names the official code's lists, which follow the paper's selection criteria:
    "top{k}": the k best single frequencies of the two-step selection (each of the 49 frequencies
              alone in a ResNet-50, ranked by ImageNet accuracy); "top16" is the paper's FcaNet;
    "low{k}": the k lowest frequencies, in the official code's low-to-high order;
    "bot{k}": the k worst of the same single-frequency ranking;
with k in 1, 2, 4, 8, 16, 32; C must be divisible by k.

The basis is not learnt and not stored at a fixed size: the 7×7-grid frequencies are a (F, 2)
buffer, and the (F, H·W) basis is built from them for the map at hand (F·(H + W) cosines), so one
module serves every input size.

Placement: ``"block"``, on the residual branch of every block after its last BN and before the
addition (official ``fcanet.py``), as SE.

Deviations and differences from the official code (cfzd/FcaNet):
- the paper writes the 2D DCT without its normalisation constants, dropped for simplicity; we use
  the orthonormal constants of the official code (a per-group scale, not a different model);
- the official module fixes its DCT size at construction (56, 28, 14 or 7, looked up from the
  channel count for 224×224 inputs) and first average-pools any other map size to it; ours uses
  the map's own size. Same on 224×224 ImageNet inputs; on others (e.g. 256×256: a 64×64 first
  stage) ours takes the DCT of the whole map where the official code pools it to 56×56 first;
- the official code stores a (C, h, w) basis buffer (``dct_layer.weight``, 3.2 MB for one
  56×56 stage); ours stores the frequencies only, so only its ``fc.*`` weights load here.
The published FcaNet-50 count, 28.07M, is ours: 25,557,032 + Σ 2C²/16 = 28,071,976.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from .common import SigmoidChannelGate, reduced_channels

# The official code's frequency lists on the 7×7 grid, (row u, column v) pairs in ranking order.
FREQUENCY_TABLES = {
    "top": ((0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0), (5, 0), (1, 6), (3, 0),
            (0, 4), (0, 6), (0, 3), (3, 5), (2, 2), (4, 6), (6, 3), (3, 3), (5, 3), (5, 5), (2, 1),
            (6, 1), (5, 2), (5, 4), (3, 2), (3, 1), (4, 1), (2, 3), (2, 0), (6, 5), (1, 3)),
    "low": ((0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 1), (1, 2), (2, 2), (0, 3), (3, 0),
            (4, 0), (0, 4), (1, 3), (3, 1), (0, 5), (1, 4), (2, 3), (3, 2), (4, 1), (5, 0), (0, 6),
            (1, 5), (2, 4), (3, 3), (4, 2), (5, 1), (6, 0), (1, 6), (2, 5), (3, 4), (4, 3)),
    "bot": ((6, 6), (1, 4), (3, 4), (3, 6), (2, 6), (4, 3), (1, 1), (2, 4), (4, 4), (4, 5), (5, 6),
            (1, 5), (4, 2), (6, 2), (2, 5), (5, 1), (6, 4), (1, 3), (6, 5), (2, 0), (2, 3), (4, 1),
            (3, 1), (3, 2), (5, 4), (5, 2), (6, 1), (2, 1), (5, 5), (5, 3), (3, 3), (6, 3)),
}
FREQUENCY_COUNTS = (1, 2, 4, 8, 16, 32)
GRID = 7  # the paper's frequency grid: the smallest ImageNet ResNet map is 7×7


def selected_frequencies(freq_sel: str) -> tuple[tuple[int, int], ...]:
    """The (u, v) pairs on the 7×7 grid that ``freq_sel`` (e.g. "top16") names."""
    match = re.fullmatch(r"(top|low|bot)(\d+)", freq_sel)
    if match is None or int(match[2]) not in FREQUENCY_COUNTS:
        raise ValueError(f"unknown FcaNet freq_sel '{freq_sel}'; valid: top, low or bot followed by "
                         f"{', '.join(map(str, FREQUENCY_COUNTS))} (the paper's model: top16)")
    return FREQUENCY_TABLES[match[1]][:int(match[2])]


def dct_basis(freqs: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II basis vectors b_k(i) = a_k cos(π k (i + ½) / N) for the frequencies
    ``freqs`` (F,) on N = ``size`` points: (F, N)."""
    position = torch.arange(size, device=freqs.device, dtype=dtype) + 0.5
    k = freqs.to(dtype)[:, None]
    scale = ((2 - (k == 0).to(dtype)) / size).sqrt()  # √(1/N) for k = 0, else √(2/N)
    return scale * torch.cos(math.pi / size * k * position)


class DCTPooling(nn.Module):
    """FcaNet's multi-spectral pooling: (B, C, H, W) → (B, C, 1, 1), channel group f pooled by
    the DCT coefficient of frequency (⌊u_f·H/7⌋, ⌊v_f·W/7⌋). A drop-in for GAP (``pooling.py``'s
    "dct" rule); no parameters."""

    def __init__(self, channels: int, freq_sel: str = "top16") -> None:
        super().__init__()
        freqs = selected_frequencies(freq_sel)
        if channels % len(freqs):
            raise ValueError(f"FcaNet splits the channels into {len(freqs)} equal groups ({freq_sel}), but "
                             f"{channels} is not divisible by {len(freqs)}; choose freq_sel with a count "
                             f"dividing {channels} (e.g. top{math.gcd(channels, 32)})")
        self.register_buffer("freqs", torch.tensor(freqs), persistent=False)  # (F, 2): (u, v) per group

    def basis(self, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """The F 2D basis maps for an H×W input, (F, H, W)."""
        rows = dct_basis(self.freqs[:, 0] * height // GRID, height, dtype)
        cols = dct_basis(self.freqs[:, 1] * width // GRID, width, dtype)
        return rows[:, :, None] * cols[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n_freq = len(self.freqs)
        # cosines in float32 (float64 for float64 inputs), then the input's dtype (e.g. under autocast)
        basis = self.basis(h, w, torch.float64 if x.dtype == torch.float64 else torch.float32).to(x.dtype)
        # (B, F, C/F, HW) @ (F, HW, 1): one batched matrix-vector product per group, reading x once
        pooled = torch.matmul(x.reshape(b, n_freq, c // n_freq, h * w), basis.view(n_freq, h * w, 1))
        return pooled.view(b, c, 1, 1)


class FrequencyChannelAttention(SigmoidChannelGate):
    """FcaNet's multi-spectral channel attention. Input and output (B, C, H, W); ``logits(x)``
    gives W_2 ReLU(W_1 Freq), ``gate(x)`` = s = σ(logits), both (B, C, 1, 1).

    ``freq_sel`` picks the frequencies (module docstring), ``rd_ratio`` / ``rd_channels`` the
    MLP's hidden width.
    """

    placement = "block"
    paper = "Qin, Zhang, Wu & Li, ICCV 2021"
    kind = "channel"

    def __init__(self, channels: int, freq_sel: str = "top16", rd_ratio: float = 1 / 16,
                 rd_channels: int | None = None) -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.pool = DCTPooling(channels, freq_sel)
        # the official ``fc`` without its Sigmoid: the same keys fc.0.weight, fc.2.weight
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)
