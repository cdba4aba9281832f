"""Stand-alone local self-attention, SASA (Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens,
"Stand-Alone Self-Attention in Vision Models", NeurIPS 2019).

Equations (x ∈ R^{B×d_in×H×W}, N heads, d = d_out/N, r = (k−1)/2, window N_k(i,j) = the k×k
pixels (a, b) with |a−i| ≤ r, |b−j| ≤ r):
    q_ij = W_Q x_ij,  k_ab = W_K x_ab,  v_ab = W_V x_ab          W_* ∈ R^{d_out×d_in}, no bias
    per head n (channels n·d … (n+1)·d − 1 of q, k, v):
    ℓ_ij,ab = q_ijᵀ k_ab / √d + q_ijᵀ r_{a−i, b−j}                                  (paper eq. 3)
    r_{a−i, b−j} = [R_row[a−i] ; R_col[b−j]] ∈ R^d                (row half, column half)
    y_ij = Σ_{ab ∈ N_k(i,j) ∩ image} softmax_ab(ℓ_ij,ab) v_ab
    stride 2: y ← 2×2 average pooling with stride 2, after the attention (paper §4.1).

Relative embeddings: the paper's tables R_row, R_col ∈ R^{·×d_out/2}, concatenated to d_out.
Split over heads, head n uses columns n·d/2 … (n+1)·d/2 − 1 of each table. So every head gets a
row half and a column half of d/2 each. Splitting the concatenated d_out vector head by head
would give the first N/2 heads only row offsets and the rest only column offsets.

Placement ``"conv"``: SASA replaces a spatial convolution, so ResNet does not place it
automatically; ``backbones.sanet`` builds SANet-20 with it.

Deviations:
- Logit scale 1/√d on the content term q·k (Vaswani et al.'s scaled dot product; the paper writes
  no scale). The relative term q·r is unscaled, and R is initialised N(0, 1/d) so both terms have
  the same variance at init. The paper gives no initialisation.
- The multi-head text gives per-head transforms W^n ∈ R^{d_out/N×d_in/N}, i.e. grouped projections.
  We use full d_out×d_in projections split over heads. The paper's own count for its
  full-attention ResNet-50, 18.0M parameters, matches full projections: 25.6M − 11.3M (3×3 convs)
  + 3.8M (3·d_in·d_out) ≈ 18.0M. Grouped projections would give ≈ 14.7M. W_Q, W_K, W_V are stored
  stacked in one 1×1 conv ``qkv`` (d_out rows each, in that order).
- The tables have k rows (offsets −r … r), not the paper's 2(k−1)+1. Offsets beyond ±r never
  occur in a k×k window, so those extra rows would get no gradient.
- Neighbours outside the image are masked (−inf before the softmax), not zero-padded keys. The
  paper does not say how borders are handled.
- For odd H or W the stride-2 pool uses ``ceil_mode``: the last row/column is averaged on its own,
  giving ⌈H/2⌉ × ⌈W/2⌉. That matches the 3×3 stride-2 conv it replaces and the ResNet shortcut.
  For even sizes this is the paper's plain 2×2 pool.

Implementation and memory (per image and layer, in floats; C = d_out, L = H·W, N heads, d = C/N):
- A naive unfold of K and V into every pixel's window stores 2·C·L·k² values, and their gradients
  as many again: ~13 GB for a CIFAR ResNet-26 (leaderj1001 issues #6, #21).
- Here the map is cut into bh×bw query blocks; each block attends to its (bh+2r)×(bw+2r) halo
  (HaloNet's blocking). With K = (bh+2r)(bw+2r) keys per block and Q = bh·bw queries, K/V copies
  cost 2·C·L·K/Q: 3.1× the map for 8×8 blocks and k = 7, instead of k² = 49×.
- The relative term goes into the same scaled-dot-product-attention call as the content term,
  through 2k extra coordinates. Key ab gets one-hot(a mod k) ⊕ one-hot(b mod k). The k rows of a
  window are consecutive integers, so a residue c names one window row a. Query ij puts
  √d·q_rowᵀ R_row[a−i] at that residue, and the same for columns (q_row, q_col are q's two halves).
  Inside the window q'·k'/√d = q·k/√d + q·r_{a−i,b−j} exactly. Keys outside it are masked, so
  their wrong positional term never counts. No B×N×L×K bias tensor is built. The window and
  image borders become one boolean mask, shared by the batch and the heads.
- PyTorch's fused attention (flash on CPU) saves no attention matrix for the backward pass. What
  is kept is q', k', v' and the output, each d + 2k wide: N·L·(d+2k)·(2 + 2K/Q), plus the same
  again for gradients. For C = 64, N = 8, k = 7 and 8×8 blocks that is 1.4k·L against the naive
  6.3k·L. Measured peak memory of forward + backward is 4.2× lower
  (``benchmarks/local_attention.py``).
- Maps no larger than one halo, H·W ≤ (block_size + 2r)², use a single block covering the whole
  image with no halo: dense attention over all H·W keys with the banded k×k mask and no K/V
  copies. Both paths compute the same function.
- The blocking, the positional codes and the mask are module-level functions (``halo_blocks``,
  ``blocked_attention``, ``block_mask``, ``relative_attention_weights``) shared with HaloNet's
  attention (``halo.py``): SASA is halo attention whose every query keeps its own k×k window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_input_channels, query_pixels


def halo_blocks(qkv: torch.Tensor, block: tuple[int, int], halo: int,
                stride: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut queries, keys and values (B, 3, N, d, H, W) into I×J blocks of bh×bw pixels (the map
    zero-padded bottom/right to whole blocks). Returns the queries of each block, every
    ``stride``-th pixel, (B, N, I, J, bh/stride, bw/stride, d), and the keys and values of each
    block with a ``halo``-pixel border (zeros outside the map), (B, N, I, J, bh+2·halo, bw+2·halo, d).
    All three are views of one padded copy; the overlapping windows are copied only by their
    first out-of-place use."""
    _, _, _, _, h, w = qkv.shape
    bh, bw = block
    nbh, nbw = math.ceil(h / bh), math.ceil(w / bw)
    hp, wp = nbh * bh, nbw * bw
    qkv = F.pad(qkv, (halo, wp - w + halo, halo, hp - h + halo))
    q = qkv[:, 0, :, :, halo:halo + hp:stride, halo:halo + wp:stride]
    q = q.unflatten(3, (nbh, bh // stride)).unflatten(5, (nbw, bw // stride)).permute(0, 1, 3, 5, 4, 6, 2)
    key, val = (t.unfold(3, bh + 2 * halo, bh).unfold(4, bw + 2 * halo, bw).permute(0, 1, 3, 4, 5, 6, 2)
                for t in (qkv[:, 1], qkv[:, 2]))
    return q, key, val


def blocked_attention(q: torch.Tensor, key: torch.Tensor, val: torch.Tensor,
                      row_logits: torch.Tensor, col_logits: torch.Tensor,
                      row_index: torch.Tensor, col_index: torch.Tensor,
                      mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of query blocks over their key windows with a 2-D relative position term, in one
    fused scaled-dot-product-attention call (see the module docstring).

    q (B, N, I, J, qh, qw, d) and key, val (B, N, I, J, kh, kw, d) as ``halo_blocks`` gives them.
    row_logits (B, N, I, J, qh, qw, T): each query's positional logit for every row of a table of
    T row offsets; row_index (qh, P): for query row ii and residue c, the table row of the window
    row aa ≡ c (mod P). The rows a query attends must have distinct residues mod P. Columns
    likewise. mask (1, I·J, qh·qw, kh·kw), True = attend, or None. The logit of query (ii, jj)
    for key (aa, bb) is
        (q·k + row_logits[row_index[ii, aa mod P]] + col_logits[col_index[jj, bb mod P']]) / √d,
    so callers pass positional logits times √d to leave them unscaled.
    Returns (B, N·d, I·qh, J·qw), heads in channel blocks of d."""
    b, n, nbh, nbw, qh, qw, d = q.shape
    kh, kw = key.shape[4:6]
    p_row, p_col = row_index.shape[1], col_index.shape[1]
    dev = q.device
    q_row = row_logits.gather(-1, row_index[:, None].expand(*row_logits.shape[:-1], p_row))
    q_col = col_logits.gather(-1, col_index[None].expand(*col_logits.shape[:-1], p_col))
    q = torch.cat([q, q_row, q_col], -1)
    pos = torch.cat([torch.eye(p_row, device=dev, dtype=q.dtype)[torch.arange(kh, device=dev) % p_row][:, None]
                     .expand(kh, kw, p_row),
                     torch.eye(p_col, device=dev, dtype=q.dtype)[torch.arange(kw, device=dev) % p_col][None]
                     .expand(kh, kw, p_col)], -1)  # (kh, kw, P + P')
    key = torch.cat([key, pos.expand(*key.shape[:-1], p_row + p_col)], -1)
    # fused kernels need values as wide as keys; the zero columns are sliced off the output
    val = torch.cat([val, val.new_zeros(()).expand(*val.shape[:-1], p_row + p_col)], -1)

    e = d + p_row + p_col
    y = F.scaled_dot_product_attention(
        q.view(b * n, nbh * nbw, qh * qw, e), key.view(b * n, nbh * nbw, kh * kw, e),
        val.view(b * n, nbh * nbw, kh * kw, e), attn_mask=mask, scale=d ** -0.5,
    )
    return y.view(b, n, nbh, nbw, qh, qw, e)[..., :d].permute(0, 1, 6, 2, 4, 3, 5).reshape(b, n * d, nbh * qh, nbw * qw)


def block_mask(size: tuple[int, int], block: tuple[int, int], halo: int, stride: int = 1,
               radius: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Which window keys each query of ``halo_blocks`` may attend: (1, I·J, qh·qw, kh·kw) bool,
    True = attend. A key is allowed if it lies inside the H×W image and, when ``radius`` is
    given, within ±radius rows and columns of the query (SASA's k×k window; without it the
    whole window, HaloNet's). Queries in the block padding beyond the image may also see padded
    keys; their outputs are cropped, and this keeps their softmax rows non-empty, so the
    backward pass stays finite."""

    def axis(block: int, size: int) -> tuple[torch.Tensor, ...]:
        # along one axis: query ii of a block vs window position aa; block I vs aa; block I vs ii
        span = torch.arange(block + 2 * halo, device=device)
        query = torch.arange(0, block, stride, device=device)
        start = torch.arange(math.ceil(size / block), device=device)[:, None] * block
        offset = span - halo - query[:, None]  # (queries, span)
        in_window = offset.abs() <= radius if radius is not None else torch.ones_like(offset, dtype=torch.bool)
        key_inside = (start - halo + span >= 0) & (start - halo + span < size)  # (blocks, span)
        query_outside = start + query >= size  # (blocks, queries)
        return in_window, key_inside, query_outside

    row_win, row_in, row_out = axis(block[0], size[0])
    col_win, col_in, col_out = axis(block[1], size[1])
    # axes: (block row I, block col J, query ii, query jj, key aa, key bb)
    window = row_win[None, None, :, None, :, None] & col_win[None, None, None, :, None, :]
    inside = row_in[:, None, None, None, :, None] & col_in[None, :, None, None, None, :]
    padded_query = row_out[:, None, :, None, None, None] | col_out[None, :, None, :, None, None]
    n_blocks = row_in.shape[0] * col_in.shape[0]
    return (window & (inside | padded_query)).reshape(1, n_blocks, row_win.shape[0] * col_win.shape[0], -1)


def relative_attention_weights(q: torch.Tensor, k: torch.Tensor, rel_row: torch.Tensor, rel_col: torch.Tensor,
                               row_table: torch.Tensor, col_table: torch.Tensor,
                               window: torch.Tensor) -> torch.Tensor:
    """Softmax weights (B, N, Q, H, W) of queries q (B, N, Q, d) over keys k (B, N, d, H, W),
    computed explicitly. Logits q·k/√d + q_rowᵀ rel_row[row_table] + q_colᵀ rel_col[col_table]
    (q_row, q_col: q's two halves; rel tables (T, N, d/2), head n using its own slice),
    with row_table (Q, H) and col_table (Q, W) the table row of each key row and column for each
    query. Keys where window (Q, H, W) is False get weight zero. Costs O(Q·H·W) per head."""
    b, n, nq, d = q.shape
    h, w = k.shape[3:]
    content = torch.einsum("bnqc,bnchw->bnqhw", q, k) * d ** -0.5
    row_term = torch.einsum("bnqc,qanc->bnqa", q[..., : d // 2], rel_row[row_table])
    col_term = torch.einsum("bnqc,qonc->bnqo", q[..., d // 2:], rel_col[col_table])
    logits = content + row_term[..., :, None] + col_term[..., None, :]
    logits = logits.masked_fill(~window, -math.inf)
    return logits.flatten(3).softmax(-1).view(b, n, nq, h, w)


class SelfAttention2d(nn.Module):
    """SASA layer. (B, in_channels, H, W) → (B, out_channels, H', W'), where H', W' = H, W for
    stride 1 and ⌈H/2⌉, ⌈W/2⌉ for stride 2.

    ``block_size`` is the query-block side of the halo path (8 as in HaloNet). It trades memory
    for speed and does not change the result.
    """

    placement = "conv"
    paper = "Ramachandran, Parmar, Vaswani et al., NeurIPS 2019"
    kind = "self-attention"

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 7,
                 heads: int = 8, stride: int = 1, block_size: int = 8) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive (a centred window), got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (stride 2 = 2x2 average pooling after attention), got {stride}")
        if heads < 1 or out_channels % heads or (out_channels // heads) % 2:
            raise ValueError(
                f"out_channels ({out_channels}) must split into {heads} heads of an even size "
                f"(row and column embedding halves); choose heads dividing out_channels/2"
            )
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.heads = heads
        self.head_dim = out_channels // heads
        self.stride = stride
        self.block_size = block_size
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1, bias=False)
        self.rel_row = nn.Parameter(torch.randn(kernel_size, out_channels // 2) * self.head_dim ** -0.5)
        self.rel_col = nn.Parameter(torch.randn(kernel_size, out_channels // 2) * self.head_dim ** -0.5)

    def blocking(self, height: int, width: int) -> tuple[int, int, int]:
        """(block height, block width, halo) used for an H×W map: one halo-free block when the map
        fits in a single halo, else near-equal blocks of at most ``block_size`` with halo r."""
        r = self.kernel_size // 2
        if height * width <= (self.block_size + 2 * r) ** 2:
            return height, width, 0
        bh = math.ceil(height / math.ceil(height / self.block_size))
        bw = math.ceil(width / math.ceil(width / self.block_size))
        return bh, bw, r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_channels(self, x)
        y = self._attend(x, *self.blocking(x.shape[2], x.shape[3]))
        if self.stride == 2:
            y = F.avg_pool2d(y, 2, ceil_mode=True)
        return y

    def attention_weights(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The softmax weights of query pixels (rows[q], cols[q]) over the map, computed with an
        explicit softmax (the forward pass uses the fused kernel and never forms them):
        (B, N, Q, H, W), zero outside each query's k×k window and the image. Σ_ab w·v_ab is the
        stride-1 output at the query (tested against the fused path). Costs O(Q·H·W) per head."""
        b, _, h, w = x.shape
        n, d, r = self.heads, self.head_dim, self.kernel_size // 2
        q, k, _ = self.qkv(x).view(b, 3, n, d, h, w).unbind(1)
        q = q[:, :, :, rows, cols].transpose(2, 3)  # (B, N, Q, d)
        row_off = torch.arange(h, device=x.device) - rows[:, None]  # (Q, H): a − i
        col_off = torch.arange(w, device=x.device) - cols[:, None]  # (Q, W): b − j
        window = (row_off.abs() <= r)[:, :, None] & (col_off.abs() <= r)[:, None, :]  # (Q, H, W)
        return relative_attention_weights(
            q, k, self.rel_row.view(self.kernel_size, n, d // 2), self.rel_col.view(self.kernel_size, n, d // 2),
            row_off.clamp(-r, r) + r, col_off.clamp(-r, r) + r, window)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": (B, N, Q, H, W)}: ``attention_weights`` at the query points, fractions
        (Q, 2) of the input map (``attention.common.query_pixels``)."""
        return {"attention": self.attention_weights(x, *query_pixels(queries, *x.shape[2:]))}

    def _attend(self, x: torch.Tensor, bh: int, bw: int, halo: int) -> torch.Tensor:
        """Stride-1 attention with bh×bw query blocks and a ``halo``-pixel key border.
        (B, in_channels, H, W) → (B, out_channels, H, W). Any blocking gives the same output
        as long as halo ≥ r or the block covers the map."""
        b, _, h, w = x.shape
        n, d, k, r = self.heads, self.head_dim, self.kernel_size, self.kernel_size // 2
        dev = x.device
        q, key, val = halo_blocks(self.qkv(x).view(b, 3, n, d, h, w), (bh, bw), halo)

        # relative logits q·R[offset] per query and offset, (B, N, I, J, bh, bw, k). SDPA
        # scales all of q'·k' by 1/√d; the factor √d here leaves q·r unscaled (eq. 3).
        rel_row = self.rel_row.view(k, n, d // 2) * d ** 0.5
        rel_col = self.rel_col.view(k, n, d // 2) * d ** 0.5
        row_logits = torch.einsum("bnIJijc,onc->bnIJijo", q[..., : d // 2], rel_row)
        col_logits = torch.einsum("bnIJijc,onc->bnIJijo", q[..., d // 2:], rel_col)
        # Positions enter as codes of width k: window row aa gets one-hot(aa mod k). The k rows of
        # a query's window are consecutive, so their residues mod k are distinct. Query row ii
        # finds, at residue c, the window row with that residue: table index
        # (c − ii − halo + r) mod k. Rows outside the window share residues but are masked.
        row_index = (torch.arange(k, device=dev) - torch.arange(bh, device=dev)[:, None] - halo + r) % k  # (bh, k)
        col_index = (torch.arange(k, device=dev) - torch.arange(bw, device=dev)[:, None] - halo + r) % k  # (bw, k)
        mask = block_mask((h, w), (bh, bw), halo, radius=r, device=dev)
        y = blocked_attention(q, key, val, row_logits, col_logits, row_index, col_index, mask)
        return y[:, :, :h, :w]
