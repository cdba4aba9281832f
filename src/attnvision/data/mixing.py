"""Batch mixing: mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019), for single-
and multi-label targets, on whole batches (no loop over images).

With a permutation π of the batch and λ ~ Beta(α, α):

    mixup:   x̃ = λ·x + (1 − λ)·x_π,                       ỹ = λ·y + (1 − λ)·y_π
    CutMix:  x̃ = x with the box B pasted from x_π,          ỹ = λ'·y + (1 − λ')·y_π,
             B of side √(1 − λ)·(H, W) centred at a uniform pixel and clipped to the image,
             λ' = 1 − |B| / (H·W) (the area actually pasted, as in the paper's code)

y is one-hot for single-label data (so ỹ sums to 1) and the {0, 1} target vector for
multi-label data, where an entry ignored (-1) in either image stays ignored. One λ and one π
per batch, as in both papers' code. Each batch is mixed by at most one of the two: CutMix with
probability ``cutmix_prob``, else mixup with probability ``mixup_prob``, else not at all (then the
targets come back unchanged). Label smoothing, when on, applies to the mixed targets in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixing:
    mixup_prob: float = 0.0
    mixup_alpha: float = 0.2
    cutmix_prob: float = 0.0
    cutmix_alpha: float = 1.0

    @property
    def active(self) -> bool:
        return self.mixup_prob > 0 or self.cutmix_prob > 0


def as_vectors(y: torch.Tensor, num_classes: int, task: str) -> torch.Tensor:
    """Targets as float (B, K) vectors: one-hot for single-label class indices (B,)."""
    return F.one_hot(y, num_classes).float() if task == "single" else y.float()


def blend(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """λ·a + (1 − λ)·b for target vectors (B, K); an entry ignored (-1) in either stays -1."""
    mixed = lam * a + (1 - lam) * b
    return torch.where((a == -1) | (b == -1), torch.full_like(mixed, -1.0), mixed)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), ends exclusive: side √(1 − λ) of the image's, centred at a uniform pixel, clipped."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
            max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixing: Mixing, num_classes: int, task: str,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̃, ỹ) for a batch x (B, C, H, W) with targets y ((B,) class indices or (B, K)); x is not
    modified. Unmixed batches return (x, y) as given. ``rng`` draws the choice, λ, π and the box."""
    choice = rng.random()
    if choice >= mixing.cutmix_prob + mixing.mixup_prob:
        return x, y
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    a, b = as_vectors(y, num_classes, task), as_vectors(y[perm], num_classes, task)
    if choice < mixing.cutmix_prob:
        lam = float(rng.beta(mixing.cutmix_alpha, mixing.cutmix_alpha))
        y0, y1, x0, x1 = cutmix_box(x.shape[2], x.shape[3], lam, rng)
        mixed = x.clone()
        mixed[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        pasted = 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[2] * x.shape[3])
        return mixed, blend(a, b, pasted)
    lam = float(rng.beta(mixing.mixup_alpha, mixing.mixup_alpha))
    return torch.lerp(x[perm], x, lam), blend(a, b, lam)
