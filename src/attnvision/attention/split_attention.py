"""Split attention, the 3×3 conv of ResNeSt (Zhang, Wu, Zhang, Zhu, Lin, Zhang, Sun, He, Mueller,
Manmatha, Li & Smola, "ResNeSt: Split-Attention Networks", CVPR Workshops 2022; arXiv 2004.08955).

Equations (x ∈ R^{B×C_in×H×W}, C = out_channels, radix R, cardinality K, s = stride):
    U = ReLU(BN(F(x))) ∈ R^{B×R·C×H'×W'}   F: 3×3 conv C_in → R·C, padding 1, stride s, K·R groups;
                                            U_r = channels r·C … (r+1)·C − 1 (radix-major layout):
                                            split r, cardinal group k sees input group r·K + k
    s = GAP(Σ_r U_r) ∈ R^{B×C}                                   (every cardinal group at once)
    z = ReLU(BN(W s + b)) ∈ R^{B×d}        W block-diagonal, K blocks;  d = max(⌊C·R/4⌋, 32)
    a_r = softmax_r(A_r z + c_r)           R > 1 ("r-Softmax", across the splits of each channel)
    a_1 = σ(A_1 z + c_1)                   R = 1 (an SE-style gate per cardinal group)
    V = Σ_r a_r ⊙ U_r ∈ R^{B×C×H'×W'}
Defaults: R = 2, K = 1 (ResNeSt-50, "2s1x64d"), reduction 4 with a floor of 32 (the official
code, zhanghang1989/ResNeSt ``splat.py``; the paper does not give the hidden width). With R = 2
and K = 1 the conv has as many weights as the dense 3×3 conv it replaces (9·C_in·C).

Placement ``"conv"``: replaces the 3×3 conv of residual blocks (ResNeSt: the bottleneck's).

ResNet-50 count: ``create_model("resnet50", 1000, attn="splat")`` has 27,471,560 parameters (the
plain ResNet-50's 25,557,032 + 1,914,528); the paper's ResNeSt-50 has 27.5M (−0.10%). ResNeSt-50
is not this network: it has a deep stem (three 3×3 convs, 32-32-64 channels, instead of the 7×7
conv: +19,232 parameters), average-pooling downsampling in its shortcuts ("avg_down") and before
the 1×1 conv of strided blocks ("avd", 3×3 average pool, the split-attention conv at stride 1),
and no BN after the split-attention conv (−7,552): 27,483,240 in all. attnvision's ResNet has the
plain stem and strided convs, so ``attn="splat"`` gives a ResNet-50 with split attention, not
ResNeSt-50.

Deviations:
- Inside attnvision's ResNets the block keeps the BN (and ReLU) that followed the replaced conv:
  V ≥ 0 is normalised and rectified once more before the next conv, where ResNeSt feeds V straight
  into the 1×1 conv. 2·C extra parameters per block, 7,552 in ResNet-50.
- d uses C = out_channels; the official code uses the conv's input width (the two are equal in
  every ResNeSt block; they differ only where a BasicBlock widens).
- Not implemented: the official code's DropBlock and rectified ("RFConv") convolution options.
- Init: Kaiming-normal fan-out for every conv, including the FC layers, as the official code's
  N(0, 2/(k²·C_out)); FC biases start at 0 (the official code leaves PyTorch's default).

BatchNorm on the pooled (B, d) vector needs more than one sample per batch in training mode; a
batch of 1 in training raises a ValueError naming the fix. Eval mode works at batch 1.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import reduced_channels
from .selective_kernel import BranchSelect, init_convs


class SplitAttentionConv(nn.Module):
    """Split-attention conv, replacing a 3×3 conv: (B, in_channels, H, W) → (B, out_channels, H', W')
    with H' = ⌈H/s⌉, W' = ⌈W/s⌉ as the conv it replaces.

    ``radix`` R splits per cardinal group, ``cardinality`` K groups; ``rd_ratio`` (1/4),
    ``min_rd_channels`` (32) or ``rd_channels`` set the hidden width d.
    ``split_weights(x)``: a, (B, R, C, 1, 1) (softmax over R, or the sigmoid gate when R = 1).
    """

    placement = "conv"
    paper = "Zhang, Wu, Zhang et al., CVPR-W 2022"
    kind = "channel"

    def __init__(self, in_channels: int, out_channels: int | None = None, radix: int = 2, cardinality: int = 1,
                 rd_ratio: float = 1 / 4, min_rd_channels: int = 32, rd_channels: int | None = None,
                 stride: int = 1) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if radix < 1 or cardinality < 1:
            raise ValueError(f"radix and cardinality must be >= 1, got radix={radix}, cardinality={cardinality}")
        if in_channels % (radix * cardinality) or out_channels % cardinality:
            raise ValueError(
                f"in_channels ({in_channels}) must split into radix x cardinality = {radix * cardinality} groups "
                f"and out_channels ({out_channels}) into {cardinality} cardinal groups; choose divisors"
            )
        if min_rd_channels < 1:
            raise ValueError(f"min_rd_channels must be >= 1, got {min_rd_channels}")
        if stride < 1:
            raise ValueError(f"stride must be positive, got {stride}")
        hidden = reduced_channels(out_channels * radix, rd_ratio, rd_channels)
        if rd_channels is None:
            hidden = max(hidden, min_rd_channels)  # d = max(C·R/4, 32)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.radix = radix
        self.conv = nn.Conv2d(in_channels, out_channels * radix, 3, stride, 1, groups=radix * cardinality,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels * radix)
        self.act = nn.ReLU(inplace=True)
        self.select = BranchSelect(out_channels, radix, hidden, groups=cardinality, bias=True)
        init_convs(self)

    def _splits_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SplitAttentionConv expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        u = self.act(self.bn(self.conv(x)))
        u = u.view(u.shape[0], self.radix, self.out_channels, *u.shape[2:])  # (B, R, C, H', W'), a view
        s = u.mean((3, 4)).sum(1)[:, :, None, None]  # GAP(Σ_r U_r), pooling before the sum
        return u, self.select(s)

    def split_weights(self, x: torch.Tensor) -> torch.Tensor:
        return self._splits_and_weights(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, a = self._splits_and_weights(x)
        return (a * u).sum(1)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"channel": a_1 (B, C)}: the weight of the first split per channel (R = 2: the second gets
        1 − a_1; R = 1: the sigmoid gate itself). ``split_weights`` gives all R."""
        return {"channel": self.split_weights(x)[:, 0].flatten(1)}
