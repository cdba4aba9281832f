"""Explainability: score functions on hand-made maps, Grad-CAM against a direct computation, the
attention maps of every module and head, explicit vs fused attention, faithfulness, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from attnvision import create_model
from attnvision.attention import ATTENTION, create_attn
from attnvision.attention.aa_conv import AttentionAugmentedConv
from attnvision.attention.sasa import SelfAttention2d
from attnvision.backbones.vit import VisionTransformer
from attnvision.cli import app
from attnvision.data import Split, BatchLoader, load_dataset
from attnvision.explain import (attention_maps, baseline_maps, class_maps, deletion_insertion,
                                localization_scores)
from attnvision.explain.run import ExplainSettings, by_classes, map_and_score
from attnvision.explain.scores import (ROAD_FRACTIONS, box_masking, box_masks, default_tolerance, impute,
                                       pair_scores, road, sobel_magnitude, summarize_pairs)
from attnvision.config import TrainConfig
from attnvision.train import train


def box(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long).view(-1, 4)


def peak_map(y: int, x: int, size: int = 16) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[y, x] = 1.0
    return m


# Localisation scores on maps with known answers


def test_pointing_game_inside_outside_and_tolerance():
    b = box((4, 4, 8, 8))  # pixels x 4..7, y 4..7
    maps = torch.stack([peak_map(5, 5), peak_map(5, 11), peak_map(7, 10), peak_map(10, 10)])
    result = localization_scores(maps, [b] * 4, tolerance=3)
    # peak (5,5) inside; (5,11) is 4 px right of x=7: outside 3; (7,10) exactly 3 px: inside the
    # tolerance (≤); (10,10): distance √(3²+3²) ≈ 4.2 > 3
    assert result["pointing_game"] == pytest.approx(50.0)
    assert result["pointing_game_exact"] == pytest.approx(25.0)
    assert result["pairs"] == 4 and result["skipped"] == 0


def test_non_square_boxes_in_both_orientations():
    wide, tall = box((2, 10, 30, 14)), box((10, 2, 14, 30))  # x0, y0, x1, y1
    peak = peak_map(12, 20, 32)  # row 12, column 20: inside the wide box only
    result = localization_scores(torch.stack([peak, peak]), [wide, tall])
    assert result["pointing_game"] == pytest.approx(50.0)
    rows = torch.zeros(32, 32)
    rows[10:14] = 1.0  # a band of rows 10..13: all inside the wide box's rows
    energy = [localization_scores(rows[None], [b])["energy_in_box"] for b in (wide, tall)]
    assert energy[0] == pytest.approx(100 * 28 / 32) and energy[1] == pytest.approx(100 * 4 / 32)
    mask = box_masks([wide], 32, 32)[0]
    assert mask[10:14, 2:30].all() and mask.sum() == 4 * 28


def test_uniform_map_scores_the_box_area_share():
    b = box((0, 0, 4, 8))  # 32 of 256 pixels
    result = localization_scores(torch.full((1, 16, 16), 0.3), [b])
    assert result["energy_in_box"] == pytest.approx(12.5)
    assert result["relevance_rank"] == pytest.approx(12.5)
    assert result["pointing_game"] == 0.0, "a constant map has no maximum: a miss"


def test_ties_empty_maps_and_empty_boxes():
    b = box((0, 0, 4, 4))
    two_inside = peak_map(1, 1) + peak_map(2, 2)
    one_outside = peak_map(1, 1) + peak_map(12, 12)
    zero = torch.zeros(16, 16)
    result = localization_scores(torch.stack([two_inside, one_outside]), [b, b])
    assert result["pointing_game"] == pytest.approx(50.0), "every maximum must lie in the box"
    empty = localization_scores(zero[None], [b])
    assert empty["pointing_game"] == 0 and empty["energy_in_box"] == 0
    assert empty["relevance_rank"] == pytest.approx(100 * 16 / 256), "ties at their expected share"
    negative = localization_scores(-torch.ones(1, 16, 16), [b])
    assert negative["energy_in_box"] == 0, "no positive mass, no energy"
    skipped = localization_scores(torch.stack([two_inside, zero]), [b, box()])
    assert skipped["pairs"] == 1 and skipped["skipped"] == 1 and skipped["pointing_game"] == 100.0


def test_relevance_rank_and_several_boxes():
    boxes = box((0, 0, 2, 2), (10, 10, 12, 12))  # 8 pixels in all
    m = torch.zeros(16, 16)
    m[0:2, 0:2] = 5.0
    m[10:12, 10:12] = 4.0
    m[5, 5] = 4.5  # outranks the second box's pixels: 7 of the top 8 are inside
    result = localization_scores(m[None], [boxes])
    assert result["relevance_rank"] == pytest.approx(100 * 7 / 8)
    assert result["energy_in_box"] == pytest.approx(100 * 36 / 40.5)
    assert result["pointing_game"] == 100.0


def test_per_class_means_and_baselines():
    b = box((4, 4, 12, 12))
    maps = torch.stack([peak_map(5, 5), peak_map(0, 0), peak_map(6, 6)])
    result = localization_scores(maps, [b, b, b], classes=torch.tensor([0, 0, 3]))
    assert result["per_class"][0]["pointing_game"] == 50.0 and result["per_class"][3]["pointing_game"] == 100.0
    assert localization_scores(baseline_maps("box", 1, 16, 16, [b]), [b])["energy_in_box"] == 100.0
    centre = baseline_maps("centre", 2, 16, 16)
    assert centre.shape == (2, 16, 16) and localization_scores(centre[:1], [b])["pointing_game"] == 100.0
    random = baseline_maps("random", 200, 16, 16, seed=1)
    assert localization_scores(random, [b] * 200)["energy_in_box"] == pytest.approx(25.0, abs=1.0)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_maps("gauss", 1, 16, 16)


def test_energy_lift_is_a_ratio_over_the_area_share():
    b = box((0, 0, 4, 8))  # 32 of 256 pixels
    uniform = localization_scores(torch.full((1, 16, 16), 0.3), [b])
    assert uniform["energy_lift"] == pytest.approx(1.0), "a uniform map: 1.0, a ratio not a percent"
    inside = localization_scores(baseline_maps("box", 1, 16, 16, [b]), [b])
    assert inside["energy_lift"] == pytest.approx(8.0), "all mass in the box: H·W / |S|"
    half = torch.zeros(16, 16)
    half[:8] = 1.0  # 32 of the 128 positive pixels lie in the box: energy 25%, lift 2
    both = localization_scores(torch.stack([half, torch.full((16, 16), 0.3)]), [b, b])
    assert both["energy_in_box"] == pytest.approx(18.75) and both["energy_lift"] == pytest.approx(1.5)


def test_min_max_energy_removes_a_floor():
    b = box((2, 3, 9, 7))
    m = torch.zeros(16, 16)
    m[3:7, 2:9] = 1.0  # the box's 28 pixels
    m[12, 12] = 0.5
    floored = m * 0.4 + 0.6  # a sigmoid gate's kind of map: positive floor 0.6
    raw = localization_scores(torch.stack([m, floored]), [b, b], classes=torch.tensor([0, 1]))["per_class"]
    assert raw[0]["energy_in_box"] > 95 and raw[1]["energy_in_box"] < 20, "the floor dilutes raw energy"
    assert raw[1]["energy_minmax"] == pytest.approx(raw[0]["energy_minmax"])
    assert raw[0]["energy_minmax"] == pytest.approx(raw[0]["energy_in_box"]), "min 0, max 1: nothing to scale"
    constant = localization_scores(torch.full((1, 16, 16), 2.0), [b])
    assert constant["energy_minmax"] == 0.0, "nothing to scale: 0"


def test_tolerance_default_scales_to_the_image():
    assert default_tolerance(224, 224) == 15
    assert default_tolerance(28, 28) == pytest.approx(1.9) and default_tolerance(64, 64) == pytest.approx(4.3)
    assert default_tolerance(64, 300) == pytest.approx(4.3), "the shorter side"


def test_sobel_edge_map_peaks_on_a_step():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, :, 8:] = 1.0  # a vertical step between columns 7 and 8
    edge = baseline_maps("edge", 2, 16, 16, images=x)
    assert edge.shape == (2, 16, 16)
    assert (edge[:, :, 7:9] == 4).all(), "the Sobel x-kernel's weights 1 + 2 + 1 on both sides of the step"
    assert (edge[:, :, :7] == 0).all() and (edge[:, :, 9:] == 0).all(), "flat elsewhere, the border included"
    assert torch.allclose(sobel_magnitude(x[:, :1]), edge), "the mean over channels"
    with pytest.raises(ValueError, match="needs the images"):
        baseline_maps("edge", 1, 16, 16)


def test_reference_maps_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    images = (torch.rand(7, 1, 12, 12) * 255).to(torch.uint8)
    split = Split(images, torch.arange(7) % 3)
    boxes = [torch.tensor([[i % 5, 1, i % 5 + 4, 7, i % 3]]) for i in range(7)]
    pairs = torch.stack([torch.arange(7), torch.arange(7) % 3], 1)
    names = ["random", "centre", "edge", "box"]
    scores = []
    for batch_size in (2, 5):
        loader = BatchLoader(split, batch_size, mean=(0.5,), std=(0.25,), train=False)
        per_pair, maps, _ = map_and_score(None, loader, pairs, torch.ones(7, dtype=torch.bool), names, boxes, 1.0,
                                          None, torch.zeros(1), seed=3)
        scores.append((per_pair, maps))
    for name in names:
        torch.testing.assert_close(scores[0][1][name], scores[1][1][name], rtol=0, atol=0)
        for key, value in scores[0][0][name].items():
            torch.testing.assert_close(value, scores[1][0][name][key], rtol=0, atol=0)
    rows = baseline_maps("random", 2, 12, 12, seed=3, index=torch.tensor([5, 1]))
    assert torch.equal(rows, scores[0][1]["random"][[5, 1]]), "a random map per image index"


# Grad-CAM and class maps


def test_gradcam_equals_gradient_weighted_activations_per_image_target():
    torch.manual_seed(0)
    model = create_model("resnet20", 5, in_chans=1).eval()
    x = torch.randn(3, 1, 16, 16)
    classes = torch.tensor([[0, 4], [2, 1], [3, 3]])
    maps = class_maps(model, x, classes, "gradcam")
    assert maps.shape == (3, 2, 16, 16)
    features = model.forward_features(x).detach().requires_grad_(True)
    logits = model.head(features)
    for k in range(2):
        grads = torch.autograd.grad(logits.gather(1, classes[:, k:k + 1]).sum(), features, retain_graph=True)[0]
        cam = (grads.mean((2, 3), keepdim=True) * features).sum(1, keepdim=True).relu()
        expected = nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(maps[:, k], expected.detach(), atol=1e-6, rtol=1e-4)
    assert not torch.allclose(maps[0, 0], maps[0, 1]), "each column explains its own class"


def test_own_class_maps_of_heads_and_spatial_gates():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    csra = create_model("resnet20", 6, in_chans=1, head="csra", head_kw={"heads": 4, "lam": 0.3}).eval()
    features = csra.forward_features(x)
    torch.testing.assert_close(csra.head.class_maps(features).sum((2, 3)), csra.head(features), atol=1e-5, rtol=1e-5)
    q2l = create_model("resnet20", 6, in_chans=1, head="query2label").eval()
    torch.testing.assert_close(q2l.head.class_maps(q2l.forward_features(x)).sum((2, 3)), torch.ones(2, 6))
    cbam = create_model("resnet20", 6, in_chans=1, attn="cbam").eval()
    maps = class_maps(cbam, x, torch.tensor([[0, 5], [1, 2]]), "attention")
    last_gate = attention_maps(cbam, x)["layer3.2.attn.spatial"]
    expected = nn.functional.interpolate(last_gate, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps[:, 0], expected)
    torch.testing.assert_close(maps[:, 1], expected)
    with pytest.raises(ValueError, match="no class or spatial attention map"):
        class_maps(create_model("resnet20", 6, in_chans=1, attn="se").eval(), x, torch.zeros(2, 1, dtype=torch.long),
                   "attention")
    with pytest.raises(ValueError, match="unknown explanation method"):
        class_maps(cbam, x, torch.zeros(2, 1, dtype=torch.long), "lime")


def test_integrated_gradients_and_occlusion_give_a_map_per_pair():
    torch.manual_seed(0)
    model = create_model("resnet20", 3, in_chans=1).eval()
    x = torch.randn(2, 1, 16, 16)
    for method in ("integrated_gradients", "occlusion"):
        maps = class_maps(model, x, torch.tensor([[0], [2]]), method)
        assert maps.shape == (2, 1, 16, 16) and torch.isfinite(maps).all() and maps.abs().sum() > 0


# The model's own attention maps


def resnet_with(attn: str) -> nn.Module:
    return create_model("resnet20", 4, in_chans=1, attn=attn)


MODELS = {
    **{f"attn={name}": (lambda n=name: resnet_with(n)) for name in ATTENTION.names()
       if ATTENTION.get(name).placement != "conv"},
    "sanet20 (sasa)": lambda: create_model("sanet20", 4, in_chans=1),
    "csra": lambda: create_model("resnet20", 4, in_chans=1, head="csra", head_kw={"heads": 2}),
    "query2label": lambda: create_model("resnet20", 4, in_chans=1, head="query2label"),
    "evanet20 (eva)": lambda: create_model("evanet20", 4, in_chans=1),
    "attention56 (ran)": lambda: create_model("attention56", 4, in_chans=1),
    "vit (2 blocks)": lambda: VisionTransformer(4, img_size=32, patch_size=8, in_chans=1, depth=2),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_attention_maps_of_every_module_and_head(name):
    torch.manual_seed(0)
    model = MODELS[name]().train()
    model.head.eval()  # a mixed state, to check that each module's mode is restored
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = model.eval()(x)
    model.train()
    model.head.eval()
    queries = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.3, 0.7]])
    maps = attention_maps(model, x, queries)
    assert model.training and not model.head.training, "every module's mode is restored"
    assert maps, f"{name} has attention but no maps"
    for key, value in maps.items():
        assert value.shape[0] == 2 and torch.isfinite(value).all(), key
        kind = key.rsplit(".", 1)[-1]
        if kind == "spatial":
            assert value.ndim == 4 and value.shape[1] == 1 and ((value > 0) & (value < 1)).all()
        elif kind in ("channel", "mix"):
            assert value.ndim == 2
        elif kind == "attention" and value.ndim == 5:  # self-attention: (B, heads, Q, H, W)
            assert value.shape[2] == 3
            if "head" not in key:
                assert torch.allclose(value.sum((3, 4)), torch.ones(()), atol=1e-5) or "blocks" in key
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), before)
    assert all(not m._forward_hooks for m in model.modules()), "no hook is left behind"


def test_gate_maps_are_what_the_forward_pass_applies():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    for name in ("se", "eca", "cbam", "bam", "eca_cbam", "eca_cbam_parallel", "adaptive_pool"):
        module = create_attn(name, 16).eval()
        model = nn.Sequential(module)
        maps = attention_maps(model, x)
        out = module(x)
        if name in ("se", "eca", "adaptive_pool"):
            torch.testing.assert_close(out, x * maps["0.channel"][:, :, None, None])
        elif name == "eca_cbam_parallel":
            torch.testing.assert_close(out, x * maps["0.channel"][:, :, None, None] * maps["0.spatial"])
        elif name == "bam":
            gate = module.gate(x)
            torch.testing.assert_close(maps["0.spatial"], gate.mean(1, keepdim=True))
        else:
            torch.testing.assert_close(out, x * maps["0.channel"][:, :, None, None] * maps["0.spatial"])


def test_self_attention_query_maps():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 7, 9)
    nonlocal_block = create_attn("nonlocal", 16, sub_sample=True).eval()
    maps = attention_maps(nn.Sequential(nonlocal_block), x, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))["0.attention"]
    affinity = nonlocal_block.affinity(x)
    assert maps.shape == (1, 1, 2, 4, 5)
    torch.testing.assert_close(maps[0, 0, 0].flatten(), affinity[0, 0])
    torch.testing.assert_close(maps[0, 0, 1].flatten(), affinity[0, 7 * 9 - 1])
    aa = AttentionAugmentedConv(16, 64, heads=4).eval()
    aa_maps = attention_maps(nn.Sequential(aa), x)["0.attention"]
    assert aa_maps.shape == (1, 4, 1, 7, 9)
    torch.testing.assert_close(aa_maps.sum((3, 4)), torch.ones(1, 4, 1))
    with pytest.raises(ValueError, match="fractions"):
        attention_maps(nn.Sequential(aa), x, torch.tensor([[1.5, 0.0]]))


@pytest.mark.parametrize("size", [(6, 6), (13, 11)])  # single block, and halo blocks
def test_sasa_explicit_softmax_equals_the_fused_path(size):
    torch.manual_seed(0)
    layer = SelfAttention2d(8, 16, kernel_size=5, heads=4, block_size=4).eval()
    x = torch.randn(2, 8, *size)
    h, w = size
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    weights = layer.attention_weights(x, rows, cols)  # (B, N, H·W, H, W)
    v = layer.qkv(x)[:, 32:].view(2, 4, 4, h, w)
    explicit = torch.einsum("bnqhw,bndhw->bndq", weights, v).reshape(2, 16, h, w)
    torch.testing.assert_close(explicit, layer(x), atol=1e-5, rtol=1e-4)
    outside = (rows[:, None, None] - torch.arange(h)[:, None]).abs().gt(2) | \
              (cols[:, None, None] - torch.arange(w)).abs().gt(2)
    assert (weights[:, :, outside] == 0).all(), "no weight outside the k×k window"


def test_vit_explicit_softmax_equals_the_fused_path():
    torch.manual_seed(0)
    model = VisionTransformer(4, img_size=16, patch_size=4, depth=2).eval()
    attn = model.blocks[0].attn
    tokens = torch.randn(2, 17, 192)
    weights = attn.weights(tokens)
    v = attn.qkv(tokens).view(2, 17, 3, 3, 64)[:, :, 2].transpose(1, 2)
    explicit = attn.proj((weights @ v).transpose(1, 2).reshape(2, 17, 192))
    torch.testing.assert_close(explicit, attn(tokens), atol=1e-5, rtol=1e-4)


# Faithfulness


class RegionModel(nn.Module):
    """Two logits: the mean of the top-left 4×4 pixels, and 0."""

    def forward(self, x):
        score = x[:, 0, :4, :4].mean((1, 2)) * 8
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_deletion_and_insertion_reward_the_map_of_the_evidence():
    x = torch.ones(3, 1, 16, 16)
    good = torch.zeros(3, 16, 16)
    good[:, :4, :4] = 1.0
    bad = 1 - good
    kw = dict(targets=torch.zeros(3, dtype=torch.long), substrate=torch.zeros(1), multilabel=False, steps=16)
    right = deletion_insertion(RegionModel(), x, good, **kw)
    wrong = deletion_insertion(RegionModel(), x, bad, **kw)
    assert (right["deletion"] < wrong["deletion"] - 20).all()
    assert right["deletion"].shape == (3,)
    flat = deletion_insertion(nn.Sequential(nn.Flatten(), nn.Linear(256, 2, bias=False)).requires_grad_(False)
                              .apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None),
                              x, good, **{**kw, "multilabel": True})
    torch.testing.assert_close(flat["deletion"], torch.full((3,), 50.0)), "constant sigmoid 0.5 → AUC 50"


def neighbour_mean(x: torch.Tensor, y: int, x0: int) -> torch.Tensor:
    """ROAD's weighted mean of the in-image neighbours of pixel (y, x0) of x (C, H, W), directly."""
    total, weight = torch.zeros(x.shape[0]), 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy or dx) and 0 <= y + dy < x.shape[1] and 0 <= x0 + dx < x.shape[2]:
                w = 1 / 6 if dy == 0 or dx == 0 else 1 / 12
                total, weight = total + w * x[:, y + dy, x0 + dx], weight + w
    return total / weight


