"""The gate composer: a channel gate and a spatial gate, from parts, in one block.

    create_attn("gate", C, channel="eca", spatial="coord", order="parallel")

Parts (registered in ``attention/__init__.py``; each maps x (B, C, H, W) to a multiplicative
``gate(x)``, broadcastable to x, and, when the gate is σ(logits), to ``logits(x)``):
- channel (``CHANNEL_GATES``): "se" (SE's two-layer MLP), "eca" (ECA's k-tap 1-D conv), "bam"
  (BAM's MLP with BN1d), and the channel modules that register themselves as parts (GCT, SRM,
  FcaNet, Gather-Excite, Global Context, ...; ``attnvision list`` names every part);
- spatial (``SPATIAL_GATES``): "cbam" (7×7 conv over [max, mean]), "bam" (dilated bottleneck),
  "sasa" (local self-attention, below), and the registered spatial modules (coordinate attention,
  SimAM, ...);
- ``pool``: the channel descriptor of the MLP and 1-D-conv gates (``pooling.py``: avg, max,
  avgmax as CBAM, std, and the parametric ones: dct as FcaNet, attn as GCNet).

Equations (g_c, g_s the parts' gates, a_c, a_s their logits, σ = sigmoid):
    order="sequential" (CBAM):     x' = g_c(x) ⊙ x,   y = g_s(x') ⊙ x'
    order="parallel", combine="product" (ECA+CBAM parallel):   y = g_c(x) ⊙ g_s(x) ⊙ x
    order="parallel", combine="sum" (BAM's paper):             y = σ(a_c(x) + a_s(x)) ⊙ x
    order="parallel", combine="logit_product" (BAM's code):    y = σ(a_c(x) ⊙ a_s(x)) ⊙ x
    residual=True (BAM):           out = x + y;  else out = y
Either part may be None (a channel-only or spatial-only gate). The sequential order only
multiplies gates: adding logits needs both parts to read the same input.

Exact instances (same weights → same outputs, same parameter count; tests in float64):
    SE      = gate(channel="se")                          (keys fc1/fc2 → channel.mlp.0/2)
    ECA     = gate(channel="eca")                         (conv → channel.conv)
    CBAM    = gate(channel="se", pool="avgmax", spatial="cbam")
    BAM     = gate(channel="bam", spatial="bam", order="parallel", combine="sum", residual=True)
    ECA+CBAM = gate(channel="eca", spatial="cbam"), parallel: order="parallel"
CBAM, BAM and both ECA+CBAM hybrids are defined as these instances (their state-dict keys are
unchanged); SE and ECA keep their own files and key names.

The "sasa" spatial part is our design (no paper uses SASA as a gate): a_s = W · SASA(x) + b, a SASA
layer (``sasa.py``, window 7, 2 heads, ``rd_channels`` = 8 output channels) followed by a 1×1 conv to
one channel; its gate σ(a_s) is (B, 1, H, W).

A part whose own forward applies its gate in a fused, cheaper way (``applies_gate = True``: SimAM)
is called as ``part(x)`` wherever the composer multiplies x by that part's gate alone (the
sequential order, a single part): same function, less memory traffic.

Placement: ``"block"`` (CBAM's); BAM, defined through it, overrides it with ``"stage"``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry
from .sasa import SelfAttention2d

CHANNEL_GATES: Registry = Registry("channel gate")
SPATIAL_GATES: Registry = Registry("spatial gate")
ORDERS = ("sequential", "parallel")
COMBINES = ("product", "sum", "logit_product")


class SelfAttentionSpatialGate(nn.Module):
    """Local self-attention as a spatial gate: a_s = 1×1 conv(SASA(x)), (B, C, H, W) → (B, 1, H, W)."""

    def __init__(self, channels: int, rd_channels: int = 8, kernel_size: int = 7, heads: int = 2) -> None:
        super().__init__()
        self.attn = SelfAttention2d(channels, rd_channels, kernel_size, heads)
        self.proj = nn.Conv2d(rd_channels, 1, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attn(x))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).sigmoid()


def gated(part: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x ⊙ part.gate(x), by the part's own fused forward where it has one (``applies_gate``)."""
    return part(x) if getattr(part, "applies_gate", False) else x * part.gate(x)


