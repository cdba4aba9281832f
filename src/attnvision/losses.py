"""Multi-label losses on logits (B, C) and targets (B, C) in {1, 0, -1 (ignored)}.

Both losses skip ignored entries (-1) entirely and reduce with

- ``"mean"`` (default): the sum over non-ignored entries divided by their number, so the loss
  scale does not depend on batch size or C (CSRA's BCE; ``nn.BCEWithLogitsLoss`` when nothing is
  ignored);
- ``"sum"``: the plain sum, as the official ASL code returns (``-loss.sum()``). Its gradient is
  (number of non-ignored entries) × the mean's, which matters for SGD learning rates; Adam is
  almost insensitive to it.

Both compute in float32 whatever the logits' dtype, so fp16/bf16 autocast does not saturate
the sigmoid or the logs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("mean", "sum")


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise ValueError(
            f"multi-label losses need targets shaped like the logits (B, C) with values in {{1, 0, -1}}, "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction '{reduction}'; valid: {', '.join(REDUCTIONS)}")


def _reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Sum or mean of an elementwise ``loss`` over the ``valid`` entries (0 if there are none)."""
    total = torch.where(valid, loss, torch.zeros_like(loss)).sum()
    return total if reduction == "sum" else total / valid.sum().clamp(min=1)


class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits, ignoring -1 targets.

    ℓ = −[y·log σ(z) + (1 − y)·log(1 − σ(z))], computed stably by
    ``F.binary_cross_entropy_with_logits``. logits, targets: (B, C) → scalar.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        valid = targets != -1
        y = targets.float().clamp(min=0)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
        return _reduce(loss, valid, self.reduction)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik, Ben-Baruch et al., "Asymmetric Loss For Multi-Label
    Classification", ICCV 2021).

    With p = σ(z) and the shifted probability p_m = max(p − m, 0) (m = ``clip``), per entry

        L+ = (1 − p)^γ+ · log(p)                  for y = 1
        L− = p_m^γ− · log(1 − p_m)                for y = 0
        ℓ  = −y·L+ − (1 − y)·L−

    Probability shifting (m) hard-thresholds easy negatives (p ≤ m gives zero loss and zero
    gradient) and asymmetric focusing (γ− > γ+) down-weights the remaining easy negatives.
    Defaults are the paper's and official ``train.py``'s: γ+ = 0, γ− = 4, m = 0.05.
    logits, targets: (B, C) → scalar.

    Deviations / options:
    - The logs are taken of ``clamp(·, min=eps)`` as the official code does (the paper has no
      eps); a positive with logit below log(eps) ≈ −18.4 therefore gets no gradient. The
      focusing bases 1 − p and p_m are clamped at eps as well (changes the loss by < eps^γ).
    - The focusing weights (1 − p)^γ+ and p_m^γ− are differentiated through, as in the
      paper's gradient analysis (§3). ``detach_focal_weight=True`` treats them as constants,
      which is what the official ``disable_torch_grad_focal_loss=True`` (used by its
      ``train.py``) computes; that code does it by switching global grad mode off and back on,
      which re-enables grad inside a caller's ``torch.no_grad()``. Here grad mode is never
      touched: the weights are ``.detach()``-ed.
    - Reduction: see the module docstring (official: sum).
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8,
                 reduction: str = "mean", detach_focal_weight: bool = False) -> None:
        super().__init__()
        if gamma_pos < 0 or gamma_neg < 0:
            raise ValueError(f"focusing parameters must be ≥ 0, got gamma_pos={gamma_pos}, gamma_neg={gamma_neg}")
        if not 0 <= clip < 1:
            raise ValueError(f"clip (probability margin m) must lie in [0, 1), got {clip}")
        _check_reduction(reduction)
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.eps = eps
        self.reduction = reduction
        self.detach_focal_weight = detach_focal_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(logits, targets)
        valid = targets != -1
        pos = targets == 1
        p = logits.float().sigmoid()
        p_m = (p - self.clip).clamp(min=0)
        # Bases clamped at eps: for 0 < γ < 1 the derivative of base^γ at base = 0 is infinite and
        # would meet a zero log factor as 0·∞ = NaN; the clamp changes the loss by < eps^γ.
        w_pos = (1 - p).clamp(min=self.eps).pow(self.gamma_pos)
        w_neg = p_m.clamp(min=self.eps).pow(self.gamma_neg)
        if self.detach_focal_weight:
            w_pos, w_neg = w_pos.detach(), w_neg.detach()
        loss_pos = w_pos * p.clamp(min=self.eps).log()
        loss_neg = w_neg * (1 - p_m).clamp(min=self.eps).log()
        return _reduce(-torch.where(pos, loss_pos, loss_neg), valid, self.reduction)
