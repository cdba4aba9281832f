"""Channel descriptors: the "squeeze" that channel gates start from, one per pooling rule.

Each rule maps x (B, C, H, W) to a list of descriptors, each (B, C, 1, 1); a gate transforms every
descriptor with the same (shared) weights and sums the logits, as CBAM does for [avg, max]:
    "avg"     GAP(x)                                  SE (Hu et al. 2018), ECA (Wang et al. 2020)
    "max"     GMP(x)                                  CBAM's second descriptor
    "avgmax"  [GAP(x), GMP(x)], logits summed         CBAM (Woo et al. 2018)
    "std"     √(Var_hw(x) + ε), ε = 1e-5              SRM's style statistic (Lee et al. 2019)
Parametric rules (FcaNet's DCT pooling, GCNet's attention pooling) live in their modules' files and
plug in through ``ChannelPool`` (``POOLS``).

Max pooling uses ``adaptive_max_pool2d``, whose gradient goes to one maximal element per channel (as
the CBAM code's ``max_pool2d``); ``amax`` would split it between ties.

``z_pool(x, dim)`` is the other pooling the gates share: [max ; mean] over one axis, stacked as two
maps (triplet attention's Z-pool; over the channel axis, CBAM's spatial descriptor). Without
autograd (evaluation, serving) its max is ``amax``, values only: over the channel axis of
channels-last (B, 16|32|64, 28|14|7, ·) maps, one CPU thread, it ran 1.4-7.4× faster than
``max(dim)`` at batch 32 and 128 and 1.0-1.6× at batch 1 (an ad-hoc loop, not kept; at batch 128
``benchmarks/cbam_parts.py`` repeats the comparison; ``max`` also computes indices,
and PyTorch's reduction with indices is slow on the innermost axis). Training keeps ``max(dim)``:
its indices make the cheapest backward (a scatter to one maximal element, as the CBAM and triplet
code), where ``amax``'s backward finds the maxima again and splits the gradient between ties; a
custom backward doing that in one pass (``x == max``, then ``where``; ad-hoc timing, not kept) took 1.2-1.5× as long per
forward + backward at 16×28², its broadcasts along the innermost axis running unvectorised.
Traced (exported) and compiled graphs take ``max(dim)`` as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STD_EPS = 1e-5


def z_pool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[max ; mean] of x over ``dim``, stacked as 2 channels: (B, 2, ...) with ``dim`` removed."""
    plain = (torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing() or torch.compiler.is_compiling()
    return torch.stack([x.max(dim).values if plain else x.amax(dim), x.mean(dim)], 1)


def pool_std(x: torch.Tensor) -> torch.Tensor:
    """√(population variance over H×W + ε): (B, C, H, W) → (B, C, 1, 1); finite for a 1×1 map."""
    return (x.var((2, 3), correction=0, keepdim=True) + STD_EPS).sqrt()


SIMPLE_POOLS = {
    "avg": lambda x: [x.mean((2, 3), keepdim=True)],
    "max": lambda x: [F.adaptive_max_pool2d(x, 1)],
    "avgmax": lambda x: [x.mean((2, 3), keepdim=True), F.adaptive_max_pool2d(x, 1)],
    "std": lambda x: [pool_std(x)],
}


class ChannelPool(nn.Module):
    """A pooling rule by name: (B, C, H, W) → list of (B, C, 1, 1) descriptors. ``"dct"`` (FcaNet)
    and ``"attn"`` (GCNet) carry a buffer or weights and need ``channels``."""

    def __init__(self, pool: str = "avg", channels: int | None = None) -> None:
        super().__init__()
        self.pool = pool
        if pool in PARAMETRIC_POOLS:
            self.parametric = PARAMETRIC_POOLS[pool](channels)
        elif pool not in SIMPLE_POOLS:
            raise ValueError(f"unknown pooling '{pool}'; valid: {', '.join(pool_names())}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pool in SIMPLE_POOLS:
            return SIMPLE_POOLS[self.pool](x)
        return [self.parametric(x)]


PARAMETRIC_POOLS: dict[str, type[nn.Module]] = {}


def pool_names() -> list[str]:
    return [*SIMPLE_POOLS, *PARAMETRIC_POOLS]
