"""BoTNet's multi-head self-attention (Srinivas, Lin, Parmar, Shlens, Abbeel & Vaswani,
"Bottleneck Transformers for Visual Recognition", CVPR 2021), the MHSA of Fig. 4.

Equations (x ∈ R^{B×d_in×H×W}, N = 4 heads, d = d_out/N, global: every position attends all
L = H·W positions):
    q_ij = W_Q x_ij,  k_ab = W_K x_ab,  v_ab = W_V x_ab          W_* ∈ R^{d_out×d_in}, no bias
    per head n (channels n·d … (n+1)·d − 1 of q, k, v):
    ℓ_ij,ab = (q_ijᵀ k_ab + q_ijᵀ r_{a−i, b−j}) / √d        content-content qkᵀ + content-position qrᵀ
    r_{a−i, b−j} = R_h[a−i] + R_w[b−j] ∈ R^d                  relative height and width embeddings
    y_ij = Σ_ab softmax_ab(ℓ_ij,ab) v_ab
    stride 2: y ← 2×2 average pooling with stride 2, after the attention (the paper's c5 first block).
R_h and R_w are shared by the heads, as in AA-conv's relative logits (Bello et al. 2019, §3.2;
``aa_conv.py``), the relative-distance encoding BoTNet's MHSA uses. Fig. 4 draws neither the
1/√d of the Transformer's attention nor where it applies; we scale both terms, as AA-conv does.

Placement ``"conv"``: replaces the 3×3 convolutions of residual blocks; BoT50 is
``create_model("resnet50", 1000, attn="bottleneck", attn_stages=[4])`` (MHSA in the three c5
blocks, the BN after it kept).

Relative embedding size: the paper's tables have 2H−1 and 2W−1 rows for the layer's fixed input
size. Here they have 2E−1 rows, E = stride·``max_size``, where ``max_size`` is the largest
output side they cover exactly; a stride-2 layer attends its input before pooling, so its tables
cover 2·max_size. Offsets beyond ±(E−1) (inputs larger than E) share the outermost rows (clipped
relative distances, as Shaw et al. 2018), so any H, W works, and for H, W ≤ E this is the paper's
layer. Default max_size = 7, the c5 output at 224×224, the paper's ImageNet setting: the first
c5 block gets 27-row tables (its 14×14 input), the other two 13 rows (7×7), the paper's own
tables, so the ResNet-50 count is the paper's.

Deviations:
- Relative offsets beyond the tables are clipped (above); the paper builds tables per input size.
- For odd H or W the stride-2 pool uses ``ceil_mode`` (⌈H/2⌉ × ⌈W/2⌉, as the 3×3 stride-2 conv
  it replaces and the ResNet shortcut), as ``sasa.py``.
- Tables initialised N(0, 1/d); the paper gives no initialisation.

Implementation and memory: the attention is one block of ``sasa.py``'s ``blocked_attention``:
the positional term enters PyTorch's fused attention as H + W extra coordinates (one-hot key row
and column), so neither the L×L relative bias nor the attention matrix is stored for the
backward pass; q', k', v' are d + H + W wide.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_input_channels, query_pixels
from .sasa import blocked_attention, halo_blocks


class BoTSelfAttention(nn.Module):
    """Global multi-head self-attention with 2-D relative position logits.
    (B, in_channels, H, W) → (B, out_channels, H', W'), where H', W' = H, W for stride 1 and
    ⌈H/2⌉, ⌈W/2⌉ for stride 2."""

    placement = "conv"
    paper = "Srinivas, Lin, Parmar, Shlens, Abbeel & Vaswani, CVPR 2021"
    kind = "self-attention"

    def __init__(self, in_channels: int, out_channels: int | None = None, heads: int = 4,
                 stride: int = 1, max_size: int = 7) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (stride 2 = 2x2 average pooling after attention), got {stride}")
        if heads < 1 or out_channels % heads:
            raise ValueError(f"out_channels ({out_channels}) must split into {heads} heads; "
                             f"choose heads dividing out_channels")
        if max_size < 1:
            raise ValueError(f"max_size (largest output side the position tables cover) must be ≥ 1, got {max_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.head_dim = out_channels // heads
        self.stride = stride
        self.extent = stride * max_size  # the largest input side the tables cover
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1, bias=False)
        self.rel_height = nn.Parameter(torch.randn(2 * self.extent - 1, self.head_dim) * self.head_dim ** -0.5)
        self.rel_width = nn.Parameter(torch.randn(2 * self.extent - 1, self.head_dim) * self.head_dim ** -0.5)

    def table_rows(self, query: torch.Tensor, size: int) -> torch.Tensor:
        """Table row of each key position 0 … size−1 for each query position (Q,): (Q, size),
        the offset key − query clipped to ±(E−1), shifted to start at 0."""
        offset = torch.arange(size, device=query.device) - query[:, None]
        return offset.clamp(1 - self.extent, self.extent - 1) + self.extent - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_channels(self, x)
        b, _, h, w = x.shape
        n, d = self.heads, self.head_dim
        # one block holding the whole map: global attention
        q, key, val = halo_blocks(self.qkv(x).view(b, 3, n, d, h, w), (h, w), 0)
        row_logits = torch.einsum("bnIJijc,tc->bnIJijt", q, self.rel_height)  # q·R_h for every table row
        col_logits = torch.einsum("bnIJijc,tc->bnIJijt", q, self.rel_width)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        y = blocked_attention(q, key, val, row_logits, col_logits,
                              self.table_rows(rows, h), self.table_rows(cols, w), None)
        if self.stride == 2:
            y = F.avg_pool2d(y, 2, ceil_mode=True)
        return y

    def attention_weights(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The softmax weights of query pixels (rows[q], cols[q]) over the whole map, computed
        with an explicit softmax: (B, N, Q, H, W). Σ_ab w·v_ab is the output at the query before
        pooling. Costs O(Q·H·W) per head."""
        b, _, h, w = x.shape
        n, d = self.heads, self.head_dim
        q, k, _ = self.qkv(x).view(b, 3, n, d, h, w).unbind(1)
        q = q[:, :, :, rows, cols].transpose(2, 3)  # (B, N, Q, d)
        row_term = torch.einsum("bnqc,qac->bnqa", q, self.rel_height[self.table_rows(rows, h)])
        col_term = torch.einsum("bnqc,qoc->bnqo", q, self.rel_width[self.table_rows(cols, w)])
        logits = torch.einsum("bnqc,bnchw->bnqhw", q, k) + row_term[..., :, None] + col_term[..., None, :]
        return (logits * d ** -0.5).flatten(3).softmax(-1).view(b, n, len(rows), h, w)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, N, Q, H, W)}: ``attention_weights`` of the query points, fractions
        (Q, 2) of the input map (``attention.common.query_pixels``)."""
        return {"attention": self.attention_weights(x, *query_pixels(queries, *x.shape[2:]))}
