"""Lambda layer (Bello, "LambdaNetworks: Modeling Long-Range Interactions Without Attention",
ICLR 2021), with local positional lambdas computed by the lambda convolution.

Equations (x ∈ R^{B×d_in×H×W}, n, m ∈ the L = H·W positions; query/key depth |k| = 16, |h| = 4
heads, intra-depth |u| = 1, value depth |v| = d_out/|h|; scope: the r×r neighbourhood, r = 23):
    Q = BN(W_Q x) ∈ R^{L×|h|×|k|},  K = W_K x ∈ R^{L×|k|},  V = BN(W_V x) ∈ R^{L×|v|}    1×1, no bias
    K̄ = softmax over the positions m of K                        (normalised keys)
    λ^c = K̄ᵀ V ∈ R^{|k|×|v|}                                     content lambda, shared by all n
    λ^p_n = Σ_m e_{m−n} v_mᵀ ∈ R^{|k|×|v|}, m in the r×r scope of n   position lambdas
    y_n^h = (λ^c + λ^p_n)ᵀ q_n^h ∈ R^{|v|},   y_n = concat over the heads h      (d_out = |h|·|v|)
    stride 2: y ← 3×3 average pooling with stride 2 after the lambda layer (the paper's
    LambdaResNets: "3x3 average-pooling with stride 2 after the lambda layers to downsample in
    place of the strided convolution").
The position lambdas are the paper's lambda convolution: the embeddings e ∈ R^{|k|×r×r} are the
kernel of a convolution over the spatial axes with V's value channels as independent images
(the paper's 3-D convolution with an r×r×1 kernel over (H, W, |v|), |u| input and |k| output
channels), zero-padded, no bias. Its size is fixed by r, so any map size works.

Placement ``"conv"``: replaces the 3×3 convolutions of residual blocks. The paper's ResNet-50
with every 3×3 conv replaced (its Table 3 "lambda layer", 15.0M parameters) is
``create_model("resnet50", 1000, attn="lambda")``; its hybrid LambdaResNets keep convolutions in
most blocks.

Explainability: lambdas are linear maps, not attention distributions, but the layer is linear in
V: y_n^h = Σ_m w_nm^h v_m with w_nm^h = q_n^hᵀ (k̄_m + e_{m−n}). ``attention_maps`` shows these
weights of the query points (signed and not normalised, unlike softmax attention).

Deviations:
- Intra-depth |u| = 1 only (the paper's default; its |u| = 4 variant is not provided).
- Pooling pads by one pixel and averages only the pixels inside the map (``count_include_pad``
  off, as TensorFlow's 'SAME' pooling); windows are centred on even pixels, the pixels the 3×3
  stride-2 conv samples, so odd sizes give ⌈H/2⌉ × ⌈W/2⌉.
- Initialisation (the paper gives none): embeddings N(0, 1/(|k|·r²)), so that with unit-variance
  q and v (after their BN) the positional output has about unit variance; projections keep
  PyTorch's default.

Memory: the position lambdas λ^p_n, (B, |v|, |k|, L), are |k|/|h| = 4× the size of the output
map; no L×L tensor is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_input_channels, query_pixels


class LambdaLayer(nn.Module):
    """Multi-query lambda layer with a local r×r positional scope.
    (B, in_channels, H, W) → (B, out_channels, H', W'), where H', W' = H, W for stride 1 and
    ⌈H/2⌉, ⌈W/2⌉ for stride 2."""

    placement = "conv"
    paper = "Bello, ICLR 2021"
    kind = "self-attention"

    def __init__(self, in_channels: int, out_channels: int | None = None, key_dim: int = 16, heads: int = 4,
                 kernel_size: int = 23, stride: int = 1) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if heads < 1 or out_channels % heads:
            raise ValueError(f"out_channels ({out_channels}) must split into {heads} heads of |v| value "
                             f"channels each; choose heads dividing out_channels")
        if key_dim < 1:
            raise ValueError(f"key_dim must be ≥ 1, got {key_dim}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size (the scope r) must be odd and positive (a centred r×r scope), "
                             f"got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (stride 2 = 3x3 average pooling after the layer), got {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.key_dim = key_dim
        self.heads = heads
        self.value_dim = out_channels // heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.qkv = nn.Conv2d(in_channels, heads * key_dim + key_dim + self.value_dim, 1, bias=False)
        self.norm_q = nn.BatchNorm2d(heads * key_dim)
        self.norm_v = nn.BatchNorm2d(self.value_dim)
        # the lambda convolution: e_{m−n}[k] = embedding.weight[k, 0, m−n + r//2] (cross-correlation)
        self.embedding = nn.Conv2d(1, key_dim, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.embedding.weight, std=(key_dim * kernel_size ** 2) ** -0.5)

    def queries_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q (B, |h|, |k|, L) after BN, normalised keys K̄ (B, |k|, L) and V (B, |v|, H, W) after BN."""
        check_input_channels(self, x)
        b = x.shape[0]
        q, k, v = self.qkv(x).split([self.heads * self.key_dim, self.key_dim, self.value_dim], 1)
        q = self.norm_q(q).view(b, self.heads, self.key_dim, -1)
        return q, k.flatten(2).softmax(-1), self.norm_v(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.queries_keys_values(x)
        b, _, h, w = x.shape
        content = torch.einsum("bkm,bvm->bkv", k, v.flatten(2))  # λ^c (B, |k|, |v|)
        # λ^p_n for every n: each value channel convolved with the |k| embeddings, (B, |v|, |k|, L)
        position = self.embedding(v.reshape(b * self.value_dim, 1, h, w)).view(b, self.value_dim, self.key_dim, -1)
        y = torch.einsum("bhkn,bkv->bhvn", q, content) + torch.einsum("bhkn,bvkn->bhvn", q, position)
        y = y.reshape(b, self.out_channels, h, w)
        if self.stride == 2:
            y = F.avg_pool2d(y, 3, 2, padding=1, count_include_pad=False)
        return y

    def attention_weights(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The weights w_nm^h = q_n^hᵀ (k̄_m + e_{m−n}) of query pixels n = (rows[q], cols[q])
        over the map: (B, |h|, Q, H, W), e zero outside the r×r scope. Σ_m w_nm^h v_m is head h's
        output at n before pooling (tested). Costs O(Q·H·W·|k|)."""
        q, k, _ = self.queries_keys_values(x)
        b, _, h, w = x.shape
        q = q.view(b, self.heads, self.key_dim, h, w)[..., rows, cols]  # (B, |h|, |k|, Q)
        r = self.kernel_size // 2
        row_off = torch.arange(h, device=x.device) - rows[:, None]  # (Q, H): m − n along rows
        col_off = torch.arange(w, device=x.device) - cols[:, None]  # (Q, W)
        scope = (row_off.abs() <= r)[:, :, None] & (col_off.abs() <= r)[:, None, :]  # (Q, H, W)
        row_idx, col_idx = (row_off.clamp(-r, r) + r)[:, :, None], (col_off.clamp(-r, r) + r)[:, None, :]
        emb = self.embedding.weight[:, 0][:, row_idx, col_idx] * scope  # e_{m−n}: (|k|, Q, H, W)
        content = torch.einsum("bhkq,bkm->bhqm", q, k).view(b, self.heads, len(rows), h, w)
        return content + torch.einsum("bhkq,kqyx->bhqyx", q, emb)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, |h|, Q, H, W)}: ``attention_weights`` of the query points, fractions
        (Q, 2) of the input map (``attention.common.query_pixels``). Signed linear weights, not
        a softmax (see the module docstring)."""
        return {"attention": self.attention_weights(x, *query_pixels(queries, *x.shape[2:]))}