class Gate(nn.Module):
    """A composed channel + spatial attention block. Input and output (B, C, H, W).

    ``channel`` / ``spatial``: part names (or None); ``channel_kw`` / ``spatial_kw``: their options;
    ``pool``: the channel part's descriptor, for parts that take one; ``order``, ``combine``,
    ``residual``: as in the equations of this file's docstring.
    """

    placement = "block"
    paper = "parts of CBAM (Woo et al. 2018), BAM (Park et al. 2018) and the registered modules"
    kind = "channel+spatial"

    def __init__(self, channels: int, channel: str | None = "se", spatial: str | None = "cbam",
                 order: str = "sequential", combine: str = "product", residual: bool = False,
                 pool: str | None = None, channel_kw: dict | None = None, spatial_kw: dict | None = None) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"unknown gate order '{order}'; valid: {', '.join(ORDERS)}")
        if combine not in COMBINES:
            raise ValueError(f"unknown gate combine '{combine}'; valid: {', '.join(COMBINES)}")
        if channel is None and spatial is None:
            raise ValueError("a gate needs a channel part, a spatial part or both; got neither")
        if combine != "product" and (order == "sequential" or channel is None or spatial is None):
            raise ValueError(f"combine='{combine}' mixes the logits of both parts read from the same input: "
                             "it needs order='parallel' and both a channel and a spatial part")
        channel_kw = dict(channel_kw or {})
        if pool is not None:
            if channel is None:
                raise ValueError("pool= sets the channel part's descriptor; this gate has no channel part")
            channel_kw["pool"] = pool
        self.order, self.combine, self.residual = order, combine, residual
        self.channel = CHANNEL_GATES.build(channel, channels, **channel_kw) if channel else None
        self.spatial = SPATIAL_GATES.build(spatial, channels, **(spatial_kw or {})) if spatial else None
        if combine != "product":
            for part, name in ((self.channel, channel), (self.spatial, spatial)):
                if not callable(getattr(part, "logits", None)):
                    raise ValueError(f"combine='{combine}' adds or multiplies logits, and the gate part '{name}' "
                                     "is not σ(logits); use combine='product'")

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The combined gate of a parallel block, broadcastable to x (``y = gate(x) ⊙ x``)."""
        if self.order == "sequential":
            raise ValueError("a sequential gate has no single gate map: its spatial part reads g_c(x) ⊙ x")
        if self.combine == "sum":
            return (self.channel.logits(x) + self.spatial.logits(x)).sigmoid()
        if self.combine == "logit_product":
            return (self.channel.logits(x) * self.spatial.logits(x)).sigmoid()
        gates = [part.gate(x) for part in (self.channel, self.spatial) if part is not None]
        return gates[0] if len(gates) == 1 else gates[0] * gates[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "sequential" or self.channel is None or self.spatial is None:
            y = x if self.channel is None else gated(self.channel, x)
            y = y if self.spatial is None else gated(self.spatial, y)
        elif self.combine == "product":
            y = x * self.channel.gate(x) * self.spatial.gate(x)  # the order of ECA+CBAM parallel's products
        else:
            y = x * self.gate(x)
        return x + y if self.residual else y

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": (B, C), "spatial": (B, 1, H, W)}: each part's gate on the input it reads
        (sequential: the spatial part reads g_c(x) ⊙ x). A gate that varies over both channels
        and positions is summarised by its means (over positions for "channel", over channels for
        "spatial"); so is the mixed gate of combine "sum" / "logit_product", as in BAM."""
        if self.combine != "product":
            mixed = self.gate(x)
            return {"channel": mixed.mean((2, 3)), "spatial": mixed.mean(1, keepdim=True)}
        maps = {}
        spatial_input = x
        if self.channel is not None:
            g_c = self.channel.gate(x)
            maps["channel"] = g_c.mean((2, 3))
            if self.order == "sequential":
                spatial_input = x * g_c
        if self.spatial is not None:
            maps["spatial"] = self.spatial.gate(spatial_input).mean(1, keepdim=True)
        return maps
