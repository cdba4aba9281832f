"""BCE and asymmetric loss against direct formulas; ignored targets; grad mode untouched."""

import math

import pytest
import torch
from torch import nn

from attnvision.losses import AsymmetricLoss, BCEWithLogits


def problem(seed: int = 0, ignore: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=g) * 3
    targets = torch.randint(0, 2, (6, 5), generator=g)
    if ignore:
        targets[torch.rand(6, 5, generator=g) < 0.2] = -1
    return logits, targets


def asl_reference(logits, targets, gamma_pos, gamma_neg, clip, eps=1e-8):
    """Per-entry ASL written from the paper's equations, one scalar at a time, skipping ignored entries."""
    out = []
    for z, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        if y == -1:
            continue
        p = 1 / (1 + math.exp(-z))
        if y == 1:
            out.append(-((1 - p) ** gamma_pos) * math.log(max(p, eps)))
        else:
            p_m = max(p - clip, 0.0)
            out.append(-(p_m ** gamma_neg) * math.log(max(1 - p_m, eps)))
    return out


def test_bce_matches_torch_without_ignored_entries():
    logits, targets = problem(ignore=False)
    for reduction in ("mean", "sum"):
        ref = nn.BCEWithLogitsLoss(reduction=reduction)(logits, targets.float())
        assert BCEWithLogits(reduction)(logits, targets).item() == pytest.approx(ref.item(), rel=1e-6)


def test_bce_ignores_minus_one_targets():
    logits, targets = problem()
    keep = targets != -1
    ref = nn.functional.binary_cross_entropy_with_logits(logits[keep], targets[keep].float())
    assert BCEWithLogits()(logits, targets).item() == pytest.approx(ref.item(), rel=1e-6)
    moved = logits.clone()
    moved[~keep] = 50.0
    assert BCEWithLogits()(moved, targets).item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip", [(0, 4, 0.05), (1, 2, 0.0), (0, 0, 0.0), (0.5, 3, 0.2)])
def test_asl_matches_direct_formula(gamma_pos, gamma_neg, clip):
    logits, targets = problem(seed=1)
    ref = asl_reference(logits, targets, gamma_pos, gamma_neg, clip)
    loss = AsymmetricLoss(gamma_pos, gamma_neg, clip, reduction="sum")
    assert loss(logits, targets).item() == pytest.approx(sum(ref), rel=1e-5)
    loss_mean = AsymmetricLoss(gamma_pos, gamma_neg, clip)
    assert loss_mean(logits, targets).item() == pytest.approx(sum(ref) / len(ref), rel=1e-5)


def test_asl_without_focusing_or_shift_is_bce():
    logits, targets = problem(seed=2)
    asl = AsymmetricLoss(gamma_pos=0, gamma_neg=0, clip=0)
    assert asl(logits, targets).item() == pytest.approx(BCEWithLogits()(logits, targets).item(), rel=1e-5)


def test_probability_shift_discards_easy_negatives():
    clip = 0.05
    z = torch.tensor([[math.log(0.04 / 0.96), math.log(0.5)]], requires_grad=True)  # p = 0.04 ≤ m, p = 1/3 > m
    loss = AsymmetricLoss(clip=clip, reduction="sum")(z, torch.zeros(1, 2))
    loss.backward()
    assert z.grad[0, 0].item() == 0.0 and z.grad[0, 1].item() > 0
    p_m = 1 / 3 - clip
    assert loss.item() == pytest.approx(-(p_m ** 4) * math.log(1 - p_m), rel=1e-5)


def test_detached_focal_weight_gradient():
    """The official ``disable_torch_grad_focal_loss`` gradient: the weight p_m^γ is a constant."""
    z0, gamma, clip = 0.3, 4, 0.05
    p = 1 / (1 + math.exp(-z0))
    p_m = p - clip
    const_weight_grad = p_m ** gamma * p * (1 - p) / (1 - p_m)  # d/dz of −w·log(1 − p_m) with w fixed
    full_grad = const_weight_grad - gamma * p_m ** (gamma - 1) * p * (1 - p) * math.log(1 - p_m)
    for detach, expected in ((True, const_weight_grad), (False, full_grad)):
        z = torch.tensor([[z0]], requires_grad=True)
        AsymmetricLoss(gamma_neg=gamma, clip=clip, reduction="sum", detach_focal_weight=detach)(
            z, torch.zeros(1, 1)).backward()
        assert z.grad.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("detach", [False, True])
def test_grad_mode_is_never_toggled(detach):
    logits, targets = problem(seed=3)
    loss_fn = AsymmetricLoss(detach_focal_weight=detach)
    with torch.no_grad():
        z = logits.clone().requires_grad_()
        out = loss_fn(z, targets)
        assert not torch.is_grad_enabled()
        assert not out.requires_grad
    assert torch.is_grad_enabled()
    z = logits.clone().requires_grad_()
    loss_fn(z, targets).backward()
    assert torch.is_grad_enabled()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert (z.grad[targets == -1] == 0).all()


def test_extreme_logits_give_finite_values_and_gradients():
    z = torch.tensor([[-40.0, -20, 0, 20, 40]] * 2, requires_grad=True)
    t = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]])
    for loss_fn in (BCEWithLogits(), AsymmetricLoss(), AsymmetricLoss(0.5, 0.5, 0.0)):
        z.grad = None
        loss = loss_fn(z, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_half_precision_logits_are_computed_in_float32():
    logits, targets = problem(seed=4)
    for loss_fn in (BCEWithLogits(), AsymmetricLoss()):
        out = loss_fn(logits.half(), targets)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(loss_fn(logits.half().float(), targets).item(), rel=1e-6)


def test_all_ignored_gives_zero():
    logits = torch.randn(2, 3, requires_grad=True)
    targets = torch.full((2, 3), -1)
    for loss_fn in (BCEWithLogits(), AsymmetricLoss()):
        assert loss_fn(logits, targets).item() == 0.0


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="shaped like the logits"):
        AsymmetricLoss()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="shaped like the logits"):
        BCEWithLogits()(torch.randn(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="reduction"):
        BCEWithLogits("none")
    with pytest.raises(ValueError, match="clip"):
        AsymmetricLoss(clip=1.0)
    with pytest.raises(ValueError, match="focusing"):
        AsymmetricLoss(gamma_neg=-1)
