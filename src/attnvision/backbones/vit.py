"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR 2021, §3.1 Eq. 1–3), used as CSRA uses it: the patch tokens as a
feature map.

Equations (x ∈ R^{B×C×H×W}, patch P, grid h×w = H/P × W/P, N = h·w, width D, L blocks):
    z_0 = [x_class; x_p^1 E; …; x_p^N E] + E_pos        E ∈ R^{(P²·C)×D}, E_pos ∈ R^{(N+1)×D}
    z'_l = MSA(LN(z_{l−1})) + z_{l−1}                    l = 1 … L  (pre-norm)
    z_l = MLP(LN(z'_l)) + z'_l                           MLP: D → 4D → D with GELU
    features = LN(z_L)[1:] reshaped to (B, D, h, w)
MSA: heads of width D / heads, softmax(q kᵀ / √d_head) v through
``F.scaled_dot_product_attention``; one linear layer makes q, k, v (with bias), one projects back.

``vit_tiny`` is the DeiT-Tiny layout (Touvron et al. 2021): D = 192, L = 12, 3 heads, MLP ratio
4, default 224² inputs with 16² patches: 5,717,416 parameters with a 1000-class GAP head
(DeiT-Tiny's count), 5,524,416 in the trunk, 5,528,276 with a 20-class GAP head. For 28- or
32-px images use e.g. ``patch_size=4, img_size=32``.

Deviations, both as in the CSRA paper (§4, Tables 1, 4, 5):
- ``forward_features`` drops the class token and returns the final (layer-normed) patch tokens
  as a (B, D, h, w) map for the head (default GAP, the paper's baseline; CSRA or any
  registered head otherwise). The class token is still prepended and attended to, so that a
  ViT's pretrained weights keep their meaning; the paper's classifier on it is not used.
- Inputs of another size than ``img_size`` (a multiple of ``patch_size``) get the position
  embeddings of the patch grid resized by bicubic interpolation (paper §3.2 "Fine-tuning and
  higher resolution"); the class token's embedding is kept. At ``img_size`` they are used as is.

Initialisation follows the paper's released code (big_vision/vit_jax): linear layers Xavier-
uniform with zero bias, patch embedding LeCun-normal (truncated), position embeddings normal
(σ = 0.02), class token zero; LayerNorm ε = 1e-6 as there. Deviation: MLP biases start at 0
(the code: N(0, 10⁻⁶)). No dropout or stochastic depth (the paper trains from scratch with
dropout 0.1, DeiT with stochastic depth 0.1; CSRA fine-tunes without), so none is offered:
regularise in the training recipe. Parameter names follow timm's
``VisionTransformer`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.attn.qkv``,
…) so its checkpoints map onto this model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.common import query_pixels
from ..heads import create_head
from .base import TrunkAndHead
from .common import check_input


class Attention(nn.Module):
    """Multi-head self-attention. (B, T, D) → (B, T, D)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        return self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return self.proj(F.scaled_dot_product_attention(*self._qkv(x)).transpose(1, 2).reshape(b, t, d))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ / √d_head) with an explicit softmax, (B, heads, T, T): what the fused
        kernel of ``forward`` applies to v without forming it."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder block (Eq. 2–3). (B, T, D) → (B, T, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping P×P patches, linearly projected (a stride-P convolution).
    (B, C, H, W) → (B, D, H/P, W/P)."""

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTransformer(TrunkAndHead):
    """ViT trunk + head. ``forward_features``: (B, in_chans, H, W) → (B, D, H/P, W/P) patch
    tokens; ``head``: (B, D, h, w) → (B, num_classes)."""

    def __init__(
        self,
        num_classes: int,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        head: str = "gap",
        head_kw: dict | None = None,
    ) -> None:
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_features = embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()
        self.head = create_head(head, embed_dim, num_classes, **(head_kw or {}))

    def _init_weights(self) -> None:
        nn.init.normal_(self.pos_embed, std=0.02)
        w = self.patch_embed.proj.weight
        std = math.sqrt(1 / w[0].numel()) / 0.87962566103423978  # JAX lecun_normal: unit fan-in variance
        nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)  # after truncation at ±2σ
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            for part in block.attn.qkv.weight.chunk(3):  # q, k, v are three D×D maps in the reference
                nn.init.xavier_uniform_(part)  # code, so each gets its own Xavier bound

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, 1 + h·w, D) position embeddings for an h×w patch grid; bicubic resize of the
        patch part when the grid differs from the one built for."""
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], 1)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens z_0 (B, 1 + h·w, D) with position embeddings, and the patch grid (h, w)."""
        check_input(x, self.in_chans)
        h, w = x.shape[2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {self.patch_size}: "
                             "resize or crop the images")
        x = self.patch_embed(x)  # (B, D, h, w)
        grid = tuple(x.shape[2:])
        # x.shape[0], not len(x): a traced export (attnvision export --dynamic-batch) keeps it variable
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1)
        return tokens + self.position_embedding(grid), grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self._embed(x)
        tokens = self.norm(self.blocks(tokens))
        return tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, *grid)  # class token dropped


    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"blocks.i.attn.attention": (B, heads, Q, h, w)}: in every block, the weights of the
        patch tokens at the query points (fractions (Q, 2) of the patch grid) over the patch
        tokens; the class token's column is left out, so a row sums to 1 minus its weight."""
        tokens, grid = self._embed(x)
        rows, cols = query_pixels(queries, *grid)
        maps = {}
        for i, block in enumerate(self.blocks):
            weights = block.attn.weights(block.norm1(tokens))[:, :, 1 + rows * grid[1] + cols, 1:]
            maps[f"blocks.{i}.attn.attention"] = weights.unflatten(-1, grid)
            tokens = block(tokens)
        return maps


def vit_tiny(num_classes: int, attn: str | None = None, **kw) -> VisionTransformer:
    """ViT-Tiny / DeiT-Tiny: embed 192, depth 12, 3 heads; ``kw`` to ``VisionTransformer``
    (``img_size``, ``patch_size``, ``in_chans``, ``head``, ``head_kw``).

    ``attn`` exists because ``create_model`` always passes one: the attention modules of this
    package are convolutional-block modules, so any name raises ValueError."""
    if attn:
        raise ValueError(f"vit_tiny takes no attention module (got attn='{attn}'): they plug into ResNet "
                         "blocks; use a ResNet, or pick an attention head with head=...")
    return VisionTransformer(num_classes, embed_dim=192, depth=12, num_heads=3, **kw)
