"""Expanding Visual Attention head (Küçüksözen, "Expanding Visual Attention", Koç University
COMP551 report, 2019; code: github.com/cankucuksozen/COMP551--ComputerVision-with-DL). Not BAAI's
"EVA" vision transformer.

EVA summarises a k×k feature map (k odd; 7 in the paper) into one vector by attending to rings
that grow from the centre. Ring s (s = 0 … S−1, S = (k+1)/2) holds the pixels at Chebyshev
distance s from the centre c = k//2, row-major: sizes 1, 8, 16, 24, … = (2s+1)² − (2s−1)².
With x ∈ R^{B×C_in×k×k}, d = ``dim`` split into N = ``heads`` heads of d_h = d/N channels:

    q0 = FFN_q(Conv_{k×k}(x))                                  (§3.1, 1st stage; a 1×1 vector)
    for s = 0 … S−1, memory m_j = x[:, :, a_j, b_j] for the ring's pixels (a_j, b_j):
        per head n:  ℓ_j = (W_Q q_s)ⁿ · ((W_K m_j)ⁿ + r_jⁿ) / √d_h,
                     r_jⁿ = [R_rowˢ[a_j − c]ⁿ ; R_colˢ[b_j − c]ⁿ]          (SASA, Eq. 3)
                     attnⁿ = Σ_j softmax_j(ℓ)_j (W_V m_j)ⁿ
        attn_s = Block(W_Z concat_n attnⁿ, q_s)                       (2D attention of stage s)
        q_{s+1} = Block(W_Z' MHA(W_Q' attn_s; W_K', W_V' over [q0, attn_0 … attn_s] + P), attn_s)
                                                                   (1D attention, s + 2 tokens)
    logits = W_fc FFN_out(q_S) + b_fc

    Block(u, q) = LN(FFN(h) + h), h = LN(u + q);   FFN(z) = W_2 Dropout(LeakyReLU(W_1 z + b_1)) + b_2

R_rowˢ, R_colˢ ∈ R^{(2s+1)×d/2} hold the offsets −s … s that occur on ring s (each head uses its
d_h/2-channel slice of each, row first); P ∈ R^{(s+2)×d} are learned absolute slot embeddings
whose logit term is q·P_j, like the code's 1D attention. Stage s's 1D attention takes the 2D
output attn_s as its query and q0, attn_0 … attn_s as keys/values (§3.1: 2, 3, 4, 5 tokens for
k = 7); its output q_{s+1} is the next stage's query. ``fc`` maps the output vector to logits.

Where the paper is silent, the published code's choice is used
(cankucuksozen/COMP551--ComputerVision-with-DL, ``layers/*_v4.py``):
the post-LN residual ``Block`` with a d→d→d FFN (biases, LeakyReLU(0.01), dropout 0.15) around
every attention, the output projection W_Z, slot embeddings P in the 1D attentions, the
query/output FFNs d→d→d without bias, kaiming_normal_(a=1) on the Linears, N(0, 1) embeddings
and the per-head [row; column] split of r. The k×k conv has no bias (the paper mentions none).

Deviations from the paper:
    - logits are scaled by 1/√d_h (content and relative terms; the paper writes no scale, the code
      scales, and without it the logits grow with d_h);
    - relative tables hold 2s+1 offsets per stage, not SASA's 2(k−1)+1: the other rows could never
      be used;
    - stage 0 has a single key, so its softmax is 1 and attn = W_V m_centre for every query (the
      note's "reduces to W_Z·W_V·centre"). Its W_Q, W_K and relative embeddings would never get a
      gradient, so they are omitted: the output is identical. q0 still enters through the stage-0
      residual and as the first 1D token.

``variant="code"`` switches to the published code's design where it differs from the paper:
    - q0 = FFN_q(x[:, :, c, c]) from the centre pixel; no k×k conv;
    - no W_Q in the 2D attentions (the incoming query is used as is);
    - no 1D attention after stage 0 (attn_0 is the query of stage 1) and q0 is never a token:
      S−1 1D attentions over [attn_0 … attn_s] (2, 3, 4 tokens for k = 7);
    - an attention prior: stage s < S−1 predicts logits π for ring s+1 from its update,
      π = FFN_π(W_Z attn) (d → d/2 → |ring s+1|, no bias), added to every head's logits there.
It does not reproduce the code's bugs: rel_h indexed by the column offset (here rows use row
offsets), the in-place 0.25 scaling of the 2D residual, the prior of the last ring being zeroed
(stage S−2's predictor feeds it here) and the predictors that get no gradient (the last stage has
none; each predicts only its ring's |ring s+1| logits instead of (2s+3)² of which the inner ones
are discarded). Relative embeddings stay per stage (the code shares one pair over all stages).

Shapes: input (B, in_features, k, k) → logits (B, num_classes). The backbone must deliver the
k×k map (``evanet20`` crops CIFAR's 8×8 to 7×7); anything else raises ValueError.
"""

from __future__ import annotations

import torch
from torch import nn

VARIANTS = ("paper", "code")


