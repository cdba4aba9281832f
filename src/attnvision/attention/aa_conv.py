"""Attention-augmented convolution (Bello, Zoph, Vaswani, Shlens & Le, "Attention Augmented
Convolutional Networks", ICCV 2019).

Equations (x ∈ R^{B×C_in×H×W} flattened to X ∈ R^{HW×C_in}; d_k = κ·C_out, d_v = υ·C_out split
over N_h heads of d_kh = d_k/N_h and d_vh = d_v/N_h channels):
    AAConv(x) = Concat[Conv_k×k(x) with C_out − d_v channels,  MHA(x) with d_v channels]   (§3.3)
    [Q, K, V] = X W_qkv                         one 1×1 convolution C_in → 2d_k + d_v     (§3.1)
    l_{i,j} = q_iᵀ/√d_kh · (k_j + r^W_{j_x − i_x} + r^H_{j_y − i_y})                     (§3.2)
    O_h = softmax_j(l) V_h,  MHA(x) = Concat[O_1, …, O_Nh] W^O      W^O a 1×1 conv d_v → d_v
r^W, r^H ∈ R^{d_kh} are learnt embeddings of the column and row offsets, shared by all heads
(§3.2), so the attention is translation equivariant and works on any input size.

Defaults: κ = 2υ = 0.2 (κ = 0.2, υ = 0.1), N_h = 8 and at least 20 key dimensions per head, the
paper's setting for Wide-ResNets on CIFAR (§4.1). Small layers adapt: N_h is capped at
round(υ·C_out) so every head has at least one value channel (C_out = 64 gives 6 heads of
d_vh = 1, d_kh = 20). Relative logits are computed by broadcasting the (B, N_h, H, W, H) row and
(B, N_h, H, W, W) column terms over the (B, N_h, H, W, H, W) logits, never materialising
per-pair copies of the embeddings.

Placement: ``"conv"``, a replacement for a k×k convolution (stride 1) that backbones do not
place automatically (ResNet raises ValueError for it): swap it in for the convs you want
augmented, e.g. the first conv of every residual block, as the paper's CIFAR Wide-ResNets (§4.1).

Deviations:
- the paper's tables hold 2H − 1 and 2W − 1 offsets for the layer's fixed input size. Here they
  hold 2·max_extent − 1 offsets, and each forward slices the offsets its H and W need (the index
  is built from the tensor's size), so one layer serves any H, W ≤ max_extent; larger inputs
  raise ValueError. With max_extent = H = W the parameter count is the paper's;
- convolutions are bias-free: the layer replaces a bias-free convolution that a BN follows;
- embeddings start at N(0, d_kh^-1).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import query_pixels


class AttentionAugmentedConv(nn.Module):
    """k×k convolution concatenated with 2D relative multi-head self-attention.
    (B, in_channels, H, W) → (B, out_channels, H, W); out_channels defaults to in_channels.

    ``relative_logits(q)`` takes scaled queries (B, N_h, H, W, d_kh) and returns the relative
    logits (B, N_h, H·W, H·W) (query position i = row·W + col, key position j likewise)."""

    placement = "conv"
    paper = "Bello, Zoph, Vaswani, Shlens & Le, ICCV 2019"
    kind = "self-attention"

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 3,
                 heads: int = 8, kappa: float = 0.2, upsilon: float = 0.1, min_key_dim: int = 20,
                 max_extent: int = 64) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive so the output keeps H×W, got {kernel_size}")
        if heads < 1 or kappa <= 0 or upsilon <= 0 or max_extent < 1:
            raise ValueError(f"AA-conv needs heads >= 1, kappa > 0, upsilon > 0, max_extent >= 1; got "
                             f"{heads}, {kappa}, {upsilon}, {max_extent}")
        heads = max(1, min(heads, round(upsilon * out_channels)))
        self.dvh = max(1, round(upsilon * out_channels / heads))
        self.dkh = max(min_key_dim, round(kappa * out_channels / heads))
        self.heads = heads
        dv = heads * self.dvh
        if dv >= out_channels:
            raise ValueError(f"AA-conv with {out_channels} output channels leaves none for the convolution "
                             f"(d_v = {dv}); lower upsilon or use at least {dv + 1} output channels")
        self.in_channels = in_channels
        self.max_extent = max_extent
        self.conv = nn.Conv2d(in_channels, out_channels - dv, kernel_size, padding=kernel_size // 2, bias=False)
        self.qkv = nn.Conv2d(in_channels, 2 * heads * self.dkh + dv, 1, bias=False)
        self.proj = nn.Conv2d(dv, dv, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * max_extent - 1, self.dkh) * self.dkh ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * max_extent - 1, self.dkh) * self.dkh ** -0.5)

    def _offsets(self, table: torch.Tensor, n: int) -> torch.Tensor:
        """Embeddings of the offsets j − i for positions i, j < n: (n, n, d_kh), entry [i, j]."""
        pos = torch.arange(n, device=table.device)
        return table[pos[None, :] - pos[:, None] + self.max_extent - 1]

    def _relative_terms(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row term q_i·r^H (B, N_h, H, W, H) and column term q_i·r^W (B, N_h, H, W, W) per key row / column."""
        h, w = q.shape[2:4]
        rows = torch.einsum("bnxyd,xid->bnxyi", q, self._offsets(self.rel_h, h))
        cols = torch.einsum("bnxyd,yjd->bnxyj", q, self._offsets(self.rel_w, w))
        return rows, cols

    def relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        b, heads, h, w, _ = q.shape
        rows, cols = self._relative_terms(q)
        return (rows[..., :, None] + cols[..., None, :]).reshape(b, heads, h * w, h * w)

    def _attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax weights (B, N_h, HW, HW) and values (B, N_h, d_vh, HW) of input x."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AA-conv expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                             f"build it with in_channels={x.shape[1] if x.ndim == 4 else '?'}")
        b, _, h, w = x.shape
        if max(h, w) > self.max_extent:
            raise ValueError(f"AA-conv input is {h}x{w} but its relative embeddings cover at most "
                             f"{self.max_extent} positions per side: build it with max_extent >= {max(h, w)}")
        dk = self.heads * self.dkh
        q, k, v = self.qkv(x).split((dk, dk, self.heads * self.dvh), 1)
        q = q.reshape(b, self.heads, self.dkh, h, w).permute(0, 1, 3, 4, 2) * self.dkh ** -0.5
        k = k.reshape(b, self.heads, self.dkh, h * w)
        v = v.reshape(b, self.heads, self.dvh, h * w)
        rows, cols = self._relative_terms(q)
        logits = (q.reshape(b, self.heads, h * w, self.dkh) @ k).view(b, self.heads, h, w, h, w)
        # in place and broadcast: no (HW)²-sized copy of either relative term
        logits = logits.add_(rows[..., :, None]).add_(cols[..., None, :]).view(b, self.heads, h * w, h * w)
        return logits.softmax(-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, v = self._attention(x)
        out = weights @ v.transpose(2, 3)  # (B, N_h, HW, d_vh)
        out = out.transpose(2, 3).reshape(x.shape[0], -1, *x.shape[2:])
        return torch.cat((self.conv(x), self.proj(out)), 1)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, N_h, Q, H, W)}: the weights of the query points, fractions (Q, 2) of
        the map (``attention.common.query_pixels``), over all H·W keys."""
        h, w = x.shape[2:]
        rows, cols = query_pixels(queries, h, w)
        weights = self._attention(x)[0][:, :, rows * w + cols]
        return {"attention": weights.view(*weights.shape[:3], h, w)}
