"""Non-local block (Wang, Girshick, Gupta & He, "Non-local Neural Networks", CVPR 2018).

Equations (x ∈ R^{B×C×H×W} seen as N = H·W positions x_i ∈ R^C, C' = inter_channels = C/2):
    θ(x_i) = W_θ x_i,  φ(x_j) = W_φ x_j,  g(x_j) = W_g x_j        1×1 convs C → C'
    y_i = (1 / C(x)) Σ_j f(x_i, x_j) g(x_j)                                         (Eq. 1)
    embedded Gaussian:  f = exp(θ(x_i)ᵀ φ(x_j)),  C(x) = Σ_j f   ⇒ y = softmax_j(θᵀφ) g
    dot product:        f = θ(x_i)ᵀ φ(x_j),        C(x) = N_j    (number of positions j)
    z_i = BN(W_z y_i) + x_i       W_z a 1×1 conv C' → C; BN's γ starts at 0        (Eq. 6, §4.1)

With γ = 0 the block is the identity at initialisation, so it can be inserted into a trained
network without changing its output (paper §4.1). ``sub_sample`` max-pools (2×2, stride 2) the
positions j seen by φ and g, not θ, so the output keeps every query position and the pairwise
cost drops 4× (paper §3.3).

Placement: ``"stage"``. The paper's baseline adds one block to res4, right before its last
residual block (§4.1); a block in res5 helps less, its 7×7 map being small (Table 2).
attnvision's ResNets put "stage" modules after every stage but the last (res2–res4 of the
ImageNet ResNets, stages 1–2 of the CIFAR ones), so an ImageNet ResNet also gets one at 56×56:
O((HW)²) memory, use ``sub_sample=True`` there. ``attn_stage_kw`` varies the settings per stage.

Deviations:
- sub-sampling uses ``ceil_mode=True``: odd sides keep their last row/column and 1-pixel maps
  still work (a floor pool would drop them or fail);
- ``variant="code"`` gives the official Caffe2 release's behaviour (facebookresearch/
  video-nonlocal-net, ``nonlocal_helper.py``), which differs from the paper in two places:
  embedded-Gaussian logits are scaled by C'^-1/2 (``USE_SCALE``), and sub-sampling max-pools x
  before the φ and g convolutions instead of after them;
- θ, φ, g keep PyTorch's default init (the official code draws N(0, 0.01²)) and biases; W_z has
  no bias (the BN after it cancels it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import query_pixels, reduced_channels

MODES = ("embedded_gaussian", "dot_product")
VARIANTS = ("paper", "code")


class NonLocalBlock(nn.Module):
    """Non-local block. Input and output (B, C, H, W); ``affinity(x)`` gives the normalised
    pairwise weights f/C(x), (B, H·W, N_j) with N_j = H·W, or ⌈H/2⌉·⌈W/2⌉ with ``sub_sample``."""

    placement = "stage"
    paper = "Wang, Girshick, Gupta & He, CVPR 2018"
    kind = "self-attention"

    def __init__(self, channels: int, inter_channels: int | None = None, mode: str = "embedded_gaussian",
                 sub_sample: bool = False, variant: str = "paper") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown non-local mode '{mode}'; valid: {', '.join(MODES)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown non-local variant '{variant}'; valid: {', '.join(VARIANTS)}")
        inner = reduced_channels(channels, 0.5, inter_channels)
        self.mode = mode
        self.variant = variant
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if sub_sample else None
        self.w_z = nn.Conv2d(inner, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def _keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """φ(x), g(x) flattened to (B, C', N_j), sub-sampled where asked."""
        if self.pool is None:
            phi, g = self.phi(x), self.g(x)
        elif self.variant == "code":
            pooled = self.pool(x)
            phi, g = self.phi(pooled), self.g(pooled)
        else:
            phi, g = self.pool(self.phi(x)), self.pool(self.g(x))
        return phi.flatten(2), g.flatten(2)

    def _affinity(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        logits = theta @ phi  # (B, N, N_j)
        if self.mode == "dot_product":
            return logits / phi.shape[-1]
        if self.variant == "code":
            logits = logits * theta.shape[-1] ** -0.5
        return logits.softmax(-1)

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        return self._affinity(x, self._keys_values(x)[0])

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, 1, Q, H_j, W_j)}: the pairwise weights f/C(x) of the query points,
        fractions (Q, 2) of the map, over the key grid (H×W, or ⌈H/2⌉×⌈W/2⌉ with ``sub_sample``).
        One "head": the block has a single affinity."""
        h, w = x.shape[2:]
        rows, cols = query_pixels(queries, h, w)
        key_grid = (h, w) if self.pool is None else (math.ceil(h / 2), math.ceil(w / 2))
        return {"attention": self.affinity(x)[:, None, rows * w + cols].unflatten(-1, key_grid)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        phi, g = self._keys_values(x)
        y = self._affinity(x, phi) @ g.transpose(1, 2)  # (B, N, C')
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.bn(self.w_z(y))
