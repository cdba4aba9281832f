"""Halo attention, HaloNet's blocked local self-attention (Vaswani, Ramachandran, Srinivas,
Parmar, Hechtman & Shlens, "Scaling Local Self-Attention for Parameter Efficient Visual
Backbones", CVPR 2021).

Equations (x ∈ R^{B×d_in×H×W}, N heads, d = d_out/N, block size b, halo h; the map is cut into
non-overlapping b×b query blocks; block β's window M(β) is the block plus h pixels on every side,
(b+2h)×(b+2h) pixels):
    q_ij = W_Q x_ij,  k_ab = W_K x_ab,  v_ab = W_V x_ab          W_* ∈ R^{d_out×d_in}, no bias
    per head n (channels n·d … (n+1)·d − 1 of q, k, v), for the query ij of block β(ij):
    ℓ_ij,ab = q_ijᵀ k_ab / √d + q_ijᵀ r_{a−i, b−j}
    r_{a−i, b−j} = [R_row[a−i] ; R_col[b−j]] ∈ R^d,    a−i, b−j ∈ [−(b+h−1), b+h−1]
    y_ij = Σ_{ab ∈ M(β(ij)) ∩ image} softmax_ab(ℓ_ij,ab) v_ab
Every query of a block shares the block's window (SASA, ``sasa.py``, gives each query its own
centred k×k window: it is halo attention with b = 1 and h = (k−1)/2, tested). Defaults b = 8,
h = 3 (the paper's HaloNet setting, a 14×14 window) and 8 heads.

Stride 2, the paper's strided self-attention (downsampling as a strided convolution does, rather
than SASA's pooling after full-resolution attention): only the queries at even rows and columns
are computed, each attending its block's full (b+2h)² window at the input resolution; output
⌈H/2⌉ × ⌈W/2⌉, the pixels a stride-2 3×3 conv and the ResNet shortcut sample. No pooling.

Relative embeddings as SASA's (``sasa.py``): row and column tables of 2(b+h)−1 rows (every
offset between a block pixel and its window; the window size fixes them, so any map size
works), each d_out/2 wide; head n uses its d/2 slice of each, so every head has a row half and a
column half.

Placement ``"conv"``: replaces the 3×3 convolutions of residual blocks (ResNet ``attn="halo"``
with ``attn_stages``).

Deviations:
- Any H, W: the map is zero-padded bottom/right to whole blocks, and keys outside the image
  (the halo of border blocks and the block padding) are masked out of the softmax rather than
  attended as zeros (which would still carry positional logits). A map smaller than one block is
  one block: attention over the whole map.
- Logit scale 1/√d on the content term only and tables initialised N(0, 1/d), as ``sasa.py``:
  the paper gives neither.

Implementation and memory: the blocking, positional codes and mask are ``sasa.py``'s shared
functions. With K = (b+2h)² keys per block and Q = b² queries, K/V copies cost 2·C·L·K/Q, 6.1×
the map for b = 8, h = 3 (12.2× the output at stride 2); the positional term enters the fused
attention call as 2(b+2h) = 28 extra coordinates (one-hot window row and column), so no
per-query bias tensor and no attention matrix is stored.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import check_input_channels, query_pixels
from .sasa import block_mask, blocked_attention, halo_blocks, relative_attention_weights


class HaloAttention(nn.Module):
    """Blocked local self-attention. (B, in_channels, H, W) → (B, out_channels, H', W'), where
    H', W' = H, W for stride 1 and ⌈H/2⌉, ⌈W/2⌉ for stride 2."""

    placement = "conv"
    paper = "Vaswani, Ramachandran, Srinivas et al., CVPR 2021"
    kind = "self-attention"

    def __init__(self, in_channels: int, out_channels: int | None = None, block_size: int = 8,
                 halo_size: int = 3, heads: int = 8, stride: int = 1) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if block_size < 1 or halo_size < 0:
            raise ValueError(f"block_size must be ≥ 1 and halo_size ≥ 0, got {block_size} and {halo_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (stride 2 = queries at every other pixel), got {stride}")
        if block_size % stride:
            raise ValueError(f"block_size ({block_size}) must be a multiple of stride ({stride}): "
                             f"each block keeps every {stride}-th pixel as a query")
        if heads < 1 or out_channels % heads or (out_channels // heads) % 2:
            raise ValueError(
                f"out_channels ({out_channels}) must split into {heads} heads of an even size "
                f"(row and column embedding halves); choose heads dividing out_channels/2"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.block_size = block_size
        self.halo_size = halo_size
        self.heads = heads
        self.head_dim = out_channels // heads
        self.stride = stride
        offsets = 2 * (block_size + halo_size) - 1
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1, bias=False)
        self.rel_row = nn.Parameter(torch.randn(offsets, out_channels // 2) * self.head_dim ** -0.5)
        self.rel_col = nn.Parameter(torch.randn(offsets, out_channels // 2) * self.head_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_channels(self, x)
        b, _, h, w = x.shape
        n, d, block, s = self.heads, self.head_dim, self.block_size, self.stride
        q, key, val = halo_blocks(self.qkv(x).view(b, 3, n, d, h, w), (block, block), self.halo_size, s)
        # q·R for every table row, (B, N, I, J, b/s, b/s, 2(b+h)−1); times √d because the fused
        # call scales everything by 1/√d and q·r is unscaled
        rel_row = self.rel_row.view(-1, n, d // 2) * d ** 0.5
        rel_col = self.rel_col.view(-1, n, d // 2) * d ** 0.5
        row_logits = torch.einsum("bnIJijc,tnc->bnIJijt", q[..., : d // 2], rel_row)
        col_logits = torch.einsum("bnIJijc,tnc->bnIJijt", q[..., d // 2:], rel_col)
        index = self.table_index(x.device)
        mask = block_mask((h, w), (block, block), self.halo_size, s, device=x.device)
        y = blocked_attention(q, key, val, row_logits, col_logits, index, index, mask)
        return y[:, :, :math.ceil(h / s), :math.ceil(w / s)]

    def table_index(self, device: torch.device) -> torch.Tensor:
        """(b/s, b+2h): the table row of window row aa for the query in block row ii, i.e. of the
        offset aa − h − s·ii, shifted by b+h−1 to start at 0. Columns use the same index."""
        window = torch.arange(self.block_size + 2 * self.halo_size, device=device)
        query = torch.arange(0, self.block_size, self.stride, device=device)
        return window - query[:, None] + self.block_size - 1

    def attention_weights(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The softmax weights of the queries at input pixels (rows[q], cols[q]) over the input
        map, computed with an explicit softmax: (B, N, Q, H, W), zero outside each query's block
        window and the image. At stride 2 the forward pass only computes queries at even pixels.
        Costs O(Q·H·W) per head."""
        b, _, h, w = x.shape
        n, d, block, halo = self.heads, self.head_dim, self.block_size, self.halo_size
        q, k, _ = self.qkv(x).view(b, 3, n, d, h, w).unbind(1)
        q = q[:, :, :, rows, cols].transpose(2, 3)  # (B, N, Q, d)

        def axis(query: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            # table row of each key position for each query, and whether it is in the window
            pos = torch.arange(size, device=x.device)
            first = query // block * block - halo  # the first window position of the query's block
            in_window = (pos >= first[:, None]) & (pos < first[:, None] + block + 2 * halo)
            return (pos - query[:, None] + block + halo - 1).clamp(0, 2 * (block + halo) - 2), in_window

        row_table, row_in = axis(rows, h)
        col_table, col_in = axis(cols, w)
        return relative_attention_weights(q, k, self.rel_row.view(-1, n, d // 2), self.rel_col.view(-1, n, d // 2),
                                          row_table, col_table, row_in[:, :, None] & col_in[:, None, :])

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, N, Q, H, W)}: ``attention_weights`` of the query points, fractions
        (Q, 2) of the output map (``attention.common.query_pixels``; at stride 2 output pixel
        (i, j) is the query at input pixel (2i, 2j)), over the input map."""
        h, w = x.shape[2:]
        rows, cols = query_pixels(queries, math.ceil(h / self.stride), math.ceil(w / self.stride))
        return {"attention": self.attention_weights(x, rows * self.stride, cols * self.stride)}
