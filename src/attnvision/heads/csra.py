"""Class-specific residual attention (Zhu & Wu, "Residual Attention: A Simple but Effective Method
for Multi-Label Recognition", ICCV 2021).

Equations (x ∈ R^{B×d×h×w} seen as L = h·w location vectors x_k ∈ R^d; m_i ∈ R^d the bias-free
classifier of class i, a 1×1 convolution; with ``normalize=True`` m_i ← m_i / ‖m_i‖, §3.4):

    s_ik = x_k^T m_i                                  location k's score for class i
    p_ik = exp(T s_ik) / Σ_l exp(T s_il)              attention over locations (Eq. 2)
    g = (1/L) Σ_k x_k,   a^i = Σ_k p_ik x_k           (Eqs. 3, 4)
    f^i = g + λ a^i,     y_i = m_i^T f^i              (Eqs. 5, 6)
        ⇒ y_i = (1/L) Σ_k s_ik + λ Σ_k p_ik s_ik      (Eq. 8: base logit + λ · attention logit)
    T = ∞:  y_i = (1/L) Σ_k s_ik + λ max_k s_ik       (Eq. 9, the training-free Fig. 1 trick)

By linearity the class-specific features f^i are never formed: the classifier is applied to every
location once, (B, C, L), as in the paper's Fig. 1 code. Multi-head (§3.4, Eq. 13): H branches,
each with its own classifier and temperature, the same λ, logits summed. Temperatures are the
paper's fixed sets: H=1: {1}; H=2: {1, ∞}; H=4: {1, 2, 4, ∞}; H=6: {1..5, ∞}; H=8: {1..7, ∞}.

Deviations from the official code (none from the paper):
- T = ∞ is ``math.inf``; the official code encodes it as the sentinel T = 99, which it also
  computes as an exact max over locations.
- ``normalize=True`` matches the official code (the score is divided by ‖m_i‖, gradients flow
  through the norm). ``normalize=False`` is the paper's Table 8 "without" row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURES: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (1.0, math.inf),
    4: (1.0, 2.0, 4.0, math.inf),
    6: (1.0, 2.0, 3.0, 4.0, 5.0, math.inf),
    8: (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf),
}


class CSRA(nn.Module):
    """One residual-attention branch with temperature ``temperature`` (``math.inf`` = max pooling).
    (B, d, h, w) → (B, C) logits."""

    def __init__(self, in_features: int, num_classes: int, temperature: float, lam: float,
                 normalize: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature T must be > 0 (math.inf for max pooling), got {temperature}")
        self.temperature = temperature
        self.lam = lam
        self.normalize = normalize
        self.classifier = nn.Conv2d(in_features, num_classes, 1, bias=False)

    def class_weights(self) -> torch.Tensor:
        """The classifiers m_i as a (C, d) matrix, unit-norm rows if ``normalize``."""
        weight = self.classifier.weight.flatten(1)
        return F.normalize(weight, dim=1) if self.normalize else weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(class_scores(x, self.class_weights()))

    def attention(self, score: torch.Tensor) -> torch.Tensor:
        """p_ik (B, C, L) from scores s_ik (B, C, L): softmax over locations of T·s; for T = ∞ the
        one-hot of the arg-max location (the first one on ties)."""
        if math.isinf(self.temperature):
            return F.one_hot(score.argmax(2), score.shape[2]).to(score.dtype)
        return torch.softmax(self.temperature * score, dim=2)

    def pool(self, score: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) from location scores s_ik (B, C, L): base logit + λ · attention logit."""
        base = score.mean(2)
        if math.isinf(self.temperature):
            attn = score.max(2).values  # max's backward scatters; amax's compares and counts ties (slower)
        else:
            attn = (torch.softmax(self.temperature * score, dim=2) * score).sum(2)
        return base + self.lam * attn


def class_scores(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """s_ik = x_k^T m_i: features (B, d, h, w), classifiers (C, d) → scores (B, C, L = h·w)."""
    return torch.einsum("bdl,cd->bcl", x.flatten(2), weight)


class CSRAHead(nn.Module):
    """Multi-head CSRA with the paper's temperatures for ``heads`` ∈ {1, 2, 4, 6, 8}.
    (B, d, h, w) → (B, C) logits, the sum of the branches' logits.

    Paper settings: VOC07 H=1, λ=0.1; COCO ResNet-101 H=6, λ=0.5 (Table 8 uses H=2/4);
    WIDER ViT H=1, λ=0.3; COCO ViT-L16 H=8, λ=1.0.
    """

    def __init__(self, in_features: int, num_classes: int, heads: int = 1, lam: float = 0.1,
                 normalize: bool = True) -> None:
        super().__init__()
        if heads not in TEMPERATURES:
            raise ValueError(f"CSRA defines temperatures for heads in {sorted(TEMPERATURES)}, got heads={heads}")
        self.in_features = in_features
        self.branches = nn.ModuleList(
            CSRA(in_features, num_classes, t, lam, normalize) for t in TEMPERATURES[heads]
        )

    def branch_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every branch's location scores s_ik: H × (B, C, L) for features x (B, d, h, w)."""
        if x.ndim != 4:
            raise ValueError(f"CSRA head expects features (B, d, h, w), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_features:
            raise ValueError(f"CSRA head was built for d={self.in_features} channels, got {x.shape[1]}")
        # One scoring product for all branches (their classifiers stacked): on CPU, 8 separate
        # products cost 3-4× one of 8× the size (measured). A batched softmax over the branches did
        # not help further (measured), so each branch pools its own slice.
        weight = torch.cat([branch.class_weights() for branch in self.branches])  # (H·C, d)
        return class_scores(x, weight).chunk(len(self.branches), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch.pool(s) for branch, s in zip(self.branches, self.branch_scores(x))]).sum(0)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per branch j: {"branches.j.scores": s_ik, "branches.j.attention": p_ik}, (B, C, h, w) each."""
        maps = {}
        for j, (branch, s) in enumerate(zip(self.branches, self.branch_scores(x))):
            maps[f"branches.{j}.scores"] = s.unflatten(2, x.shape[2:])
            maps[f"branches.{j}.attention"] = branch.attention(s).unflatten(2, x.shape[2:])
        return maps

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Each location's share of each logit, (B, C, h, w): Σ_j s^j_ik (1/L + λ p^j_ik), which sums
        over locations to y_i exactly (Eq. 8 per branch, branches summed). With one branch it is
        s_ik reweighted by its attention; the official visualisation shows s_ik alone."""
        maps = sum(s * (1 / s.shape[2] + branch.lam * branch.attention(s))
                   for branch, s in zip(self.branches, self.branch_scores(x)))
        return maps.unflatten(2, x.shape[2:])
