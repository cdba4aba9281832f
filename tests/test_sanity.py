"""Sanity checks (Adebayo et al. 2018): similarity measures against references, a gradient map that
changes with the weights and an edge detector that does not, BatchNorm re-estimation, the
cascade's order, and ``attnvision explain --sanity`` end to end."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import nn
from typer.testing import CliRunner

from attnvision import create_model
from attnvision.backbones.vit import VisionTransformer
from attnvision.checkpoint import load_checkpoint
from attnvision.cli import app
from attnvision.config import TrainConfig
from attnvision.evaluate import load_run
from attnvision.data import Split, BatchLoader
from attnvision.explain.cam import pair_maps
from attnvision.explain.run import ExplainSettings
from attnvision.explain.sanity import (FAIL_SPEARMAN, cascade, cascade_steps, method_maps, reestimate_batchnorm,
                                       similarity, spearman, ssim)
from attnvision.train import train


def smooth_maps(n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Blurred noise (n, size, size): maps with structure at several scales."""
    noise = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    return F.avg_pool2d(noise, 5, 1, 2)[:, 0]


# Similarity measures


def test_spearman_equals_scipy_on_absolute_values_with_ties():
    a = torch.randn(6, 12, 12, generator=torch.Generator().manual_seed(1))
    b = a + torch.randn(6, 12, 12, generator=torch.Generator().manual_seed(2))
    a, b = a.round(decimals=1), b.round()  # many ties, including ties of |x| between x and -x
    ours = spearman(a, b)
    for i in range(len(a)):
        expected = stats.spearmanr(a[i].abs().flatten().numpy(), b[i].abs().flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(expected, abs=1e-12)
    assert torch.allclose(spearman(a, -a), torch.ones(6, dtype=torch.float64)), "absolute values: sign ignored"
    constant = spearman(torch.zeros(1, 12, 12), b[:1])
    assert constant.isnan().all(), "a constant map has no ranks to correlate"
    result = similarity(torch.cat([a[:2], torch.zeros(1, 12, 12)]), torch.cat([b[:2], b[:1]]))
    assert result["undefined_pairs"] == 1 and result["spearman"] == pytest.approx(ours[:2].mean().item())


def test_ssim_of_identical_maps_is_one_of_a_negative_is_low_and_matches_a_reference():
    a, b = smooth_maps(4, seed=3), smooth_maps(4, seed=4)
    assert torch.allclose(ssim(a, a), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(ssim(a, 5 * a + 2), torch.ones(4, dtype=torch.float64)), "min-max scaled first"
    assert (ssim(a, -a) < 0).all(), "a map and its negative are anti-correlated structures"
    # reference: the same formula with scipy's Gaussian filter (radius 5 = window 11), border cropped
    def scaled(m):
        return (m - m.min()) / (m.max() - m.min())

    for i in range(len(a)):
        x, y = scaled(a[i].double().numpy()), scaled(b[i].double().numpy())
        blur = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ref = ((2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean()
        assert ssim(a[i:i + 1], b[i:i + 1]).item() == pytest.approx(ref, abs=1e-10)
    small = ssim(torch.rand(2, 6, 6), torch.rand(2, 6, 6))  # a window that does not fit shrinks to 5
    assert small.shape == (2,) and small.abs().max() <= 1


# A map that depends on the weights and one that does not


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(F.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model.eval()
    model(x).gather(1, y[:, None]).sum().backward()
    return x.grad.abs().sum(1)


def sobel(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Edge magnitude of the image (the model is ignored)."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    g = F.conv2d(x.sum(1, keepdim=True), torch.stack([kx, kx.T])[:, None], padding=1)
    return g.square().sum(1).sqrt()


def test_gradient_map_changes_with_the_weights_an_edge_detector_does_not():
    torch.manual_seed(0)
    model, fresh = TinyNet(), TinyNet()
    x = torch.rand(8, 1, 16, 16)
    x[:, :, 4:12, 4:12] += 1.0  # a square: edges to detect
    y = torch.arange(8) % 3
    steps = cascade_steps(model, x)
    assert [name for name, _ in steps] == ["head", "block.0+block.1", "conv1+bn1"]
    before = {"gradient": input_gradient(model, x, y), "sobel": sobel(model, x, y)}
    *_, (last, randomized) = cascade(model, fresh, steps, [torch.rand(16, 1, 16, 16)])
    after = {"gradient": input_gradient(randomized, x, y), "sobel": sobel(randomized, x, y)}
    gradient, edges = (similarity(before[k], after[k]) for k in ("gradient", "sobel"))
    assert gradient["spearman"] < FAIL_SPEARMAN - 0.2, gradient
    assert edges["spearman"] == pytest.approx(1.0) and edges["ssim"] == pytest.approx(1.0)
    assert torch.equal(input_gradient(model, x, y), before["gradient"]), "the cascade works on a copy"


# BatchNorm statistics


def test_batchnorm_reestimation_gives_the_statistics_of_the_data_it_saw():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.BatchNorm2d(2))
    for bn in model:
        bn.running_mean.fill_(7.0)
        bn.running_var.fill_(0.5)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 2, 5, 5, generator=gen) * 3 + 2 for _ in range(3)]
    reestimate_batchnorm(model, [model[0]], batches)
    data = torch.cat(batches)
    assert torch.allclose(model[0].running_mean, data.mean((0, 2, 3)), atol=1e-5)
    batch_vars = torch.stack([b.transpose(0, 1).flatten(1).var(1) for b in batches])  # unbiased, per batch
    assert torch.allclose(model[0].running_var, batch_vars.mean(0), atol=1e-4)
    assert model[0].momentum == 0.1 and not model.training and not model[0].training
    assert torch.equal(model[1].running_mean, torch.full((2,), 7.0)), "layers not re-drawn keep their statistics"


# The cascade's order


def perturbed(model: nn.Module) -> nn.Module:
    """The model with every parameter moved off its initial value (a stand-in for training)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1 + 0.05)
    return model


def changed_parameters(a: nn.Module, b: nn.Module) -> set[str]:
    theirs = dict(b.named_parameters())
    return {n for n, p in a.named_parameters() if not torch.equal(p, theirs[n])}


def assert_top_down(model: nn.Module, fresh: nn.Module, x: torch.Tensor, names: list[str]) -> None:
    steps = cascade_steps(model, x)
    assert [name for name, _ in steps] == names
    redrawn: list[str] = []
    for (name, units), (yielded, current) in zip(steps, cascade(model, fresh, steps, [x])):
        assert yielded == name
        redrawn += units
        expected = {n for n, _ in model.named_parameters() if any(n == u or n.startswith(u + ".") for u in redrawn)}
        assert changed_parameters(model, current) == expected, name
        fresh_params = dict(fresh.named_parameters())
        assert all(torch.equal(p, fresh_params[n]) for n, p in current.named_parameters() if n in expected)
    assert expected == {n for n, _ in model.named_parameters()}, "the last step re-draws everything"


def test_cascade_is_top_down_on_resnet20_and_a_vit():
    torch.manual_seed(0)
    model, fresh = perturbed(create_model("resnet20", 5, in_chans=1)), create_model("resnet20", 5, in_chans=1)
    blocks = [f"layer{s}.{b}" for s in (3, 2, 1) for b in (2, 1, 0)]
    assert_top_down(model, fresh, torch.rand(4, 1, 16, 16), ["head", *blocks, "conv1+bn1"])
    steps = cascade(model, fresh, cascade_steps(model, torch.rand(2, 1, 16, 16)), [torch.rand(4, 1, 16, 16)])
    name, half = next(islice(steps, 4, None))  # head and layer3.2 … layer2.2 re-drawn
    assert name == "layer2.2"
    assert torch.equal(half.layer1[0].bn1.running_var, model.layer1[0].bn1.running_var), "below: trained statistics"
    assert not torch.equal(half.layer3[0].bn1.running_var, model.layer3[0].bn1.running_var), "re-drawn: re-estimated"

    def vit():
        return VisionTransformer(4, img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=3, num_heads=2)

    model, fresh = perturbed(vit()), vit()
    assert_top_down(model, fresh, torch.rand(2, 1, 16, 16),
                    ["head", "norm", "blocks.2", "blocks.1", "blocks.0", "patch_embed+cls_token+pos_embed"])


def test_stage_attention_joins_the_cascade_after_its_stage():
    model = create_model("resnet20", 5, in_chans=1, attn="bam", layers=(1, 1, 1))
    names = [name for name, _ in cascade_steps(model, torch.rand(2, 1, 16, 16))]
    assert names == ["head", "layer3.0", "stage_attn.layer2", "layer2.0", "stage_attn.layer1", "layer1.0", "conv1+bn1"]


def test_method_maps_follow_the_pairs_across_batches():
    torch.manual_seed(0)
    model = create_model("resnet20", 3, in_chans=1, layers=(1, 1, 1)).eval()
    split = Split(torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8), torch.zeros(5, dtype=torch.long))
    loader = BatchLoader(split, 2, mean=(0.5,), std=(0.25,), train=False, device=torch.device("cpu"))
    pairs = torch.tensor([[4, 1], [0, 2], [3, 0], [0, 1]])  # not in image order, image 1 and 2 without pairs
    maps = method_maps(model, loader, pairs, ("gradcam",))["gradcam"]
    x = torch.cat([x for x, _ in loader])
    assert torch.allclose(maps, pair_maps(model, x, pairs, "gradcam"), atol=1e-6)


# The command


@pytest.fixture(scope="module")
def scene_runs(fmnist_dir, tmp_path_factory):
    """A tiny trained run on scenes with boxes, and a copy trained on for a few steps on permuted labels."""
    root = tmp_path_factory.mktemp("sanity")
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTNVISION_CACHE", str(root / "cache"))
    cfg = TrainConfig(data="fashion-mnist-scenes-single", data_dir=str(fmnist_dir), attn="cbam",
                      data_kw={"n_train": 96, "n_test": 24}, val_size=32, epochs=1, batch_size=32, lr=0.05,
                      model_kw={"layers": [1, 1, 1]}, out=str(root / "run"), accelerator="cpu")
    train(cfg, progress=False)
    best = root / "run" / "best.pt"
    _, bundle, model, _, state = load_run(best)
    images = (bundle.train.images.float() / 255 - torch.tensor(bundle.mean).view(1, -1, 1, 1)) / \
        torch.tensor(bundle.std).view(1, -1, 1, 1)
    labels = bundle.train.targets[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(10):
        rows = torch.arange(step * 16, step * 16 + 16) % len(images)
        optimizer.zero_grad()
        F.cross_entropy(model(images[rows]), labels[rows]).backward()
        optimizer.step()
    reference = {**load_checkpoint(best), "model": model.state_dict()}
    reference.pop("ema", None)
    torch.save(reference, root / "permuted.pt")
    yield best, root / "permuted.pt"
    mp.undo()


def test_cli_explain_sanity_end_to_end(scene_runs, fmnist_dir, tmp_path):
    best, permuted = scene_runs
    out = tmp_path / "explain"
    result = CliRunner().invoke(app, ["explain", "--checkpoint", str(best), "--images", "6", "--figures", "0",
                                      "--faithfulness-images", "0", "--out", str(out), "--data-dir", str(fmnist_dir),
                                      "--sanity", "--sanity-reference", str(permuted)])
    assert result.exit_code == 0, result.output
    sanity = json.loads((out / "scores.json").read_text())["sanity"]
    assert set(sanity) == {"gradcam", "attention"}
    for method, checks in sanity.items():
        assert [s["randomized"] for s in checks["steps"]] == ["head", "layer3.0", "layer2.0", "layer1.0", "conv1+bn1"]
        for s in checks["steps"]:
            assert -1 <= s["ssim"] <= 1 and (np.isnan(s["spearman"]) or -1 <= s["spearman"] <= 1)
        assert isinstance(checks["fails_sanity"], bool)
        assert 0 <= checks["randomized_model_scores"]["energy_in_box"] <= 100
        assert -1 <= checks["data_randomization"]["ssim"] <= 1
    assert "sanity checks" in result.output and "layer2.0" in result.output and "permuted labels" in result.output
    alone = CliRunner().invoke(app, ["explain", "--checkpoint", str(best), "--sanity-reference", str(permuted)])
    assert alone.exit_code == 2 and "only used with --sanity" in alone.output


def test_sanity_settings_default_off():
    assert ExplainSettings().sanity is False and ExplainSettings().sanity_reference is None
