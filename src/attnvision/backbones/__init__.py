"""Backbones (trunk + head) and the model registry.

Every model exposes ``forward_features(x) -> (B, d, h, w)``, ``head(features) -> (B, C)``,
``num_features`` (d) and ``in_chans``.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..registry import Registry
from .attention_net import cifar_attention_net
from .dram import dram
from .evanet import evanet20
from .resnet import cifar_resnet, imagenet_resnet
from .sanet import sanet20
from .vit import vit_tiny
from .weights import load_weights

MODELS: Registry = Registry("model")
for _depth in (20, 32, 44, 56, 110):
    MODELS.add(f"resnet{_depth}", partial(cifar_resnet, _depth))
for _depth in (18, 34, 50, 101):
    MODELS.add(f"resnet{_depth}", partial(imagenet_resnet, _depth))
MODELS.add("sanet20", sanet20)
MODELS.add("vit_tiny", vit_tiny)
MODELS.add("evanet20", evanet20)
MODELS.add("dram", dram)
for _depth in (56, 92):
    MODELS.add(f"attention{_depth}", partial(cifar_attention_net, _depth))


def create_model(name: str, num_classes: int, attn: str | None = None, head: str | None = None,
                 in_chans: int = 3, **kw) -> nn.Module:
    """Build a registered model, e.g. ``create_model("resnet20", 10, attn="cbam", in_chans=1)``.

    ``head=None`` gives the model's own head ("gap" for ResNets, "eva" for evanet20). ``kw`` goes to
    the backbone: ``width`` for CIFAR ResNets, ``attn_kw``, ``attn_stage_kw``, ``head_kw``.
    Unknown names raise ValueError listing the valid ones.
    """
    if head is not None:
        kw["head"] = head
    return MODELS.build(name, num_classes=num_classes, attn=attn, in_chans=in_chans, **kw)


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "create_model", "list_models", "load_weights"]
