"""Selective Kernel convolution, SK (Li, Wang, Hu & Yang, "Selective Kernel Networks", CVPR 2019).

Equations (x ∈ R^{B×C_in×H×W}, C = out_channels, M branches, s = stride, σ_M = softmax over the
M branches, separately for every channel):
    Split:   U_m = ReLU(BN_m(F_m(x)))   F_m: 3×3 conv, dilation d_m, padding d_m, stride s, G_m groups
             U_m ∈ R^{B×C×H'×W'}
    Fuse:    U = Σ_m U_m,   s_c = GAP(U)_c ∈ R^{B×C},   z = ReLU(BN(W s)) ∈ R^{B×d}
             W ∈ R^{d×C},   d = max(⌊C/r⌋, L)
    Select:  a_m = σ_M(A_1 z, …, A_M z)_m ∈ R^{B×C}     A_m ∈ R^{C×d}     (Σ_m a_m = 1 per channel)
             V = Σ_m a_m ⊙ U_m      (a_m broadcast over H'×W')
The defaults are the paper's: M = 2 branches, the 3×3 and the 5×5 kernel, the 5×5 one realised, for
efficiency, as a 3×3 conv with dilation 2 (§3.1): ``dilations=(1, 2)``; r = 16, L = 32; W and A_m
without biases (the paper's equations have none).

Placement ``"conv"``: SK replaces the 3×3 convolutions of residual blocks (SKNet-50 replaces the
grouped 3×3 conv of every ResNeXt-50 32×4d bottleneck with an SK unit of G = 32 groups).

ResNet-50 configurations and counts (ImageNet, 1000 classes):
- ``create_model("resnet50", 1000, attn="sk")``: the plain (torchvision) ResNet-50, every middle
  3×3 conv replaced by the paper's SK unit with dense branches: 37,252,904 parameters. The paper
  publishes no plain-ResNet count; its SKNet-50, 27.5M, is built on ResNeXt-50 32×4d, whose 3×3
  convs are grouped and twice as wide (128…1024 channels), a trunk attnvision does not build.
- The first author's PyTorch port (implus/PytorchInsight, ``resnet_sk.py``) reports SK-ResNet50
  with 26.15M parameters. Its SK unit differs from the paper's: two 3×3 branches, both with
  dilation 1, the first dense and the second with 32 groups, and d = ⌊C/16⌋ without the floor L.
  ``PYTORCHINSIGHT_SK_RESNET`` holds these settings (``attn_kw=PYTORCHINSIGHT_SK_RESNET``):
  26,162,048 parameters, +0.05% (the block's extra BN, below).

Deviations:
- ``groups`` defaults to 1 (dense branches), not the paper's G = 32: the conv SK replaces in a plain
  ResNet is dense, and 32 groups do not divide the 16 channels of a CIFAR ResNet's first stage.
  ``groups`` may also be one value per branch (PytorchInsight's layout, above).
- Inside attnvision's ResNets the block keeps the BN (and ReLU) that followed the replaced conv:
  V ≥ 0 is normalised and rectified once more before the next conv, where SKNet feeds V straight
  into the 1×1 conv. 2·C extra parameters per SK unit, 7,552 in ResNet-50. Accepted so that every
  conv module sits in the block the same way (the trunk is unchanged around it).
- The branch convs and the two FC layers start from Kaiming-normal (fan-out) weights, the init of
  the trunk's convs and of PytorchInsight's port; the paper states none.

BatchNorm on the pooled (B, d) vector needs more than one sample per batch in training mode; a
batch of 1 in training raises a ValueError naming the fix. Eval mode works at batch 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import reduced_channels

# The first author's SK-ResNet (implus/PytorchInsight): dense + 32-group 3×3 branches, no dilation,
# d = ⌊C/16⌋. With attnvision's ResNet-50: 26,162,048 parameters (published: 26.15M).
PYTORCHINSIGHT_SK_RESNET = {"dilations": (1, 1), "groups": (1, 32), "min_rd_channels": 1}


def init_convs(module: nn.Module) -> None:
    """Kaiming-normal fan-out init (He et al. 2015; torchvision's ResNet) for every conv of ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class BranchSelect(nn.Module):
    """Weights of M branches per channel from the pooled sum of the branches, s (B, C, 1, 1):
    z = ReLU(BN(W s)), logits_m = A_m z, weights = softmax over the M branches; with M = 1 the
    weight is the sigmoid gate σ(A_1 z) (ResNeSt's radix 1).

    SK's fuse-and-select (``bias=False``, ``groups=1``) and ResNeSt's split attention (``bias=True``,
    ``groups`` = cardinality K: W and A are block-diagonal, one block per cardinal group of C/K
    channels) are both this map. ``logits(s)``: (B, M, C, 1, 1) before the softmax;
    ``forward(s)``: the weights, (B, M, C, 1, 1).
    """

    def __init__(self, channels: int, branches: int, hidden: int, groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        if channels % groups or hidden % groups:
            raise ValueError(f"channels ({channels}) and hidden width ({hidden}) must be multiples of "
                             f"the {groups} groups")
        self.branches = branches
        self.groups = groups
        self.reduce = nn.Conv2d(channels, hidden, 1, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.select = nn.Conv2d(hidden, branches * channels, 1, groups=groups, bias=bias)

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        b, c = s.shape[:2]
        if self.training and b == 1:
            raise ValueError("the branch selection applies BatchNorm to pooled (B, d) vectors, which needs more "
                             "than one sample per batch in training mode; use a batch size >= 2 or call .eval()")
        logits = self.select(self.act(self.bn(self.reduce(s))))
        # each group's outputs are branch-major, (M, C/K); reorder to (M, K·C/K) = (M, C)
        return logits.view(b, self.groups, self.branches, c // self.groups).transpose(1, 2).reshape(
            b, self.branches, c, 1, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        logits = self.logits(s)
        return logits.softmax(1) if self.branches > 1 else logits.sigmoid()


class SelectiveKernelConv(nn.Module):
    """SK unit, replacing a 3×3 conv: (B, in_channels, H, W) → (B, out_channels, H', W') with
    H' = ⌈H/s⌉, W' = ⌈W/s⌉ as the conv it replaces.

    ``dilations`` gives one 3×3 branch per entry (M = its length, at least 2); ``groups`` is one value
    for every branch or one per branch; ``rd_ratio`` = 1/r and ``min_rd_channels`` = L set d, or
    ``rd_channels`` sets it directly. ``branch_weights(x)``: a, (B, M, C, 1, 1), summing to 1 over M.
    """

    placement = "conv"
    paper = "Li, Wang, Hu & Yang, CVPR 2019"
    kind = "channel"

    def __init__(self, in_channels: int, out_channels: int | None = None, dilations: Sequence[int] = (1, 2),
                 groups: int | Sequence[int] = 1, rd_ratio: float = 1 / 16, min_rd_channels: int = 32,
                 rd_channels: int | None = None, stride: int = 1) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        dilations = tuple(dilations)
        if len(dilations) < 2 or min(dilations) < 1:
            raise ValueError(f"SK needs at least two branches with dilations >= 1 to select between, got "
                             f"dilations={dilations}; the paper uses (1, 2)")
        groups = (groups,) * len(dilations) if isinstance(groups, int) else tuple(groups)
        if len(groups) != len(dilations):
            raise ValueError(f"groups needs one value per branch ({len(dilations)}), got {groups}")
        for g in groups:
            if g < 1 or in_channels % g or out_channels % g:
                raise ValueError(f"groups={g} must divide in_channels ({in_channels}) and out_channels "
                                 f"({out_channels}); use groups=1 (dense) or a common divisor")
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride, padding=d, dilation=d, groups=g, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            for d, g in zip(dilations, groups)
        )
        if min_rd_channels < 1:
            raise ValueError(f"min_rd_channels (the paper's L) must be >= 1, got {min_rd_channels}")
        hidden = reduced_channels(out_channels, rd_ratio, rd_channels)
        if rd_channels is None:
            hidden = max(hidden, min_rd_channels)  # d = max(C/r, L)
        self.select = BranchSelect(out_channels, len(dilations), hidden)
        init_convs(self)

    def _branches_and_weights(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SelectiveKernelConv expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        u = [branch(x) for branch in self.branches]
        s = sum(u_m.mean((2, 3), keepdim=True) for u_m in u)  # GAP(Σ U_m) without building Σ U_m
        return u, self.select(s)

    def branch_weights(self, x: torch.Tensor) -> torch.Tensor:
        return self._branches_and_weights(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, a = self._branches_and_weights(x)
        return sum(a[:, m] * u_m for m, u_m in enumerate(u))

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": a_1 (B, C)}: the weight of the first branch (3×3, dilation 1) per channel.
        With two branches the second gets 1 − a_1; ``branch_weights`` gives all M."""
        return {"channel": self.branch_weights(x)[:, 0].flatten(1)}
