"""Query2Label head (Liu, Zhang, Yang, Su & Zhu, "Query2Label: A Simple Transformer Way to
Multi-Label Classification", arXiv:2107.10834, 2021).

Features x ∈ R^{B×d0×h×w} are projected to F ∈ R^{L×d} (1×1 conv, L = h·w) and a fixed 2-D sine
position encoding P ∈ R^{L×d} is added to the keys. C learnable label embeddings E ∈ R^{C×d}
query them through L_dec Transformer decoder layers (post-norm, as in DETR), where Q̃ = Q + E and
F̃ = F + P denote "with position encoding":

    Q^(1)_i = LN(Q_{i−1} + MHA(Q̃_{i−1}, Q̃_{i−1}, Q_{i−1}))      self-attention among labels
    Q^(2)_i = LN(Q^(1)_i + MHA(Q̃^(1)_i, F̃, F))                    cross-attention to the image
    Q_i     = LN(Q^(2)_i + FFN(Q^(2)_i))                          FFN = Linear–ReLU–Linear
    logit_c = w_c^T LN(Q_{L_dec})_c + b_c                         group-wise linear: one w_c ∈ R^d per class

Q_0 = 0 and the label embeddings enter as the queries' position encoding E at every layer (the
official DETR-style code: ``tgt = zeros``, ``query_pos = query_embed``). The sine encoding is
DETR's normalised one: for an axis of length n, position k ↦ u = 2π (k + 1) / n and features
sin(u / 10000^{2j/(d/2)}), cos(u / 10000^{2j/(d/2)}) for j < d/4, y-features then x-features.

Options and deviations:
- ``self_attn=False`` removes the label self-attention sub-layer (and its LayerNorm) from every
  decoder layer, as the official code does by default (``rm_self_attn_dec``,
  ``rm_first_self_attn``); the default keeps it as in the paper's equations.
- ``input_proj=False`` drops the 1×1 projection (official default ``keep_input_proj=False``;
  needs ``hidden_dim == in_features``); the default keeps the paper's linear projection.
- The official configs also run one Transformer encoder layer over F before the decoder; it is
  not part of the decoder-only head described in the paper and is left out.
- Defaults follow the official ResNet-101 setting scaled to ``in_features``: 2 decoder layers,
  4 heads, hidden d = d0, FFN 4d, dropout 0.1. Initialisation as in the official code: Xavier-
  uniform for the decoder's matrices, N(0, 1) label embeddings, U(±1/√d) group-wise linear.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_position_encoding(h: int, w: int, dim: int, device: torch.device | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding, (h·w, dim) in row-major (y, x) order; dim % 4 == 0."""
    if dim % 4:
        raise ValueError(f"the 2-D sine position encoding needs a dimension divisible by 4, got {dim}")
    quarter = dim // 4
    inv_freq = 10000.0 ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)

    def axis(n: int) -> torch.Tensor:  # (n, dim/2): interleaved sin/cos pairs per frequency
        u = torch.arange(1, n + 1, device=device, dtype=torch.float32) * (2 * math.pi / n)
        angle = u[:, None] * inv_freq
        return torch.stack([angle.sin(), angle.cos()], dim=2).flatten(1)

    y = axis(h)[:, None, :].expand(h, w, dim // 2)
    x = axis(w)[None, :, :].expand(h, w, dim // 2)
    return torch.cat([y, x], dim=2).reshape(h * w, dim).to(dtype)


class GroupWiseLinear(nn.Module):
    """One linear unit per class: (B, C, d) → (B, C), logit_c = w_c · q_c + b_c."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return (q * self.weight).sum(-1) + self.bias


class DecoderLayer(nn.Module):
    """Post-norm Transformer decoder layer with position encodings added to queries and keys only.
    q, query_pos: (B, C, d); memory (values) and keys = memory + pos: (B, L, d) → (B, C, d)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, self_attn: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout, batch_first=True) if self_attn else None
        self.norm1 = nn.LayerNorm(dim) if self_attn else None
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(queries out (B, C, d), cross-attention weights (B, heads, C, L) if ``need_weights``
        else None)."""
        if self.self_attn is not None:
            qk = q + query_pos
            q = self.norm1(q + self.drop(self.self_attn(qk, qk, q, need_weights=False)[0]))
        attended, weights = self.cross_attn(q + query_pos, keys, memory, need_weights=need_weights,
                                            average_attn_weights=False)
        q = self.norm2(q + self.drop(attended))
        return self.norm3(q + self.drop(self.ffn(q))), weights


class Query2LabelHead(nn.Module):
    """Label queries decoding backbone features. (B, d0, h, w) → (B, C) logits."""

    def __init__(self, in_features: int, num_classes: int, hidden_dim: int | None = None, num_layers: int = 2,
                 num_heads: int = 4, ffn_dim: int | None = None, dropout: float = 0.1, self_attn: bool = True,
                 input_proj: bool = True) -> None:
        super().__init__()
        hidden = hidden_dim or in_features
        if not input_proj and hidden != in_features:
            raise ValueError(
                f"input_proj=False needs hidden_dim == in_features ({in_features}), got {hidden}; "
                "keep input_proj=True to project the features"
            )
        if hidden % num_heads or hidden % 4:
            raise ValueError(
                f"hidden_dim {hidden} must be divisible by num_heads={num_heads} and by 4 (sine encoding); "
                "pass a hidden_dim that is"
            )
        if num_layers < 1:
            raise ValueError(f"num_layers must be ≥ 1, got {num_layers}")
        self.in_features = in_features
        self.input_proj = nn.Conv2d(in_features, hidden, 1) if input_proj else nn.Identity()
        self.query_embed = nn.Parameter(torch.randn(num_classes, hidden))
        self.layers = nn.ModuleList(
            DecoderLayer(hidden, num_heads, ffn_dim or 4 * hidden, dropout, self_attn) for _ in range(num_layers)
        )
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.norm = nn.LayerNorm(hidden)
        self.fc = GroupWiseLinear(num_classes, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self._tokens(x))

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected tokens (B, L, d) and their sine encodings (L, d) of features x (B, d0, h, w)."""
        if x.ndim != 4 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Query2Label head expects features (B, {self.in_features}, h, w), got {tuple(x.shape)}"
            )
        memory = self.input_proj(x)
        h, w = memory.shape[2:]
        pos = sine_position_encoding(h, w, memory.shape[1], memory.device, memory.dtype)
        return memory.flatten(2).transpose(1, 2), pos

    def decode(self, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) from projected tokens ``memory`` (B, L, d) and their encodings ``pos`` (L, d)."""
        return self._decode(memory, pos, need_weights=False)[0]

    def _decode(self, memory: torch.Tensor, pos: torch.Tensor,
                need_weights: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``decode``'s logits and, with ``need_weights``, every layer's cross-attention weights
        (B, heads, C, L)."""
        query_pos = self.query_embed.expand(memory.shape[0], -1, -1)
        keys = memory + pos
        q = torch.zeros_like(query_pos)
        weights = []
        for layer in self.layers:
            q, w = layer(q, query_pos, memory, keys, need_weights)
            weights += [w] if need_weights else []
        return self.fc(self.norm(q)), weights

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"layers.i.cross_attention": (B, heads, C, h, w)}: each label query's weights over the
        image locations in decoder layer i."""
        weights = self._decode(*self._tokens(x), need_weights=True)[1]
        return {f"layers.{i}.cross_attention": w.unflatten(-1, x.shape[2:]) for i, w in enumerate(weights)}

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder layer's cross-attention of each label, averaged over heads: (B, C, h, w)."""
        weights = self._decode(*self._tokens(x), need_weights=True)[1][-1]
        return weights.mean(1).unflatten(-1, x.shape[2:])
