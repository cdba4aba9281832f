"""An exponential moving average of a model's weights (Polyak averaging with exponential
forgetting; the form of timm's ``ModelEmaV2`` and TensorFlow's ``ExponentialMovingAverage``):

    θ̄_0 = θ_0,    θ̄_t = d·θ̄_{t−1} + (1 − d)·θ_t    after every optimizer step t

for every parameter and every floating-point buffer (BatchNorm's running mean and variance, so
the averaged model evaluates with statistics that match its averaged weights); integer buffers
(BatchNorm's step counter) are copied. With d = 0.999 the average spans about 1/(1 − d) = 1,000
steps. Deviation from timm: no warm-up of d.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """The averaged copy ``module`` (eval mode, no gradients) of the model given at construction."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̄ ← d·θ̄ + (1 − d)·θ, in place; ``model`` has the averaged module's architecture."""
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [*model.parameters(), *model.buffers()]
        for average, current in zip(mine, theirs):
            if average.is_floating_point():
                average.lerp_(current.detach().to(average.dtype), 1.0 - self.decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
