"""ResNets with attention inside their blocks.

- ImageNet style (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1):
  ``resnet18/34`` (BasicBlock) and ``resnet50/101`` (Bottleneck, stride on the 3×3 conv as in
  torchvision's "v1.5"). Module names follow torchvision's ``models/resnet.py`` so that a
  torchvision state dict loads (see ``weights.load_weights``; the classifier lives at ``head.fc``).
- CIFAR style (same paper, §4.2): 3×3 stem, three stages of n BasicBlocks (depth 6n+2), widths
  16/32/64 (``width="small"``) or 64/128/256 (``width="large"``). Shortcuts where the shape
  changes: ``shortcut="B"`` (default; 1×1 conv + BN, what most ports and the EVA paper's code use)
  or ``"A"`` (the paper's §4.2 choice: stride-2 subsampling and zero-padded extra channels, no
  parameters). ``layers`` overrides the blocks per stage, e.g. (2, 2, 2) for the EVA paper's
  Table 1 "ResNet-20".

Deviations from the papers: the ImageNet Bottleneck strides on its 3×3 conv (torchvision's "v1.5";
the paper strides the first 1×1 conv), and CIFAR ResNets default to option-B shortcuts (above).

Attention: ``attn`` names a registered module. ``placement == "block"`` modules sit on the
residual branch of every block after its last BN, before the addition (SE paper Fig. 3, CBAM
Fig. 3, ECA Fig. 2). ``placement == "stage"`` modules sit at the end of every stage but the last
(BAM's "bottleneck" positions). ``placement == "conv"`` modules replace every 3×3 convolution of
the blocks (BasicBlock: both; Bottleneck: the middle one), built as ``create_attn(attn, in_channels,
out_channels=..., stride=...)`` (SASA, SK, BoTNet's MHSA, ...). ``attn_stages`` (1-based) limits the
module to some stages, e.g. ``[4]`` for BoTNet's last stage; by default every stage gets it
("stage" modules: every stage but the last). ``attn_kw`` goes to every instance; ``attn_stage_kw[i]``
(a dict per stage) is merged over it for stage i, e.g. ECA's per-stage kernel sizes.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attn_class, create_attn
from ..heads import create_head
from .base import TrunkAndHead
from .common import check_input


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016 §4.2): subsample by ``stride`` and zero-pad channels."""

    def __init__(self, out_planes: int, stride: int) -> None:
        super().__init__()
        self.out_planes = out_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_planes - x.shape[1]))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = attn
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attn is not None:
            out = self.attn(out)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attn
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn is not None:
            out = self.attn(out)
        return self.relu(out + shortcut)


def replace_3x3_convs(block: BasicBlock | Bottleneck, attn: str, attn_kw: dict) -> None:
    """Swap the block's 3×3 convolutions for the conv-replacing module ``attn`` (same in/out
    channels and stride; the BN after each conv stays)."""
    for name in ("conv1", "conv2"):
        conv = getattr(block, name)
        if conv.kernel_size != (3, 3):
            continue
        stride = {} if conv.stride == (1, 1) else {"stride": conv.stride[0]}
        if stride and "stride" not in inspect.signature(attn_class(attn)).parameters:
            raise ValueError(f"attention module '{attn}' takes no stride, so it cannot replace a strided 3×3 "
                             "convolution; limit it to stages without one with attn_stages, e.g. [1]")
        setattr(block, name, create_attn(attn, conv.in_channels, out_channels=conv.out_channels, **stride, **attn_kw))


