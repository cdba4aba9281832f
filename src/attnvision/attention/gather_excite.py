"""Gather-Excite (Hu, Shen, Albanie, Sun & Vedaldi, "Gather-Excite: Exploiting Feature Context in
Convolutional Neural Networks", NeurIPS 2018).

A gather operator ξ_G aggregates each channel over a spatial extent; an excite operator ξ_E
redistributes it to every position as a gate (x ∈ R^{B×C×H×W}, e the extent ratio, σ = sigmoid):
    z   = ξ_G(x) ∈ R^{B×C×H'×W'},  H' = ⌈H/e⌉, W' = ⌈W/e⌉  (H' = W' = 1 for the global extent)
    out = x ⊙ σ(NN-upsample_{H×W}(ξ_E(z)))                 (nearest neighbour back to H×W)
The paper's three variants (``variant=``):
- "theta-" (GE-θ⁻, parameter-free): ξ_G = average pooling, window 2e−1, stride e, padding e−1,
  padded positions not counted (global extent: the mean over H×W); ξ_E = identity. Globally
  this is SE without its MLP.
- "theta" (GE-θ): ξ_G = log2(e) depth-wise 3×3 convolutions of stride 2 (no bias), each followed
  by a BN, with a ReLU between them; for the global extent one depth-wise convolution as large
  as the map (H×W kernel, no bias) + BN. ξ_E = identity.
- "theta+" (GE-θ⁺): GE-θ's gather, a ReLU, then SE's excitation ξ_E(z) = W2 · ReLU(W1 · z + b1)
  + b2 (1×1 convolutions C → C·r → C, r = 1/16), applied at every gathered position.

Default: GE-θ⁻ with the global extent: the paper's headline (the abstract's ResNet-50 that beats
ResNet-101 with no added parameter) and its best parameter-free extent in the ImageNet ablation
(top-1: 2 < 4 < 8 < global).

The upsampled gate is never built for the global extent: it is (B, C, 1, 1) and broadcasts, so
GE-θ⁻ reads the map once for the mean and once for the product. For a finite extent the sigmoid
runs on the small H'×W' map before the upsampling (the same result for nearest neighbours).

Placement: ``"block"``, in every residual block after its last BN, before the addition (the
official prototxts put the gate on ``1x1_increase/bn``).

Parameters of the global GE-θ/θ⁺ depend on the map size: pass ``feat_size`` (ResNet-50 at 224 px:
56, 28, 14, 7 per stage, e.g. ``attn_stage_kw=[{"feat_size": 56}, ...]``); the module then only
accepts maps of that size. Its BN sees one value per channel and sample, so a batch of 1 cannot
train (PyTorch's BatchNorm refuses it); evaluation works.

Deviations and choices:
- the pooling window of the extent-e gather (2e−1, stride e, padding e−1, padded positions not
  counted) follows timm's implementation: the official release (hujie-frank/GENet) has only
  global-extent prototxts, so its code does not settle it.
- GE-θ⁺ puts a ReLU between the gather's BN and the excitation MLP, as the official
  RN50-GEPP prototxt (``gather/relu``); timm omits it. The MLP's biases are the prototxt's too.
- init: PyTorch's defaults (the prototxts use MSRA for the depth-wise convs and N(0, 0.01) for
  the excite convs); the paper starts nothing at identity.
- ``extent`` must be a power of two (the paper's 2, 4, 8) or "global", for every variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv1x1, reduced_channels

VARIANTS = ("theta-", "theta", "theta+")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


class DepthwiseGather(nn.Sequential):
    """GE-θ's parametric gather: (B, C, H, W) → (B, C, ⌈H/e⌉, ⌈W/e⌉) by log2(e) stride-2
    depth-wise 3×3 convs (BN after each, ReLU between), or → (B, C, 1, 1) by one depth-wise conv
    of the map's size ``feat_size`` + BN when ``extent`` is None (global)."""

    def __init__(self, channels: int, extent: int | None, feat_size: tuple[int, int] | None = None) -> None:
        layers: list[nn.Module] = []
        if extent is None:
            layers += [nn.Conv2d(channels, channels, feat_size, groups=channels, bias=False), nn.BatchNorm2d(channels)]
        else:
            for i in range(int(math.log2(extent))):
                if i:
                    layers.append(nn.ReLU(inplace=True))
                layers += [nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False),
                           nn.BatchNorm2d(channels)]
        super().__init__(*layers)


