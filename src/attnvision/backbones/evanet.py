"""EVANet-20 (Küçüksözen, "Expanding Visual Attention", 2019, §3.3 and Table 1): a CIFAR ResNet
whose last feature map feeds the EVA head (``attnvision.heads.eva``) instead of GAP + linear.

Trunk: 3×3 stem and three stages of BasicBlocks, [2, 2, 2] by default (Table 1; the published
code uses [3, 3, 3], pass ``layers=(3, 3, 3)``), widths 16/32/64 (``width="small"``) or 64/128/256
(``"large"``), option-A shortcuts by default (He et al. §4.2; the code's option B via
``shortcut="B"``). EVA (4 heads, k = 7, model width = the trunk's last width) sits after stage 3.

Getting the 7×7 map: 28×28 inputs (Fashion-MNIST) already give 7×7. 32×32 CIFAR gives 8×8; the
paper only says the backbone "downsamples" to 7×7, and the code drops the first row and column
(``[:, :, 1:, 1:]``). This model crops the k×k window centred on pixel (H//2, W//2), which is that
crop for 8×8 and the identity for 7×7; strides and pooling stay unchanged. Adaptive pooling or a
changed stride would be different designs. Only maps of k or
k+1 pixels per side are accepted: a larger map would lose more than one border row and column, so
it raises ValueError instead of cropping silently.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .resnet import BasicBlock, ResNet, cifar_widths


class EVANet(ResNet):
    """A ResNet whose ``forward_features`` returns the k×k map its EVA head needs:
    (B, in_chans, H, W) → (B, d, k, k); ``head``: (B, d, k, k) → (B, num_classes)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward_features(x)
        k = self.head.kernel_size
        h, w = x.shape[2:]
        if h - k not in (0, 1) or w - k not in (0, 1):
            raise ValueError(
                f"the trunk gives a {h}x{w} map but EVA needs {k}x{k} or {k + 1}x{k + 1} (cropped to "
                f"{k}x{k}); the CIFAR trunk divides the input by 4, so use 28x28 or 32x32 images"
            )
        top, left = h // 2 - k // 2, w // 2 - k // 2
        return x[:, :, top:top + k, left:left + k]


def evanet20(num_classes: int, width: str = "small", layers: Sequence[int] = (2, 2, 2), shortcut: str = "A",
             head: str = "eva", head_kw: dict | None = None, **kw) -> EVANet:
    """EVANet-20: CIFAR ResNet trunk + EVA head. ``head_kw`` goes to ``EVAHead`` (e.g. ``heads``,
    ``variant="code"``); ``kw`` to ``ResNet`` (``in_chans``, ``attn``, …). The head is EVA by
    definition; ``head`` exists only to reject other names clearly.
    """
    if head != "eva":
        raise ValueError(f"evanet20 always uses the EVA head, got head='{head}': use resnet20 with "
                         f"layers=(2, 2, 2) for other heads")
    return EVANet(BasicBlock, list(layers), cifar_widths(width), num_classes, stem="cifar",
                  head="eva", head_kw=head_kw, shortcut=shortcut, **kw)
