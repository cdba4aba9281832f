"""SimAM (Yang, Zhang, Li & Xie, "SimAM: A Simple, Parameter-Free Attention Module for
Convolutional Neural Networks", ICML 2021, PMLR 139:11863–11874).

Each neuron's importance is the inverse of the minimal energy of a linear separation of that
neuron from the other neurons of its channel (paper Eqs. 1–5). Its closed form (x ∈ R^{B×C×H×W},
per sample b and channel c, over the M = H·W positions; λ = 1e-4):
    μ    = (1/M) Σ_hw x                                   (B, C, 1, 1)
    d    = x − μ                                          (B, C, H, W)
    σ²   = (1/n) Σ_hw d²,  n = M − 1                       (B, C, 1, 1)  (as the paper's code)
    E⁻¹  = d² / (4(σ² + λ)) + 0.5                          (B, C, H, W)  (= 1 / e*_t of Eq. 4)
    out  = sigmoid(E⁻¹) ⊙ x
A full 3-D gate (one weight per channel and position) with no parameters; ``logits(x)`` is E⁻¹.

A 1×1 map (M = 1) has n = 0, where the official code computes 0/0 = NaN. Here σ² = 0 there
(d = 0, divided by max(n, 1)), so E⁻¹ = 0.5 and out = sigmoid(0.5) ⊙ x, with finite gradients.

Cost. SimAM is all memory traffic, so ``forward`` runs a fused autograd function
(``SimAMFunction``): its forward pass allocates only the gate (d² turned into sigmoid(E⁻¹) in
place) and the output, and keeps x, μ, k and the gate; the backward pass recomputes d and builds
the gradient below in place, in three map-sized buffers (the gradient itself among them).
Plain autograd through the same formula keeps every intermediate and took ~3× as long (CPU,
measured). In a resnet20 training step (28×28, batch 64, one CPU thread) SimAM costs ~1.1× the
plain step, as SE does. σ² is summed from d²: ``torch.var_mean`` over (H, W) is ~100× slower
than a mean on CPU (PyTorch 2.x, measured). ``gate`` and ``logits`` use plain autograd, for the
gate composer.

Gradient (a = g ⊙ x ⊙ s ⊙ (1 − s) with g = ∂L/∂out, s the gate, k = 1/(4(σ² + λ)), b = a ⊙ d):
    ∂L/∂x = g ⊙ s + 2k (b − mean_hw(b)) − (8k²/n) d Σ_hw(b ⊙ d)
(the mean μ and the variance σ² are differentiated through; Σ_hw d = 0 removes the rest).

Placement: ``"block"``, on the residual branch after the block's last BN, before the addition.

Deviations:
- placement: the official ResNets put SimAM right after the 3×3 convolution (before its BN:
  ``conv2 → SimAM → bn2``, in BasicBlock and Bottleneck alike); this library's ResNets place
  block modules after the last BN, like SE. No parameters are involved, so counts do not change.
- λ = 1e-4 (the official module's default, used by its CIFAR checkpoints); the official ImageNet
  commands and checkpoints use ``--attention_param 0.1``: pass ``lam=0.1`` to match them.
- the 1×1-map case above (the paper's formula is undefined there).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def simam_energy(x: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    """SimAM's inverse energy E⁻¹ = (x − μ)² / (4(σ² + λ)) + 0.5, (B, C, H, W) → (B, C, H, W)."""
    n = max(x.shape[2] * x.shape[3] - 1, 1)  # a 1×1 map has d = 0, so σ² = 0
    d = x - x.mean((2, 3), keepdim=True)
    d2 = d * d
    return d2 * (0.25 / (d2.sum((2, 3), keepdim=True) / n + lam)) + 0.5


class SimAMFunction(torch.autograd.Function):
    """out = x ⊙ sigmoid(E⁻¹(x)) with the hand-derived gradient of the module docstring."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        mean = x.mean((2, 3), keepdim=True)
        s = x - mean
        s.square_()  # d², summed for σ² and then turned into the gate in place
        k = 0.25 / (s.sum((2, 3), keepdim=True) / n + lam)
        s.mul_(k).add_(0.5).sigmoid_()
        ctx.save_for_backward(x, mean, k, s)
        ctx.n = n
        return x * s

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, mean, k, s = ctx.saved_tensors
        two_k = 2 * k
        grad = g * s
        d = x - mean  # recomputed: keeping it from the forward pass would hold one more map
        b = grad * x
        b.addcmul_(b, s, value=-1).mul_(d)  # b = a ⊙ d, a = g·x·s·(1 − s)
        shift = two_k * b.mean((2, 3), keepdim=True)
        grad.addcmul_(b, two_k)
        slope = (-4 / ctx.n) * two_k * k * b.mul_(d).sum((2, 3), keepdim=True)  # Σ b ⊙ d
        return grad.addcmul_(d, slope).sub_(shift), None


class SimAM(nn.Module):
    """Parameter-free 3-D attention. Input and output (B, C, H, W).

    ``lam`` is the regulariser λ of the energy (1e-4); ``gate(x)`` = sigmoid(E⁻¹), (B, C, H, W);
    ``logits(x)`` = E⁻¹.
    """

    placement = "block"
    paper = "Yang, Zhang, Li & Xie, ICML 2021"
    kind = "channel+spatial"
    applies_gate = True  # forward(x) = gate(x) ⊙ x, fused: the gate composer calls it (gate.py)

    def __init__(self, channels: int | None = None, lam: float = 1e-4) -> None:
        super().__init__()
        if lam <= 0:
            raise ValueError(f"SimAM's lam (λ) must be > 0 (it keeps 4(σ² + λ) away from 0 on flat "
                             f"channels), got {lam}; the paper uses 1e-4")
        self.lam = lam

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return simam_energy(x, self.lam)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return simam_energy(x, self.lam).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SimAMFunction.apply(x, self.lam)

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """The 3-D gate summarised by its means, as BAM's: {"spatial": mean over channels
        (B, 1, H, W), "channel": mean over positions (B, C)}."""
        gate = self.gate(x)
        return {"spatial": gate.mean(1, keepdim=True), "channel": gate.mean((2, 3))}

    def extra_repr(self) -> str:
        return f"lam={self.lam}"
