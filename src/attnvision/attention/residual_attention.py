"""Attention Module of the Residual Attention Network (Wang, Jiang, Qian, Yang, Li, Zhang, Wang &
Tang, "Residual Attention Network for Image Classification", CVPR 2017). Not CSRA
(``heads/csra.py``), whose paper is also titled "Residual Attention".

Equations (x ∈ R^{B×C×H×W}; every "unit" is a pre-activation bottleneck residual unit, He et al.
2016b, C → C/4 → C/4 → C, the paper's basic unit):
    x' = p units (x)
    T(x') = t units (x')                                                         trunk branch
    M(x') = σ(conv1×1(BN-ReLU(conv1×1(BN-ReLU(S(x'))))))  ∈ (0, 1)^{C×H×W}        soft mask branch
    H(x) = p units ((1 + M(x')) ⊙ T(x'))                            attention residual learning (Eq. 3)
S is the bottom-up top-down part (§3.2, Fig. 2). With ``depth`` = d max-pools:
    bottom-up:  u_0 = x',  u_l = r units (maxpool(u_{l−1}))            l = 1 … d
    top-down:   v_d = r units (u_d)  (so the lowest level has 2r units in all)
                v_l = r units (up(v_{l+1}, size of u_l) + skip_l(u_l))      l = d−1 … 1, skip_l one unit
                S  = up(v_1, size of x')
``up`` is bilinear interpolation to the size of the tensor it is added to, read at forward time,
so any H×W works (odd sizes pool to ⌈H/2⌉ and come back exactly).

Hyper-parameters: p = 1, t = 2, r = 1 (paper Fig. 2). The paper's ImageNet modules pool
until the map is 7×7 (depth 3, 2, 1 at 56, 28, 14 px; Table 1); ``depth`` sets it here, default 1.

Placement: ``"stage"``, at the end of each stage but the last. The paper stacks m modules after
the first residual unit of each stage; ``attnvision.backbones.attention_net`` builds those models.

Check: built into Table 1's ImageNet layout, these modules give 31.8M parameters for
Attention-56 (paper 31.9M; 31.4M without the skip units) and 52.5M for Attention-92 (paper 51.3M).

Deviations: the mask's max-pools are 3×3, stride 2, padding 1 (so every size ≥ 1 pools); the
paper only says "max pooling". The last 1×1 conv has a bias (nothing normalises after it); the
other convs have none (BN follows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import reduced_channels


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit (He et al., "Identity Mappings in Deep Residual Networks",
    ECCV 2016): x + conv1×1(BR(conv3×3(BR(conv1×1(BR(x)))))), BR = BN-ReLU, width out/4.
    (B, in_planes, H, W) → (B, out_planes, H/stride, W/stride). Where the shape changes, the
    shortcut is a 1×1 conv applied to the pre-activated input, as in that paper."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        mid = reduced_channels(out_planes, 1 / 4)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        needs_projection = stride != 1 or in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, bias=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


def _units(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(channels, channels) for _ in range(n)))


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SoftMaskBranch(nn.Module):
    """Bottom-up top-down mask M(x) ∈ (0, 1). (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int, depth: int = 1, r: int = 1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"the soft mask branch needs depth >= 1 max-pools, got {depth}")
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.ModuleList(_units(channels, r) for _ in range(depth))
        self.skips = nn.ModuleList(PreActBottleneck(channels, channels) for _ in range(depth - 1))
        self.up = nn.ModuleList(_units(channels, r) for _ in range(depth))
        self.out = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = []
        out = x
        for down in self.down:
            out = down(self.pool(out))
            levels.append(out)
        out = self.up[-1](out)
        for level in reversed(range(len(self.skips))):
            skip = self.skips[level](levels[level])
            out = self.up[level](_upsample(out, skip) + skip)
        return self.out(_upsample(out, x)).sigmoid()


class ResidualAttentionModule(nn.Module):
    """Attention Module H = p units((1 + M) ⊙ T). Input and output (B, C, H, W)."""

    placement = "stage"
    paper = "Wang, Jiang, Qian et al., CVPR 2017"
    kind = "channel+spatial"

    def __init__(self, channels: int, p: int = 1, t: int = 2, r: int = 1, depth: int = 1) -> None:
        super().__init__()
        if min(p, t, r) < 0:
            raise ValueError(f"p, t, r count residual units and must be >= 0, got {p}, {t}, {r}")
        self.pre = _units(channels, p)
        self.trunk = _units(channels, t)
        self.mask = SoftMaskBranch(channels, depth, r)
        self.post = _units(channels, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return self.post((1 + self.mask(x)) * self.trunk(x))

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """The soft mask M (B, C, H, W) averaged over channels: {"spatial": (B, 1, H, W)}."""
        return {"spatial": self.mask(self.pre(x)).mean(1, keepdim=True)}
