"""Residual Attention Networks for CIFAR (Wang et al., "Residual Attention Network for Image
Classification", CVPR 2017, §4.1): ``attention56`` and ``attention92``.

What the paper fixes for CIFAR (§4.1): three stages with the same number m of Attention Modules
each, two residual units per stage besides them, and 36m + 20 weighted layers in the trunk, so
Attention-56 has m = 1 and Attention-92 m = 2; modules use p = 1, t = 2, r = 1 and pre-activation
bottleneck units. Counting: each module's trunk is p + t + p = 4 units (12 layers), plus
6 units (18 layers), the stem conv and the classifier.

What it leaves open, and our choices:
- widths: pre-activation ResNet-164's (He et al. 2016b), a 3×3 stem of 16 channels and stages of
  64, 128, 256 channels (bottleneck width /4) at 32, 16, 8 px, strides 1, 2, 2;
- mask depth: 3, 2, 1 max-pools in stages 1, 2, 3, as the ImageNet network's Table 1 (32×32
  inputs bottom out at 4×4 in every stage);
- order: each stage is one residual unit (changing width and stride), the m modules, one more
  unit. A final BN-ReLU (pre-activation networks end with one) precedes the head.
With these, 10-class models have 1,030,810 (56) and 1,842,138 (92) parameters, close to the
1.9M the paper lists for its CIFAR Attention-92 (mask depths 2, 1, 1 would give 1.71M).

The attention is built in, so ``attn`` must be None. Features: (B, 256, ⌈H/4⌉, ⌈W/4⌉).
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention.residual_attention import PreActBottleneck, ResidualAttentionModule
from ..heads import create_head
from .base import TrunkAndHead
from .common import check_input

STEM_WIDTH = 16
WIDTHS = (64, 128, 256)
MASK_DEPTHS = (3, 2, 1)


class AttentionNet(TrunkAndHead):
    """CIFAR Residual Attention Network with m modules per stage. ``forward_features``:
    (B, in_chans, H, W) → (B, 256, ⌈H/4⌉, ⌈W/4⌉); ``head``: (B, 256, h, w) → (B, num_classes)."""

    def __init__(self, modules_per_stage: int, num_classes: int, in_chans: int = 3, head: str = "gap",
                 head_kw: dict | None = None) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.stem = nn.Conv2d(in_chans, STEM_WIDTH, 3, 1, 1, bias=False)
        stages = []
        in_planes = STEM_WIDTH
        for i, (planes, depth) in enumerate(zip(WIDTHS, MASK_DEPTHS)):
            stages.append(nn.Sequential(
                PreActBottleneck(in_planes, planes, 1 if i == 0 else 2),
                *(ResidualAttentionModule(planes, depth=depth) for _ in range(modules_per_stage)),
                PreActBottleneck(planes, planes),
            ))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.final_act = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True))
        self.num_features = in_planes
        self.head = create_head(head, self.num_features, num_classes, **(head_kw or {}))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 init, as the paper (§4.1)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_chans)
        return self.final_act(self.stages(self.stem(x)))



def cifar_attention_net(depth: int, num_classes: int, attn: str | None = None, **kw) -> AttentionNet:
    """Attention-``depth`` for CIFAR, depth = 36m + 20 (56 → m = 1, 92 → m = 2); ``kw`` goes to
    :class:`AttentionNet` (``in_chans``, ``head``, ``head_kw``)."""
    if attn:
        raise ValueError(f"attention{depth} has its attention built in; got attn='{attn}': leave attn unset "
                         f"or use a ResNet with attn='ran'")
    if depth < 56 or (depth - 20) % 36:
        raise ValueError(f"Residual Attention Network depth must be 36m + 20 with m >= 1 (56, 92, 128, …), got {depth}")
    return AttentionNet((depth - 20) // 36, num_classes, **kw)
