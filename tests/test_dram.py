"""DRAM (Ba, Mnih & Kavukcuoglu 2015): the retina against plain crops, the REINFORCE estimator
against a closed-form gradient, the stop token, the objective's gradients, a tiny training run,
the explain protocol and the options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnvision import create_model
from attnvision.backbones.dram import (DRAM, dram, footprints, gaussian_log_prob, reinforce_surrogate,
                                       returns_to_go, retina, step_rewards)
from attnvision.explain.capture import attention_maps
from attnvision.label_sequence import IGNORED_STEP

SMALL = dict(hidden_dim=32, patch_size=4, scales=2, context_size=8, steps=5, glimpses_per_label=2)


def small_model(num_classes: int = 6, in_chans: int = 1, **kw) -> DRAM:
    torch.manual_seed(0)
    return dram(num_classes, in_chans=in_chans, **{**SMALL, **kw})


def multi_hot(counts: list[int], num_classes: int) -> torch.Tensor:
    targets = torch.zeros(len(counts), num_classes)
    for row, k in enumerate(counts):
        targets[row, torch.randperm(num_classes)[:k]] = 1
    return targets


# --- retina -------------------------------------------------------------------------------------

def reference_retina(images: torch.Tensor, corners: list[tuple[int, int]], patch_size: int,
                     scales: int) -> torch.Tensor:
    """Per image and scale: slice the P·2^k-wide crop centred on the grid corner (y, x) out of a
    zero-padded image and average it in 2^k × 2^k blocks."""
    pad = patch_size * 2 ** (scales - 1)
    padded = F.pad(images, (pad, pad, pad, pad))
    out = []
    for b, (cy, cx) in enumerate(corners):
        per_scale = []
        for k in range(scales):
            half = patch_size * 2 ** k // 2
            crop = padded[b:b + 1, :, pad + cy - half:pad + cy + half, pad + cx - half:pad + cx + half]
            per_scale.append(F.avg_pool2d(crop, 2 ** k))
        out.append(torch.cat(per_scale, 1))
    return torch.cat(out)


def test_retina_matches_zero_padded_crops_at_the_border():
    torch.manual_seed(0)
    h, w, patch, scales = 20, 27, 4, 3
    corners = [(0, 0), (h, w), (0, w), (h, 0), (0, 13), (10, 0), (h, 5), (3, w), (1, 2), (10, 14), (19, 26)]
    images = torch.randn(len(corners), 2, h, w, dtype=torch.float64)
    locations = torch.tensor([[2 * cx / w - 1, 2 * cy / h - 1] for cy, cx in corners], dtype=torch.float64)
    got = retina(images, locations, patch, scales)
    assert got.shape == (len(corners), scales * 2, patch, patch)
    torch.testing.assert_close(got, reference_retina(images, corners, patch, scales), rtol=0, atol=1e-12)


def test_retina_at_the_corner_sees_zeros_outside():
    images = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    patches = retina(images, torch.tensor([[-1.0, -1.0]], dtype=torch.float64), 4, 1)[0, 0]
    assert patches[:2].sum() == 0 and patches[:, :2].sum() == 0 and (patches[2:, 2:] == 1).all()


# --- REINFORCE ----------------------------------------------------------------------------------

def test_reinforce_surrogate_matches_the_closed_form_gradient():
    """l ~ N(μ, σ²), r(l) = (l − a)²: d/dμ E[r] = 2(μ − a). The surrogate's −gradient, averaged
    over many samples, matches it within sampling error, with or without a constant baseline."""
    torch.manual_seed(0)
    n, sigma, a = 200_000, 0.5, 1.0
    mu = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    sample = (mu + sigma * torch.randn(n, 1, dtype=torch.float64)).detach()
    reward = ((sample - a) ** 2).squeeze(1)
    per_sample = reward * (sample.squeeze(1) - mu.detach()) / sigma ** 2  # r ∂ log π / ∂μ
    error = 4 * per_sample.std() / n ** 0.5
    expected = 2 * (mu.item() - a)
    for baseline in (0.0, reward.mean().item()):
        mu.grad = None
        log_prob = gaussian_log_prob(sample, mu.expand(n, 1), sigma)  # (n,)
        surrogate = reinforce_surrogate(log_prob[:, None], (reward - baseline)[:, None],
                                        torch.ones(n, 1, dtype=torch.bool))
        assert surrogate.item() == 0
        surrogate.backward()
        assert abs(-mu.grad.item() - expected) < error, (-mu.grad.item(), expected, error)


def test_rewards_and_returns():
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 1] = logits[0, 1, 2] = logits[0, 2, 3] = logits[0, 3, 3] = 1  # emits 1, 2, END, END
    targets = torch.tensor([[1, 0, 3, IGNORED_STEP]])  # END = 3; step 1 wrong, step 3 ignored
    rewards = step_rewards(logits, targets)
    assert rewards.tolist() == [[1, 0, 1, 0]]
    assert returns_to_go(rewards, 2).tolist() == [[2, 2, 1, 1, 1, 1, 0, 0]]


# --- shapes, gradients, stop token --------------------------------------------------------------

def test_eval_forward_shapes_batch_one_and_odd_sizes():
    model = small_model(in_chans=3).eval()
    x = torch.randn(1, 3, 37, 45)
    logits = model(x)
    assert logits.shape == (1, 6) and torch.isfinite(logits).all()
    torch.testing.assert_close(model(x), logits)  # deterministic: the emission means
    model.train()
    torch.testing.assert_close(model(x), logits)  # no targets: the same run in either mode
    centres = model.glimpse_centres(x)
    assert centres.shape == (1, model.num_glimpses, 2)
    assert (centres >= -0.5).all() and (centres[..., 0] <= 36.5).all() and (centres[..., 1] <= 44.5).all()


def test_training_forward_gives_loss_and_finite_gradients_everywhere():
    model = small_model().train()
    with torch.no_grad():
        model.baseline.bias.fill_(0.5)  # a non-zero advantage, so the policy gradient is not 0
    x = torch.randn(4, 1, 32, 32)
    logits, loss = model(x, multi_hot([1, 2, 3, 4], 6))
    assert logits.shape == (4, 6) and loss.shape == () and loss.dtype == torch.float32
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for module in (model.emission, model.core_upper, model.context, model.baseline, model.glimpse_image,
                   model.glimpse_location, model.core_lower, model.classifier):
        assert any(p.grad.abs().sum() > 0 for p in module.parameters()), module


def test_locations_carry_no_gradient_without_the_reinforce_term():
    model = small_model(reinforce_weight=0.0, baseline_weight=0.0).train()
    _, loss = model(torch.randn(3, 1, 32, 32), multi_hot([1, 2, 1], 6))
    loss.backward()
    for module in (model.emission, model.core_upper, model.context):
        assert all(p.grad.abs().sum() == 0 for p in module.parameters())
    assert model.classifier[-1].weight.grad.abs().sum() > 0


def test_too_many_labels_for_the_steps():
    model = small_model(steps=3)
    with pytest.raises(ValueError, match="pass steps"):
        model(torch.randn(1, 1, 32, 32), multi_hot([3], 6))


def test_end_first_emits_nothing_and_decoding_stops_at_steps():
    model = small_model().eval()
    x = torch.randn(2, 1, 32, 32)
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[6] = 20.0  # END
    assert (model(x) < 0).all()  # nothing emitted
    assert model.attention_maps(x, torch.empty(0, 2))["classes"].sum() == 0
    with torch.no_grad():
        last.bias[6] = 0.0
        last.bias[2] = 20.0  # never END
    run = model.decode(x)
    assert run.step_logits.shape == (2, model.steps, 7)
    assert ((model(x) > 0) == F.one_hot(torch.tensor([2, 2]), 6).bool()).all()


# --- explain protocol ---------------------------------------------------------------------------

def test_attention_maps_boxes_and_classes():
    model = small_model(num_classes=5).eval()
    x = torch.randn(3, 1, 30, 34)
    maps = attention_maps(model, x)
    glimpses, classes = maps["glimpses"], maps["classes"]
    assert glimpses.shape == (3, model.num_glimpses, 30, 34) and classes.shape == (3, 5, 30, 34)
    assert set(glimpses.unique().tolist()) <= {0.0, 1.0}
    area = glimpses.sum((2, 3))
    assert (area > 0).all() and (area <= (model.patch_size + 1) ** 2).all()
    emitted = model(x) > 0
    assert (classes.sum((2, 3))[~emitted] == 0).all()
    assert (classes.sum((2, 3))[emitted] > 0).all()
    torch.testing.assert_close(model.class_maps(x), classes)


def test_class_map_peaks_at_the_last_glimpse_centre_of_the_emitting_step():
    model = small_model(num_classes=5).eval()
    x = torch.randn(2, 1, 30, 34)
    classes, centres = model.class_maps(x), model.glimpse_centres(x)  # centres (B, S, 2) as (y, x)
    emitted_at = model.decode(x).step_logits.argmax(2)  # (B, T)
    checked = 0
    for b in range(2):
        steps_of = {}  # class → the steps that emitted it
        for t in range(model.steps):
            if emitted_at[b, t].item() == model.num_classes:
                break
            steps_of.setdefault(emitted_at[b, t].item(), []).append(t)
        for c, steps in steps_of.items():
            peak = torch.tensor(divmod(classes[b, c].argmax().item(), 34)).float()
            last = torch.stack([centres[b, (t + 1) * model.glimpses_per_label - 1] for t in steps])
            assert classes[b, c].max() >= 1 - 0.5 / (model.patch_size / 2) - 1e-6  # the pixel nearest the centre
            assert ((last - peak).abs() <= 0.5).all(1).any(), (peak, last)
            checked += 1
    assert checked > 0


def test_footprint_is_the_finest_patch():
    box = footprints(torch.tensor([[[0.0, 0.0]]]), 4, (16, 16))[0, 0]
    assert box.sum() == 16 and box[6:10, 6:10].all()


# --- training -----------------------------------------------------------------------------------

def quadrant_scenes(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark canvases with a bright 6×6 square in 1 or 2 of the 4 quadrants; class = quadrant."""
    g = torch.Generator().manual_seed(1)
    images, targets = torch.zeros(n, 1, size, size), torch.zeros(n, 4)
    half = size // 2
    for i in range(n):
        chosen = torch.randperm(4, generator=g)[:1 + int(torch.rand(1, generator=g) < 0.5)]
        for q in chosen.tolist():
            y, x = (q // 2) * half + torch.randint(0, half - 6, (2,), generator=g)
            images[i, 0, y:y + 6, x:x + 6] = 1
            targets[i, q] = 1
    return (images - images.mean()) / images.std(), targets


def test_tiny_training_lowers_the_loss():
    images, targets = quadrant_scenes(64)
    model = small_model(num_classes=4, steps=3, patch_size=8).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        _, loss = model(images, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, losses


# --- options ------------------------------------------------------------------------------------

def test_create_model_builds_dram():
    model = create_model("dram", 10, in_chans=1)
    assert isinstance(model, DRAM) and model.takes_targets
    assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("kw, match", [
    (dict(attn="cbam"), "drop --attn/--head"),
    (dict(head="gap"), "drop --attn/--head"),
    (dict(steps=1), "steps"),
    (dict(glimpses_per_label=0), "glimpses_per_label"),
    (dict(patch_size=1), "patch_size"),
    (dict(scales=5), "scales"),
    (dict(hidden_dim=0), "hidden_dim"),
    (dict(context_size=2), "context_size"),
    (dict(location_std=0.0), "location_std"),
    (dict(reinforce_weight=-1.0), "reinforce_weight"),
    (dict(baseline_weight=-0.5), "baseline_weight"),
    (dict(order="random"), "label order"),
    (dict(glimpse_size=8), "unknown option"),
])
def test_bad_options_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        create_model("dram", 10, in_chans=1, **kw)
