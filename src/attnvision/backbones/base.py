"""What every backbone shares: a trunk (``forward_features``) followed by a head."""

from __future__ import annotations

import torch
from torch import nn

from ..label_sequence import takes_targets


class TrunkAndHead(nn.Module):
    """``forward(x)``: (B, in_chans, H, W) → logits (B, C), the head applied to ``forward_features(x)``
    (B, d, h, w). A head that trains on its own objective (one label per step, e.g.
    show-attend-tell: ``label_sequence.takes_targets``) also gets the targets in training:
    ``forward(x, targets)`` → (logits (B, C), loss)."""

    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def takes_targets(self) -> bool:
        return takes_targets(self.head)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        features = self.forward_features(x)
        return self.head(features) if targets is None else self.head(features, targets)