def ring_positions(kernel_size: int, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (int64, row-major) of ring ``stage`` of a k×k map: the pixels whose
    Chebyshev distance to the centre k//2 is ``stage``. Ring sizes: 1, 8, 16, …"""
    centre = kernel_size // 2
    rows, cols = torch.meshgrid(torch.arange(kernel_size), torch.arange(kernel_size), indexing="ij")
    ring = torch.maximum((rows - centre).abs(), (cols - centre).abs()) == stage
    return rows[ring], cols[ring]  # boolean indexing walks the grid row-major


def ffn(in_dim: int, hidden: int, out_dim: int, bias: bool, drop_rate: float) -> nn.Sequential:
    """The code's ``fully_connected``: Linear → LeakyReLU(0.01) → Dropout → Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=bias), nn.LeakyReLU(), nn.Dropout(drop_rate),
                         nn.Linear(hidden, out_dim, bias=bias))


def single_query_weights(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor, heads: int,
                         prior: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax weights (B, heads, N) of one query per sample over N tokens, heads by channel split.

    q (B, d); k (B, N, d); pos (N, d) position embeddings (logit term q·pos, scaled like q·k);
    prior (B, N) logits added to every head.
    """
    b, n, d = k.shape
    dh = d // heads
    keys = (k + pos).view(b, n, heads, dh)
    logits = torch.einsum("bhc,bnhc->bhn", q.view(b, heads, dh), keys) * dh ** -0.5
    if prior is not None:
        logits = logits + prior[:, None, :]
    return logits.softmax(-1)


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                           heads: int, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of one query per sample over N tokens: ``single_query_weights``
    applied to v (B, N, d). Returns (B, d)."""
    b, n, d = v.shape
    weights = single_query_weights(q, k, pos, heads, prior)
    return torch.einsum("bhn,bnhc->bhc", weights, v.view(b, n, heads, d // heads)).reshape(b, d)


class PostNormBlock(nn.Module):
    """The code's residual wrapper around each attention: h = LN(u + q); LN(FFN(h) + h). (B, d)."""

    def __init__(self, dim: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = ffn(dim, dim, dim, True, drop_rate)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = self.norm1(update + residual)
        return self.norm2(self.ffn(h) + h)


class RingAttention(nn.Module):
    """2D attention of one EVA stage: a single query attends over ring ``stage`` of a k×k map.

    forward(query (B, d), x (B, C_in, k·k), prior (B, |ring|) or None) →
    (output (B, d), prior for the next ring (B, |ring s+1|) or None).
    """

    def __init__(self, in_features: int, dim: int, heads: int, kernel_size: int, stage: int,
                 query_proj: bool, next_ring: int, drop_rate: float) -> None:
        super().__init__()
        rows, cols = ring_positions(kernel_size, stage)
        self.heads = heads
        self.register_buffer("index", rows * kernel_size + cols, persistent=False)
        if len(rows) > 1:
            centre = kernel_size // 2
            # table row of offset a − c is (a − c) + s: the tables hold offsets −s … s
            self.register_buffer("row_offset", rows - centre + stage, persistent=False)
            self.register_buffer("col_offset", cols - centre + stage, persistent=False)
            self.rel_row = nn.Embedding(2 * stage + 1, dim // 2)
            self.rel_col = nn.Embedding(2 * stage + 1, dim // 2)
            self.query = nn.Linear(dim, dim, bias=False) if query_proj else nn.Identity()
            self.key = nn.Linear(in_features, dim, bias=False)
        else:
            self.key = None  # one key: softmax ≡ 1, so W_Q, W_K and r cannot affect anything
        self.value = nn.Linear(in_features, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.block = PostNormBlock(dim, drop_rate)
        self.predict_next = ffn(dim, dim // 2, next_ring, False, drop_rate) if next_ring else None

    def relative_embeddings(self) -> torch.Tensor:
        """r_j for the ring's pixels, (|ring|, d): per head [row slice; column slice]."""
        n = len(self.index)
        half = self.rel_row.embedding_dim // self.heads
        rel_row = self.rel_row(self.row_offset).view(n, self.heads, half)
        rel_col = self.rel_col(self.col_offset).view(n, self.heads, half)
        return torch.cat((rel_row, rel_col), -1).reshape(n, -1)

    def attention_weights(self, query: torch.Tensor, x: torch.Tensor,
                          prior: torch.Tensor | None = None) -> torch.Tensor:
        """The weights (B, heads, |ring|) of ``attend``; all 1 on ring 0's single pixel."""
        if self.key is None:
            return x.new_ones(len(x), self.heads, 1)
        memory = x[:, :, self.index].transpose(1, 2)
        return single_query_weights(self.query(query), self.key(memory), self.relative_embeddings(),
                                    self.heads, prior)

    def attend(self, query: torch.Tensor, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-head attention output before W_Z, (B, d)."""
        memory = x[:, :, self.index].transpose(1, 2)  # (B, |ring|, C_in)
        values = self.value(memory)
        if self.key is None:
            return values[:, 0]
        return single_query_attention(self.query(query), self.key(memory), values,
                                      self.relative_embeddings(), self.heads, prior)

    def forward(self, query: torch.Tensor, x: torch.Tensor,
                prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        update = self.proj(self.attend(query, x, prior))
        next_prior = self.predict_next(update) if self.predict_next is not None else None
        return self.block(update, query), next_prior


class TokenAttention(nn.Module):
    """1D attention of one query over the stage outputs so far, with learned slot embeddings.
    forward(query (B, d), tokens (B, N, d)) → (B, d)."""

    def __init__(self, dim: int, heads: int, num_tokens: int, drop_rate: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.pos = nn.Embedding(num_tokens, dim)
        self.block = PostNormBlock(dim, drop_rate)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        attn = single_query_attention(self.query(query), self.key(tokens), self.value(tokens),
                                      self.pos.weight, self.heads)
        return self.block(self.proj(attn), query)


class EVAHead(nn.Module):
    """Expanding Visual Attention head. (B, in_features, k, k) → (B, num_classes) logits.

    ``dim`` (default ``in_features``) is the model and output width of EVA; ``heads`` must divide
    it into an even per-head width. ``drop_rate`` is the dropout inside every FFN (code: 0.15).
    """

    def __init__(self, in_features: int, num_classes: int, heads: int = 4, kernel_size: int = 7,
                 dim: int | None = None, variant: str = "paper", drop_rate: float = 0.15) -> None:
        super().__init__()
        dim = dim or in_features
        if variant not in VARIANTS:
            raise ValueError(f"unknown EVA variant '{variant}'; valid: {', '.join(VARIANTS)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"EVA needs an odd kernel_size (the map has a centre pixel), got {kernel_size}")
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim {dim} must split into {heads} heads of even width (row and column "
                             f"halves of the relative embedding); pick heads dividing {dim // 2}")
        self.in_features = in_features
        self.kernel_size = kernel_size
        self.variant = variant
        stages = (kernel_size + 1) // 2
        paper = variant == "paper"
        if paper:
            self.query_conv = nn.Conv2d(in_features, dim, kernel_size, bias=False)
            self.query_ffn = ffn(dim, dim, dim, False, drop_rate)
        else:
            self.query_ffn = ffn(in_features, dim, dim, False, drop_rate)
        self.rings = nn.ModuleList(
            RingAttention(in_features, dim, heads, kernel_size, s, query_proj=paper,
                          next_ring=0 if paper or s == stages - 1 else 8 * (s + 1), drop_rate=drop_rate)
            for s in range(stages)
        )
        # paper: one 1D attention per stage over [q0, attn_0 … attn_s]; code: none after stage 0, no q0
        self.mixers = nn.ModuleList(
            TokenAttention(dim, heads, s + 2 if paper else s + 1, drop_rate) for s in range(0 if paper else 1, stages)
        )
        self.out_ffn = ffn(dim, dim, dim, False, drop_rate)
        self.fc = nn.Linear(dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.fc:
                nn.init.kaiming_normal_(m.weight, a=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.out_ffn(self._expand(x)))

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"rings.s.attention": (B, heads, k, k)}: stage s's 2D attention weights placed on its
        ring's pixels (zero elsewhere); ring 0 is the centre pixel with weight 1."""
        weights = []
        self._expand(x, weights)
        maps = {}
        for s, (ring, w) in enumerate(zip(self.rings, weights)):
            canvas = w.new_zeros(*w.shape[:2], self.kernel_size ** 2)
            canvas[:, :, ring.index] = w
            maps[f"rings.{s}.attention"] = canvas.unflatten(2, (self.kernel_size, self.kernel_size))
        return maps

    def _expand(self, x: torch.Tensor, ring_weights: list | None = None) -> torch.Tensor:
        """The output vector q_S (B, d) before the output FFN; appends every stage's 2D attention
        weights (B, heads, |ring|) to ``ring_weights`` when given."""
        k = self.kernel_size
        if x.ndim != 4 or x.shape[1] != self.in_features or tuple(x.shape[2:]) != (k, k):
            raise ValueError(
                f"EVA head expects features (B, {self.in_features}, {k}, {k}) but got {tuple(x.shape)}: "
                f"crop the backbone's map to {k}x{k} (evanet20 does) or build the head with "
                f"kernel_size=<the odd map size>"
            )
        flat = x.flatten(2)  # (B, C_in, k·k)
        if self.variant == "paper":
            query = self.query_ffn(self.query_conv(x).flatten(1))
            tokens = [query]
        else:
            query = self.query_ffn(flat[:, :, (k * k) // 2])
            tokens = []
        skip = len(self.rings) - len(self.mixers)  # stages without a 1D attention (code: stage 0)
        prior = None
        for s, ring in enumerate(self.rings):
            if ring_weights is not None:
                ring_weights.append(ring.attention_weights(query, flat, prior))
            attn, prior = ring(query, flat, prior)
            tokens.append(attn)
            query = attn if s < skip else self.mixers[s - skip](attn, torch.stack(tokens, 1))
        return query
