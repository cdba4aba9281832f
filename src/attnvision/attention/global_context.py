"""Global Context block (Cao, Xu, Lin, Wei & Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019; extended as "Global Context Networks", TPAMI 2020).

Three steps (x ∈ R^{B×C×H×W}, N = H·W positions, h = C·r hidden channels, r = 1/16):
    context modelling (attention pooling):
        α = softmax_N(W_k x + b_k)            W_k ∈ R^{1×C}: a 1×1 conv to one map, (B, 1, H, W)
        c = Σ_j α_j x_j                        (B, C, 1, 1)
    transform (bottleneck):
        t = W_v2 · ReLU(LN(W_v1 · c + b_v1)) + b_v2     W_v1 ∈ R^{h×C}, W_v2 ∈ R^{C×h};
                                               LN over the h channels, with affine weights
    fusion:
        "gc"        out = x + t                (addition, broadcast over H×W: the paper's GC block)
        "gc_scale"  out = x ⊙ σ(t)             (scaling, the paper's ablated alternative, an SE-like gate)

Names. timm registers the same two blocks the other way round: its ``"gc"`` is
``GlobalContext()`` with the defaults ``fuse_scale=True, fuse_add=False`` (the scaling block, at
r = 1/8) and its ``"gca"`` is ``fuse_add=True`` (the paper's addition). Here ``"gc"`` is the paper's
block, and the scaling block is ``"gc_scale"``: a ``"gca"`` meaning scaling would invert timm's
name, and a ``"gca"`` meaning addition would duplicate ``"gc"``.

Init: the last 1×1 conv (weight and bias) starts at zero, as in the official ContextBlock
(``last_zero_init``). The addition block is then the identity at init; the scaling block starts
as the constant gate σ(0) = 1/2. The context conv W_k gets Kaiming-normal (fan-in) weights and a
zero bias, as there.

The attention pooling is ``AttentionPool``; it is also the ``pool="attn"`` descriptor of the gate
composer's channel gates (``pooling.PARAMETRIC_POOLS``, registered in ``attention/__init__.py``).

Placement: ``"block"``, in every residual block after the last 1×1 conv's BN, before the addition
(the paper's "after 1×1" position). The paper's experiments put it in every block of stages
c3–c5 (the official configs' ``stages=(False, True, True, True)``): ``attn_stages=[2, 3, 4]``.

Deviations: none from the paper's block. Differences from other code: timm zero-initialises only
the addition branch's last weight (not its bias, nor the scaling branch); its default r is 1/8.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Conv1x1, reduced_channels

class AttentionPool(nn.Module):
    """GCNet's context modelling: c = Σ_j softmax_j(W_k x + b_k) x_j, (B, C, H, W) → (B, C, 1, 1).
    ``weights(x)`` gives α, (B, 1, H, W), summing to 1 over H×W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).softmax(-1).view(x.shape[0], 1, *x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        alpha = self.conv(x).view(b, -1, 1).softmax(1)  # (B, N, 1)
        return torch.bmm(x.view(b, c, -1), alpha).view(b, c, 1, 1)


class ContextTransform(nn.Sequential):
    """GCNet's bottleneck transform: 1×1 conv C → h, LayerNorm over [h, 1, 1], ReLU, 1×1 conv h → C
    (last conv zero-initialised). (B, C, 1, 1) → (B, C, 1, 1)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__(Conv1x1(channels, hidden), nn.LayerNorm([hidden, 1, 1]), nn.ReLU(inplace=True),
                         Conv1x1(hidden, channels))
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


class GlobalContext(nn.Module):
    """GC block with additive fusion (the paper's). Input and output (B, C, H, W).

    ``rd_ratio`` / ``rd_channels`` set the hidden width h (r = 1/16). ``transform_term(x)`` is t,
    (B, C, 1, 1), added to x. The scaling subclass's gate σ(t) is ``gate(x)``, its ``logits(x)`` t.
    """

    placement = "block"
    paper = "Cao, Xu, Lin, Wei & Hu, ICCV-W 2019"
    kind = "channel+spatial"  # a spatial attention pooling feeding a per-channel term

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None) -> None:
        super().__init__()
        self.pool = AttentionPool(channels)
        self.transform = ContextTransform(channels, reduced_channels(channels, rd_ratio, rd_channels))

    def transform_term(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.transform_term(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"spatial": the pooling weights α (B, 1, H, W), a softmax over positions that sums to 1
        (GCNet's query-independent attention map)}. The additive block has no multiplicative gate."""
        return {"spatial": self.pool.weights(x)}


class GlobalContextScale(GlobalContext):
    """GC block with scaling fusion: out = x ⊙ σ(t). ``gate(x)`` = σ(t), (B, C, 1, 1); ``logits(x)`` = t."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform_term(x)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform_term(x).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": σ(t) (B, C), "spatial": the pooling weights α (B, 1, H, W), summing to 1}."""
        return {"channel": self.gate(x).flatten(1), "spatial": self.pool.weights(x)}

