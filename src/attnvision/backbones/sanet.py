"""SANet-20: the CIFAR ResNet-20 with stand-alone self-attention in its last stage. It is the
SASA baseline of Table 1 in Küçüksözen, "Expanding Visual Attention" (Koç University, COMP551
report, 2019), and follows Ramachandran et al., "Stand-Alone Self-Attention in Vision Models"
(NeurIPS 2019).

Architecture (EVA paper Table 1 and its caption): 3×3 stem, three stages of [2, 2, 2]
BasicBlocks, widths [16, 32, 64] (``width="small"``) or [64, 128, 256] (``"large"``). The first
two stages are convolutional. In the last stage a SASA layer (``attention.sasa``) replaces both
3×3 convolutions of every block ("2×SA layer"). Each is followed by the block's BN, as the conv
was. The first block's stride 2 becomes SASA's 2×2 average pooling after the attention, so its
attention runs at the stage input's resolution: 16×16 for CIFAR, 14×14 for Fashion-MNIST.
4 heads (EVA paper §4.1).

Choices where the papers are silent (the SANet code is unpublished):
- ``kernel_size=5``. SASA uses k = 7 on ImageNet; its last stage is 7×7, so the window there is
  global. On the 8×8 (CIFAR) or 7×7 (Fashion-MNIST) last stage, k = 7 would make the second
  layer almost global for every pixel. k = 5 is the largest window that stays local there.
  k = 3 (the kernel of the EVA author's unrelated COMP541 layer) sees no more than the 3×3 conv
  it replaces. ``kernel_size`` and ``heads`` are arguments.
- ``shortcut="A"`` (He et al.'s parameter-free CIFAR shortcut, the paper's reference design);
  ``"B"`` gives the 1×1 conv + BN used by most public code.
- Plug-in attention (``attn=``) is placed as in any CIFAR ResNet, on top of the SASA blocks.
"""

from __future__ import annotations

from typing import Sequence

from ..attention.sasa import SelfAttention2d
from .resnet import ResNet, cifar_resnet


def sanet20(num_classes: int, width: str = "small", kernel_size: int = 5, heads: int = 4,
            shortcut: str = "A", layers: Sequence[int] = (2, 2, 2), **kw) -> ResNet:
    """SANet-20: ``cifar_resnet(20, …)`` whose last-stage 3×3 convs are SASA layers.
    (B, in_chans, H, W) → (B, num_classes); ``kw`` as for ``cifar_resnet``
    (``in_chans``, ``attn``, ``head``, …)."""
    model = cifar_resnet(20, num_classes, width=width, layers=layers, shortcut=shortcut, **kw)
    for block in getattr(model, f"layer{model.num_stages}"):
        block.conv1 = SelfAttention2d(block.conv1.in_channels, block.conv1.out_channels, kernel_size,
                                      heads, stride=block.conv1.stride[0])
        block.conv2 = SelfAttention2d(block.conv2.in_channels, block.conv2.out_channels, kernel_size, heads)
    return model
