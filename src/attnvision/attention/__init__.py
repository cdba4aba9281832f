"""Attention modules and their registry.

Calling convention (as timm's ``create_attn``): ``create_attn(name, channels, **kw)`` builds a
module that maps (B, C, H, W) → (B, C, H, W) unless its docstring says otherwise. Each class has a
``placement`` attribute telling backbones where it goes:

- ``"block"``: inside every residual block, on the residual branch before the addition;
- ``"stage"``: once at the end of each stage except the last (BAM's bottleneck positions);
- ``"conv"``: a replacement for convolutions (SASA, AA-conv), used by models built around it
  (e.g. ``sanet20``); ResNets refuse it as ``attn``.

Explainability: a module whose attention can be shown implements ``attention_maps(x, queries)
-> dict[str, Tensor]`` for its own input x, computed with the same functions as its forward pass
(``attnvision.explain.capture`` lists the shapes per kind).

A new mechanism is one new file in this folder plus one ``ATTENTION.add`` line below.
"""

from __future__ import annotations

from torch import nn

from ..registry import Registry
from .aa_conv import AttentionAugmentedConv
from .adaptive_pool import AdaptivePoolingAttention
from .bam import BottleneckAttention
from .cbam import CBAM
from .eca import EfficientChannelAttention
from .hybrid import ECACBAMParallel, ECACBAMSequential
from .nonlocal_block import NonLocalBlock
from .residual_attention import ResidualAttentionModule
from .sasa import SelfAttention2d
from .se import SqueezeExcite

ATTENTION: Registry = Registry("attention module")
ATTENTION.add("se", SqueezeExcite)
ATTENTION.add("eca", EfficientChannelAttention)
ATTENTION.add("cbam", CBAM)
ATTENTION.add("bam", BottleneckAttention)
ATTENTION.add("eca_cbam", ECACBAMSequential)
ATTENTION.add("eca_cbam_parallel", ECACBAMParallel)
ATTENTION.add("aa", AttentionAugmentedConv)
ATTENTION.add("nonlocal", NonLocalBlock)
ATTENTION.add("ran", ResidualAttentionModule)
ATTENTION.add("adaptive_pool", AdaptivePoolingAttention)
ATTENTION.add("sasa", SelfAttention2d)


def create_attn(name: str | None, channels: int, **kw) -> nn.Module | None:
    """Build the attention module registered as ``name`` for ``channels`` channels.

    A falsy name ("" or None) gives None, so callers can write ``create_attn(cfg.attn, c)``.
    An unknown name raises ValueError listing the valid names.
    """
    if not name:
        return None
    return ATTENTION.build(name, channels, **kw)


def list_attn() -> list[str]:
    """Names of all registered attention modules, sorted."""
    return ATTENTION.names()
