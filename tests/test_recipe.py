"""The recipe tools of the trainer, each against a direct computation, and a resume that stays
bit-exact with all of them on: weight EMA, mixup and CutMix, Random Erasing, the linear and
one-cycle schedules, test-time flip averaging, gradient-norm clipping."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import attnvision.train as train_mod
from attnvision.checkpoint import load_checkpoint
from attnvision.cli import app
from attnvision.config import TrainConfig, read_config, recipe_names
from attnvision.data.augment import random_erase
from attnvision.data.mixing import Mixing, mix_batch
from attnvision.ema import WeightEMA
from attnvision.evaluate import evaluate_checkpoint, load_bundle, predict
from attnvision.train import lr_factor, train

ALL_TOOLS = dict(ema_decay=0.9, mixup_prob=0.3, cutmix_prob=0.3, erase_prob=0.5, tta_hflip=True, grad_clip=5.0,
                 schedule="linear", label_smoothing=0.1)


def tiny_config(data_dir, out, **kw) -> TrainConfig:
    return TrainConfig(**{"data_dir": str(data_dir), "val_size": 100, "train_subset": 256, "epochs": 2,
                          "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.5, "out": str(out), "accelerator": "cpu",
                          **kw})


def test_ema_equals_the_direct_recursion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, decay=0.8)
    expected = {k: v.clone().float() for k, v in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 3))  # moves the BatchNorm statistics and its step counter
        ema.update(model)
        for k, v in model.state_dict().items():
            expected[k] = 0.8 * expected[k] + 0.2 * v.float() if v.is_floating_point() else v.float()
    for k, v in ema.state_dict().items():
        assert torch.allclose(v.float(), expected[k], atol=1e-6), k
    assert ema.state_dict()["1.num_batches_tracked"] == 3
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_mixup_targets_sum_to_one_and_blend_like_the_images():
    rng = np.random.default_rng(0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 5, (16,))
    mixed, targets = mix_batch(x, y, Mixing(mixup_prob=1.0, mixup_alpha=0.4), 5, "single", rng)
    replay = np.random.default_rng(0)  # mix_batch's draws: the choice, π, then λ
    replay.random()
    order = torch.from_numpy(replay.permutation(16))
    lam = replay.beta(0.4, 0.4)
    one_hot = torch.eye(5)
    assert torch.allclose(targets, lam * one_hot[y] + (1 - lam) * one_hot[y[order]], atol=1e-6)
    assert torch.allclose(targets.sum(1), torch.ones(16))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[order], atol=1e-6)


def test_cutmix_pastes_one_box_and_weighs_targets_by_its_area():
    x, y = torch.arange(4.0)[:, None, None, None].expand(4, 1, 10, 10).clone(), torch.arange(4)
    mixed, targets = mix_batch(x, y, Mixing(cutmix_prob=1.0), 4, "single", np.random.default_rng(3))
    changed = mixed != x  # pixels taken from another image
    area = changed[0, 0].float().mean().item()
    rows, cols = changed[0, 0].any(1).nonzero().flatten(), changed[0, 0].any(0).nonzero().flatten()
    assert changed[0, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle
    assert (changed.flatten(1).float().mean(1) == area).all()  # the same box in every image
    assert torch.allclose(targets[0, 0], torch.tensor(1 - area)) and torch.allclose(targets.sum(1), torch.ones(4))


def test_mixing_keeps_ignored_multilabel_entries_and_unmixed_batches_unchanged():
    y = torch.tensor([[1, 0, -1], [0, 1, 1]])
    _, targets = mix_batch(torch.randn(2, 1, 4, 4), y, Mixing(mixup_prob=1.0), 3, "multilabel",
                           np.random.default_rng(1))
    assert (targets[:, 2] == -1).all() and ((targets[:, :2] >= 0) & (targets[:, :2] <= 1)).all()
    x = torch.randn(2, 1, 4, 4)
    same_x, same_y = mix_batch(x, y, Mixing(), 3, "multilabel", np.random.default_rng(1))
    assert same_x is x and same_y is y


def test_random_erasing_fills_one_rectangle_per_image_with_noise():
    x = torch.full((64, 3, 20, 20), 300.0)  # above any erased value, so erased pixels show
    erased = random_erase(x, 1.0, torch.Generator().manual_seed(0))
    mask = erased[:, 0] != 300
    assert (mask == (erased != 300).all(1)).all()  # every channel of an erased pixel
    assert ((erased[erased != 300] >= 0) & (erased[erased != 300] <= 255)).all()
    share = mask.flatten(1).float().mean(1)
    assert (share > 0).all() and (share <= 0.45).all() and share.mean() > 0.1  # ≤ 40% before sides are rounded
    for m in mask:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert torch.equal(random_erase(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_linear_and_onecycle_schedules():
    linear = lr_factor(TrainConfig(epochs=4, warmup_epochs=1, schedule="linear"), 10)
    assert [linear(s) for s in (9, 10, 25, 40)] == pytest.approx([1.0, 1.0, 0.5, 0.0])
    onecycle = lr_factor(TrainConfig(epochs=10, warmup_epochs=0, schedule="onecycle"), 10)
    assert onecycle(0) == pytest.approx(1 / 25) and onecycle(30) == pytest.approx(1.0)
    assert onecycle(15) == pytest.approx(1 / 25 + (1 - 1 / 25) / 2)
    assert onecycle(100) == pytest.approx(1 / 25e4) and max(onecycle(s) for s in range(100)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warms up by itself"):
        TrainConfig(schedule="onecycle").validate()
    with pytest.raises(ValueError, match="sum to at most 1"):
        TrainConfig(mixup_prob=0.6, cutmix_prob=0.6).validate()


def test_step_schedule_decays_at_milestones():
    cfg = TrainConfig(epochs=8, warmup_epochs=0, schedule="step", milestones=[4, 6], step_gamma=0.1)
    factor = lr_factor(cfg, 10)
    assert [factor(s) for s in (0, 39, 40, 59, 60, 79)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    every = lr_factor(TrainConfig(epochs=8, warmup_epochs=0, schedule="step", step_epochs=3), 10)
    assert [every(s) for s in (29, 30, 60)] == pytest.approx([1, 0.1, 0.01])  # no milestones: every step-epochs
    cfg.validate()
    for milestones, message in (([6, 4], "increasing"), ([4, 8], "increasing"), ([0, 4], "increasing"),
                                ([4, 4], "increasing"), ([2.5], "increasing")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(epochs=8, schedule="step", milestones=milestones).validate()
    with pytest.raises(ValueError, match="need --schedule step"):
        TrainConfig(milestones=[4]).validate()


def test_milestones_is_a_comma_separated_flag(fmnist_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data-dir", str(fmnist_dir), "--val-size", "100", "--train-subset",
                                      "64", "--epochs", "2", "--batch-size", "32", "--schedule", "step",
                                      "--milestones", "1", "--warmup-epochs", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["config"]["milestones"] == [1]


def test_flip_averaging_is_the_mean_of_both_views():
    from lightning.fabric import Fabric

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x, y = torch.randn(5, 1, 8, 8), torch.arange(5) % 3
    logits, _ = predict(Fabric(accelerator="cpu", devices=1), model, [(x, y)], hflip=True)
    with torch.no_grad():
        assert torch.allclose(logits, (model(x) + model(x.flip(3))) / 2)


def test_gradient_clipping_bounds_each_step(fmnist_dir, tmp_path):
    def moved(out: str, **kw) -> float:
        cfg = tiny_config(fmnist_dir, tmp_path / out, epochs=1, weight_decay=0.0, warmup_epochs=0.0, **kw)
        torch.manual_seed(0)
        before = train_mod.build_model(cfg, train_mod.load_bundle(cfg)).state_dict()
        train(cfg, progress=False)
        after = load_checkpoint(tmp_path / out / "last.pt")["model"]
        return max((after[k].float() - before[k].float()).abs().max().item() for k in before if "weight" in k)

    # 8 steps of SGD with Nesterov momentum 0.9: each moves a weight by at most lr·(1 + 0.9·10)·‖g‖
    assert moved("clipped", grad_clip=1e-6) < 8 * 10 * 0.05 * 1e-6
    assert moved("free") > 1e-3


def test_ema_run_is_selected_tested_and_evaluated_with_the_average(fmnist_dir, tmp_path):
    metrics = train(tiny_config(fmnist_dir, tmp_path / "run", ema_decay=0.9, tta_hflip=True), progress=False)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert "ema" in best and not all(torch.equal(best["ema"][k], best["model"][k]) for k in best["model"])
    assert "val_raw_acc" in metrics["final"]
    assert evaluate_checkpoint(tmp_path / "run" / "best.pt")["acc"] == pytest.approx(metrics["test"]["acc"], abs=1e-9)


def test_resume_is_bit_exact_with_every_tool_on(fmnist_dir, tmp_path, interrupted_after_first_epoch):
    straight = train(tiny_config(fmnist_dir, tmp_path / "a", **ALL_TOOLS), progress=False)
    interrupted_after_first_epoch(tiny_config(fmnist_dir, tmp_path / "b", **ALL_TOOLS))
    resumed = train(TrainConfig(), resume=tmp_path / "b", progress=False)
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in "ab")
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert resumed["test"] == straight["test"] and a["history"] == [
        {**row, "epoch_time_s": a["history"][i]["epoch_time_s"], "images_per_s": a["history"][i]["images_per_s"]}
        for i, row in enumerate(b["history"])]
    assert math.isfinite(straight["test"]["loss"])


def test_every_tool_is_a_train_flag():
    from typer.testing import CliRunner

    from attnvision.cli import app

    help_text = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output.split())
    for flag in ("--ema-decay", "--mixup-prob", "--mixup-alpha", "--cutmix-prob", "--cutmix-alpha", "--erase-prob",
                 "--tta-hflip", "--grad-clip", "onecycle"):
        assert flag in help_text, flag
    assert replace(TrainConfig(), **ALL_TOOLS).validate() is None


def test_permuted_labels_shuffle_the_training_targets_only(fmnist_dir):
    plain = load_bundle(TrainConfig(data_dir=str(fmnist_dir), val_size=100, train_subset=256))
    permuted = load_bundle(TrainConfig(data_dir=str(fmnist_dir), val_size=100, train_subset=256, permute_labels=True))
    assert torch.equal(permuted.train.images, plain.train.images) and torch.equal(permuted.val.targets, plain.val.targets)
    assert torch.equal(permuted.train.targets.sort().values, plain.train.targets.sort().values)  # the same labels ...
    assert (permuted.train.targets != plain.train.targets).float().mean() > 0.7  # ... mostly on other images


def test_packaged_recipes_are_config_names(fmnist_dir, tmp_path):
    assert {"fashion-mnist-converged", "scenes-converged"} <= set(recipe_names())
    recipe = read_config("fashion-mnist-converged")
    assert (recipe["epochs"], recipe["schedule"], recipe["label_smoothing"]) == (20, "linear", 0.1)
    TrainConfig.from_dict(read_config("scenes-converged")).validate()
    result = CliRunner().invoke(app, ["train", "--config", "fashion-mnist-convergd"])
    assert result.exit_code == 2 and "neither a file" in result.output and "fashion-mnist-converged" in result.output
    result = CliRunner().invoke(app, ["train", "--config", "fashion-mnist-converged", "--data-dir", str(fmnist_dir),
                                      "--epochs", "1", "--train-subset", "128", "--val-size", "100", "--threads", "1",
                                      "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "schedule: linear" in saved and "tta_hflip: true" in saved and "epochs: 1" in saved