class GatherExcite(nn.Module):
    """Gather-Excite gate. Input and output (B, C, H, W).

    ``variant`` "theta-" | "theta" | "theta+" (GE-θ⁻, GE-θ, GE-θ⁺); ``extent`` "global" or a power
    of two e; ``feat_size`` the (H, W) of the input, needed by the global parametric variants;
    ``rd_ratio`` / ``rd_channels`` the hidden width of GE-θ⁺'s MLP. ``logits(x)`` is the
    pre-sigmoid gate and ``gate(x)`` its sigmoid, broadcastable to x: (B, C, 1, 1) for the
    global extent, (B, C, H, W) otherwise.
    """

    placement = "block"
    paper = "Hu, Shen, Albanie, Sun & Vedaldi, NeurIPS 2018"
    kind = "channel+spatial"

    def __init__(self, channels: int, variant: str = "theta-", extent: int | str = "global",
                 feat_size: int | tuple[int, int] | None = None, rd_ratio: float = 1 / 16,
                 rd_channels: int | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown Gather-Excite variant '{variant}'; valid: theta- (GE-θ⁻, parameter-free), "
                             "theta (GE-θ, depth-wise conv gather), theta+ (GE-θ⁺, conv gather + excite MLP)")
        if extent != "global" and not (isinstance(extent, int) and extent >= 2 and extent & (extent - 1) == 0):
            raise ValueError(f"Gather-Excite extent must be 'global' or a power of two >= 2 (the paper uses "
                             f"2, 4, 8), got {extent!r}")
        self.variant = variant
        self.extent = None if extent == "global" else extent
        self.feat_size = None
        self.gather = None
        self.excite = None
        if feat_size is not None and (variant == "theta-" or self.extent is not None):
            raise ValueError("feat_size sizes the depth-wise conv of GE-θ / GE-θ⁺ with a global extent; "
                             f"GE-{variant} with extent={extent!r} does not use it: leave it out")
        if variant != "theta-":
            if self.extent is None:
                if feat_size is None:
                    raise ValueError(f"GE-{variant} with a global extent gathers with a depth-wise conv as large as "
                                     "the feature map: pass feat_size=(H, W) of the module's input (ResNet-50 at "
                                     "224 px: 56, 28, 14, 7 per stage) or use a finite extent")
                self.feat_size = _pair(feat_size)
            self.gather = DepthwiseGather(channels, self.extent, self.feat_size)
        if variant == "theta+":
            hidden = reduced_channels(channels, rd_ratio, rd_channels)
            self.excite = nn.Sequential(Conv1x1(channels, hidden), nn.ReLU(inplace=True), Conv1x1(hidden, channels))

    def gathered_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ξ_E(ξ_G(x)) before the upsampling: (B, C, ⌈H/e⌉, ⌈W/e⌉), or (B, C, 1, 1) globally."""
        if self.gather is None:
            if self.extent is None:
                return x.mean((2, 3), keepdim=True)
            e = self.extent
            return F.avg_pool2d(x, 2 * e - 1, e, e - 1, count_include_pad=False)
        if self.feat_size is not None and tuple(x.shape[2:]) != self.feat_size:
            raise ValueError(f"this global GE-{self.variant} was built for {self.feat_size[0]}×{self.feat_size[1]} "
                             f"maps (feat_size) and got {x.shape[2]}×{x.shape[3]}; build it with "
                             f"feat_size=({x.shape[2]}, {x.shape[3]})")
        z = self.gather(x)
        return z if self.excite is None else self.excite(F.relu(z))

    def _upsample(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z if self.extent is None else F.interpolate(z, size=x.shape[2:], mode="nearest")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._upsample(self.gathered_logits(x), x)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self._upsample(self.gathered_logits(x).sigmoid(), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global extent: {"channel": the gate (B, C)}. A finite extent gives a gate per channel
        and position, summarised by its means as BAM's: {"channel": (B, C), "spatial": (B, 1, H, W)}."""
        gate = self.gate(x)
        if self.extent is None:
            return {"channel": gate.flatten(1)}
        return {"channel": gate.mean((2, 3)), "spatial": gate.mean(1, keepdim=True)}

    def extra_repr(self) -> str:
        return f"variant={self.variant}, extent={self.extent or 'global'}"