class ResNet(TrunkAndHead):
    """ResNet trunk + head. ``forward_features``: (B, in_chans, H, W) → (B, d, h, w);
    ``head``: (B, d, h, w) → (B, num_classes)."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        stem: str = "imagenet",
        in_chans: int = 3,
        attn: str | None = None,
        attn_kw: dict | None = None,
        attn_stage_kw: Sequence[dict] | None = None,
        attn_stages: Sequence[int] | None = None,
        head: str = "gap",
        head_kw: dict | None = None,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem '{stem}'; valid: imagenet, cifar")
        if shortcut not in ("A", "B"):
            raise ValueError(f"unknown shortcut '{shortcut}'; valid: A (zero-pad), B (1x1 conv + BN)")
        self.shortcut = shortcut
        if attn_stage_kw is not None and len(attn_stage_kw) != len(layers):
            raise ValueError(f"attn_stage_kw needs one dict per stage ({len(layers)}), got {len(attn_stage_kw)}")
        self.in_chans = in_chans
        placement = attn_class(attn).placement if attn else None
        if attn_stages is None:
            attn_stages = range(1, len(layers) + (placement != "stage"))
        elif not set(attn_stages) <= set(range(1, len(layers) + 1)):
            raise ValueError(f"attn_stages must be stage numbers 1..{len(layers)}, got {list(attn_stages)}")
        stage_kw = [{**(attn_kw or {}), **((attn_stage_kw or [{}] * len(layers))[i])} for i in range(len(layers))]

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, 2, 3, bias=False)
        else:
            self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()

        self.inplanes = widths[0]
        self.stage_attn = nn.ModuleDict()
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stage_attn = attn if i + 1 in attn_stages else None
            layer = self._make_layer(block, planes, blocks, 1 if i == 0 else 2,
                                     stage_attn if placement == "block" else None, stage_kw[i])
            if stage_attn and placement == "conv":
                for b in layer:
                    replace_3x3_convs(b, attn, stage_kw[i])
            self.add_module(f"layer{i + 1}", layer)
            if stage_attn and placement == "stage":
                self.stage_attn[f"layer{i + 1}"] = create_attn(attn, self.inplanes, **stage_kw[i])
        self.num_stages = len(layers)
        self.num_features = self.inplanes

        self._init_trunk()
        self.head = create_head(head, self.num_features, num_classes, **(head_kw or {}))

    def _init_trunk(self) -> None:
        """Kaiming-normal convs, unit BNs: the trunk's own modules. Attention modules (every one
        has a ``placement``) keep their own init."""
        inside_attention = {id(sub) for m in self.modules() if hasattr(m, "placement") for sub in m.modules()}
        for m in self.modules():
            if id(m) in inside_attention:
                continue
            if isinstance(m, nn.Conv2d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, attn: str | None, attn_kw: dict) -> nn.Sequential:
        downsample = None
        out_planes = planes * block.expansion
        if stride != 1 or self.inplanes != out_planes:
            if self.shortcut == "A":
                downsample = ZeroPadShortcut(out_planes, stride)
            else:
                downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        layers = [block(self.inplanes, planes, stride, downsample, create_attn(attn, out_planes, **attn_kw))]
        self.inplanes = out_planes
        layers += [block(out_planes, planes, attn=create_attn(attn, out_planes, **attn_kw)) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_chans)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
            if f"layer{i}" in self.stage_attn:
                x = self.stage_attn[f"layer{i}"](x)
        return x



CIFAR_WIDTHS = {"small": (16, 32, 64), "large": (64, 128, 256)}


def cifar_widths(width: str) -> tuple[int, int, int]:
    """Stage widths of a CIFAR ResNet: "small" 16/32/64 or "large" 64/128/256."""
    if width not in CIFAR_WIDTHS:
        raise ValueError(f"unknown width '{width}'; valid: {', '.join(CIFAR_WIDTHS)}")
    return CIFAR_WIDTHS[width]


def cifar_resnet(depth: int, num_classes: int, width: str = "small", layers: Sequence[int] | None = None,
                 **kw) -> ResNet:
    """CIFAR ResNet of depth 6n+2 with BasicBlocks (``layers`` overrides the n per stage)."""
    n = (depth - 2) // 6
    return ResNet(BasicBlock, list(layers or [n] * 3), cifar_widths(width), num_classes, stem="cifar", **kw)


IMAGENET_LAYOUTS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}


def imagenet_resnet(depth: int, num_classes: int, **kw) -> ResNet:
    block, layers = IMAGENET_LAYOUTS[depth]
    return ResNet(block, layers, (64, 128, 256, 512), num_classes, stem="imagenet", **kw)