def test_imputation_fills_removed_pixels_with_the_neighbour_mean():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    removed = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    removed[0, 0, 3, 4] = removed[1, 0, 0, 0] = True  # one interior pixel, one corner (3 neighbours)
    out = impute(x, removed)
    torch.testing.assert_close(out[0, :, 3, 4], neighbour_mean(x[0], 3, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, :, 0, 0], neighbour_mean(x[1], 0, 0), atol=1e-6, rtol=0)
    keep = ~removed.expand_as(x)
    assert torch.equal(out[keep], x[keep]), "kept pixels untouched"
    # many removed pixels, several adjacent: every one equals the mean of its (imputed) neighbours
    holes = torch.rand(2, 1, 8, 8) < 0.6
    filled = impute(x, holes)
    for i, y, x0 in holes[:, 0].nonzero().tolist():
        torch.testing.assert_close(filled[i, :, y, x0], neighbour_mean(filled[i], y, x0), atol=1e-5, rtol=0)
    assert torch.equal(filled[~holes.expand_as(x)], x[~holes.expand_as(x)])
    alone = torch.cat([impute(x[i:i + 1], holes[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(filled, alone, atol=1e-5, rtol=0), "batched: no image sees another"
    noise = torch.randn(2, 3, 8, 8)
    noisy = impute(x, holes, noise)
    torch.testing.assert_close(noisy - filled, torch.where(holes, noise, 0), atol=1e-6, rtol=0)


def test_imputation_fills_a_large_hole_harmonically():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 48, 48)
    removed = torch.zeros(16, 1, 48, 48, dtype=torch.bool)
    removed[..., 4:44, 4:44] = True  # a 40-px hole: the hard case for an iterative solver
    out = impute(x, removed)
    inner = out[0, 0, 4:44, 4:44]
    border = torch.cat([x[0, 0, 3, 3:45], x[0, 0, 44, 3:45], x[0, 0, 3:45, 3], x[0, 0, 3:45, 44]])
    assert inner.min() >= border.min() - 1e-5 and inner.max() <= border.max() + 1e-5, "harmonic: maximum principle"
    for y, x0 in ((4, 4), (20, 30), (43, 10)):
        torch.testing.assert_close(out[0, :, y, x0], neighbour_mean(out[0], y, x0), atol=1e-5, rtol=0)


class EvidenceModel(nn.Module):
    """Two logits: 8 × the mean of the top-left 4×4 pixels, and 1."""

    def forward(self, x):
        score = x[:, 0, :4, :4].mean((1, 2)) * 8
        return torch.stack([score, torch.ones_like(score)], 1)


def test_road_ranks_the_map_of_the_evidence_first():
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, :4, :4] = 1.0  # the evidence: a bright top-left square on black
    good = torch.zeros(4, 16, 16)
    good[:, :4, :4] = 1.0
    targets = torch.zeros(4, dtype=torch.long)
    kw = dict(targets=targets, noise=torch.full((1,), 0.01), multilabel=False, batch_size=3)
    scores = {name: road(EvidenceModel(), x, m, **kw)
              for name, m in (("good", good), ("bad", 1 - good), ("random", torch.rand(4, 16, 16)))}
    assert (scores["good"]["road_morf"] < scores["random"]["road_morf"]).all()
    assert (scores["random"]["road_morf"] <= scores["bad"]["road_morf"] + 1e-3).all()
    assert (scores["good"]["road_lerf"] > scores["random"]["road_lerf"]).all()
    assert scores["good"]["road_morf_curve"].shape == (4, len(ROAD_FRACTIONS))
    torch.testing.assert_close(scores["bad"]["road_morf_top1"], torch.full((4,), 100.0))
    torch.testing.assert_close(scores["good"]["road_morf_top1"], torch.zeros(4))
    multi = road(EvidenceModel(), x, good, **{**kw, "multilabel": True})
    assert "road_morf_top1" not in multi and multi["road_morf"].shape == (4,)


def test_box_masking_measures_the_label_signal_outside_the_boxes():
    x = torch.ones(5, 1, 16, 16)  # the model sees class 0 from the top-left square
    boxes = [box((0, 0, 4, 4))] * 4 + [box((8, 8, 12, 12))]
    result = box_masking(EvidenceModel(), [x[:3], x[3:]], torch.zeros(5, dtype=torch.long), boxes,
                         torch.zeros(1), multilabel=False)
    assert result == {"accuracy": 100.0, "masked_accuracy": pytest.approx(20.0), "chance": 50.0}
    multi = box_masking(EvidenceModel(), [x], torch.tensor([[1.0, 0.0]] * 5), boxes, torch.zeros(1), multilabel=True)
    assert multi["chance"] == 50.0 and multi["masked_accuracy"] == pytest.approx(20.0)


def test_present_and_predicted_classes_scored_separately_from_one_pass():
    pairs = torch.tensor([[0, 1], [0, 2], [1, 0], [2, 3]])  # the union, by image then class
    sets = {"present": pairs[[0, 2, 3]], "predicted": pairs[[1, 2, 3]]}
    maps = torch.stack([peak_map(5, 5), peak_map(0, 0), peak_map(6, 6), peak_map(15, 15)])
    per_pair = pair_scores(maps, [box((4, 4, 12, 12))] * 4, 1.0)
    aucs = {"gradcam": {"deletion": torch.tensor([10.0, 20.0])}}  # the pairs of image 0 (faithfulness_images=1)
    out = by_classes(sets, ["gradcam"], {"gradcam": 1.0}, 3, pairs, {"gradcam": per_pair}, aucs,
                     ExplainSettings(faithfulness_images=1))
    assert out["present"]["pairs"] == 3 and out["predicted"]["pairs"] == 3
    present, predicted = out["present"]["methods"]["gradcam"], out["predicted"]["methods"]["gradcam"]
    rows = torch.tensor([True, False, True, True])
    assert present["pointing_game"] == summarize_pairs({k: v[rows] for k, v in per_pair.items()})["pointing_game"]
    assert present["pointing_game"] == pytest.approx(200 / 3) and predicted["pointing_game"] == pytest.approx(100 / 3)
    assert present["deletion"] == 10.0 and predicted["deletion"] == 20.0 and present["faithfulness_pairs"] == 1


# Data and command line


def test_single_item_scenes(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    bundle = load_dataset("fashion-mnist-scenes-single", data_dir=fmnist_dir, val_size=10, n_train=50, n_test=20)
    assert bundle.task == "single" and bundle.test.targets.dtype == torch.long
    for split in ("train", "val", "test"):
        boxes = bundle.extras["boxes"][split]
        assert all(len(b) == 1 for b in boxes)
        assert torch.equal(getattr(bundle, split).targets, torch.stack([b[0, 4] for b in boxes]))
    multi = load_dataset("fashion-mnist-scenes", data_dir=fmnist_dir, val_size=10, n_train=50, n_test=20,
                         items=[2, 3])
    assert {len(b) for b in multi.extras["boxes"]["test"]} <= {2, 3}
    with pytest.raises(ValueError, match="items must be"):
        load_dataset("fashion-mnist-scenes", data_dir=fmnist_dir, val_size=10, n_train=50, n_test=20, items=[3, 1])


@pytest.fixture(scope="module")
def scene_run(fmnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTNVISION_CACHE", str(root / "cache"))
    cfg = TrainConfig(data="fashion-mnist-scenes-single", data_dir=str(fmnist_dir), attn="cbam",
                      data_kw={"n_train": 96, "n_test": 24}, val_size=32, epochs=1, batch_size=32, lr=0.05,
                      out=str(root / "run"), accelerator="cpu")
    train(cfg, progress=False)
    yield root / "run"
    mp.undo()


def test_cli_explain_writes_figures_and_scores(scene_run, fmnist_dir, tmp_path):
    out = tmp_path / "explain"
    result = CliRunner().invoke(app, ["explain", "--checkpoint", str(scene_run / "best.pt"), "--images", "all",
                                      "--figures", "3", "--faithfulness-images", "4", "--steps", "4",
                                      "--out", str(out), "--data-dir", str(fmnist_dir)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["test-00000.png", "test-00001.png", "test-00002.png"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["images"] == 24 and scores["pairs"] == 24 and scores["localization"]
    assert set(scores["methods"]) == {"gradcam", "attention", "random", "centre", "edge", "box"}
    for name in ("gradcam", "attention", "random"):
        m = scores["methods"][name]
        assert 0 <= m["pointing_game"] <= 100 and 0 <= m["deletion"] <= 100 and m["faithfulness_pairs"] == 4
        assert 0 <= m["road_morf"] <= 100 and 0 <= m["road_lerf_top1"] <= 100 and len(m["road_morf_curve"]) == 9
    assert scores["methods"]["box"]["energy_in_box"] == 100.0 and scores["methods"]["box"]["energy_lift"] > 1
    assert scores["tolerance"] == 4.3 and scores["classes"] == "present" and scores["deletion_substrate"] == "black"
    assert set(scores["box_masking"]) == {"accuracy", "masked_accuracy", "chance"}
    assert "gradcam" in result.output and "energy" in result.output and "Boxes masked to black" in result.output
    both = CliRunner().invoke(app, ["explain", "--checkpoint", str(scene_run / "best.pt"), "--images", "6",
                                    "--figures", "0", "--faithfulness-images", "2", "--steps", "2", "--classes",
                                    "present+predicted", "--deletion-substrate", "mean", "--out", str(out),
                                    "--data-dir", str(fmnist_dir)])
    assert both.exit_code == 0, both.output
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["by_classes"]) == ["present", "predicted"] and scores["classes"] == "present+predicted"
    assert scores["pairs"] == scores["by_classes"]["present"]["pairs"] == 6 and scores["deletion_substrate"] == "mean"
    assert "present classes" in both.output and "predicted classes" in both.output and "to mean" in both.output


def test_cli_explain_bad_input(scene_run, fmnist_dir, tmp_path):
    def run(*args):
        return CliRunner().invoke(app, ["explain", "--checkpoint", str(scene_run / "best.pt"), "--out",
                                        str(tmp_path / "x"), "--data-dir", str(fmnist_dir), *args])

    result = run("--classes", "Trouser,Hat")
    assert result.exit_code == 2 and "unknown class 'Hat'" in result.output and "Ankle boot" in result.output
    result = run("--method", "saliency")
    assert result.exit_code == 2 and "unknown explanation method" in result.output
    result = run("--images", "0")
    assert result.exit_code == 2 and "--images" in result.output
    missing = CliRunner().invoke(app, ["explain", "--checkpoint", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.output


def test_cli_explain_localization_needs_boxes(fmnist_dir, tmp_path):
    cfg = TrainConfig(data_dir=str(fmnist_dir), val_size=100, epochs=1, batch_size=64, out=str(tmp_path / "run"),
                      accelerator="cpu", train_subset=128)
    train(cfg, progress=False)
    result = CliRunner().invoke(app, ["explain", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--localization",
                                      "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "has no object boxes" in result.output
    result = CliRunner().invoke(app, ["explain", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--images", "4",
                                      "--figures", "1", "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "y")])
    assert result.exit_code == 0, result.output
    assert "pointing" not in json.dumps(json.loads((tmp_path / "y" / "scores.json").read_text())["methods"])


def test_explain_settings_are_checked_and_explain_stands_apart_from_the_trainer():
    for settings, message in ((ExplainSettings(images=0), "images must be >= 1"),
                              (ExplainSettings(split="dev"), "unknown split 'dev'"),
                              (ExplainSettings(deletion_substrate="grey"), "unknown deletion substrate 'grey'"),
                              (ExplainSettings(methods=("saliency",)), "unknown explanation method 'saliency'")):
        with pytest.raises(ValueError, match=message):
            settings.check()
    code = "import sys, attnvision.explain.run; assert 'attnvision.train' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("model, head, methods", [("resnet20", "sat", {"gradcam", "attention"}),
                                                  ("dram", None, {"attention"})], ids=["sat", "dram"])
def test_label_sequence_models_are_explained_by_the_step_that_emitted_each_class(fmnist_dir, tmp_path, monkeypatch,
                                                                                 model, head, methods):
    """Show-attend-tell's attention and DRAM's glimpses are their own class maps; DRAM has no feature
    map entering a head, so Grad-CAM is not among its default methods and asking for it is an error."""
    from attnvision.explain.run import explain_checkpoint

    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(data="fashion-mnist-scenes", data_dir=str(fmnist_dir), data_kw={"n_train": 96, "n_test": 16},
                      val_size=32, model=model, head=head, epochs=1, batch_size=32, lr=0.01, out=str(tmp_path / "run"),
                      accelerator="cpu")
    train(cfg, progress=False)
    settings = ExplainSettings(images=8, figures=1, faithfulness_images=2, steps=2, classes="present")
    scores = explain_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "explain", settings)
    assert set(scores["methods"]) == methods | {"random", "centre", "edge", "box"}
    assert 0 <= scores["methods"]["attention"]["pointing_game"] <= 100
    if model == "dram":
        with pytest.raises(ValueError, match="no feature map entering a head"):
            explain_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "x", replace(settings, methods=("gradcam",)))
