"""Global-average-pooling baseline head: logits = W · GAP(x) + b (He et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn


class GAPHead(nn.Module):
    """GAP then a linear classifier. (B, d, h, w) → (B, C) logits.

    The classifier is called ``fc`` so that, inside a model, its keys read ``head.fc.*``;
    ``attnvision.load_weights`` maps torchvision's ``fc.*`` onto them.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
