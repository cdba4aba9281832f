"""Classification heads and their registry. A head maps features (B, d, h, w) to logits (B, C)."""

from __future__ import annotations

from torch import nn

from ..registry import Registry
from .csra import CSRAHead
from .eva import EVAHead
from .gap import GAPHead
from .query2label import Query2LabelHead
from .sat import ShowAttendTellHead

HEADS: Registry = Registry("head")
HEADS.add("gap", GAPHead)
HEADS.add("eva", EVAHead)
HEADS.add("csra", CSRAHead)
HEADS.add("query2label", Query2LabelHead)
HEADS.add("sat", ShowAttendTellHead)


def create_head(name: str, in_features: int, num_classes: int, **kw) -> nn.Module:
    """Build the head registered as ``name``; unknown names raise ValueError listing valid ones."""
    return HEADS.build(name, in_features, num_classes, **kw)


def list_heads() -> list[str]:
    return HEADS.names()
