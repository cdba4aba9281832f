"""The streaming path (image files decoded by DataLoader workers as batches are drawn) and the
batched augmentation recipes: the same samples as the in-memory path, disjoint shares per rank,
seeded recipes with the papers' crop statistics, and a 2-process DDP run that trains exactly as
the in-memory one does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnvision.data import Augmentation, BatchLoader, FileSplit, Split, first_images, load_dataset
from attnvision.data import images as images_module
from attnvision.data.augment import CSRA_RATIO, CSRA_SCALE, cutout


def write_image_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (18, 22)) -> Path:
    """train/ and test/ with 3 classes of random PNG images (lossless: decoding gives the pixels back)."""
    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("test", per_class // 2)):
        for c in ("ant", "bee", "cat"):
            (root / part / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folder"))


def both_paths(folder: Path, **kw):
    kw = {"img_size": 16, "val_size": 6, **kw}
    return load_dataset("image-folder", folder, stream=False, **kw), load_dataset("image-folder", folder, stream=True,
                                                                                 **kw)


def batches(split, recipe: str, workers: int = 0, epoch: int = 2, rank: int = 0, world_size: int = 1,
            train: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    augment = Augmentation(recipe, crop_pad=2, hflip=True, erase_prob=0.5, size=split.img_size)
    loader = BatchLoader(split, 5, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), train=train, augment=augment, seed=3, rank=rank,
                         world_size=world_size, workers=workers)
    loader.set_epoch(epoch)
    return list(loader)


def test_streamed_splits_hold_files_and_the_same_targets(folder):
    memory, streamed = both_paths(folder)
    assert not memory.streamed and streamed.streamed
    for part in ("train", "val", "test"):
        m, s = getattr(memory, part), getattr(streamed, part)
        assert isinstance(m, Split) and isinstance(s, FileSplit)
        assert torch.equal(m.targets, s.targets) and len(s.files) == len(m)
        assert torch.equal(s.load().images, m.images)
    assert streamed.img_size == memory.img_size == (16, 16) and streamed.in_chans == 3
    assert streamed.mean == pytest.approx(memory.mean) and streamed.std == pytest.approx(memory.std)  # < 2000 images


@pytest.mark.parametrize("recipe", ["basic", "csra", "q2l"])
def test_streaming_gives_the_in_memory_samples(folder, recipe):
    memory, streamed = both_paths(folder)
    expected = batches(memory.train, recipe)
    for workers in (0, 2):
        got = batches(streamed.train, recipe, workers)
        assert len(got) == len(expected) == 6  # 30 training images, batches of 5
        for (x1, y1), (x2, y2) in zip(expected, got):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    evaluated = batches(streamed.test, recipe, 1, train=False)
    assert torch.equal(torch.cat([x for x, _ in evaluated]), torch.cat([x for x, _ in batches(memory.test, recipe,
                                                                                             train=False)]))


def test_ranks_stream_disjoint_equal_shares(folder):
    _, streamed = both_paths(folder)
    split = FileSplit(streamed.train.files, torch.arange(len(streamed.train)), streamed.train.size)
    for epoch in (0, 1):
        shares = [torch.cat([y for _, y in batches(split, "basic", 1, epoch, rank, 2)]) for rank in (0, 1)]
        assert len(shares[0]) == len(shares[1]) == 15  # 30 images: 15 a rank, 3 whole batches of 5
        assert not set(shares[0].tolist()) & set(shares[1].tolist())
    evaluated = [torch.cat([y for _, y in batches(split, "basic", 0, 0, rank, 2, train=False)]) for rank in (0, 1)]
    assert sorted(torch.cat(evaluated).tolist()) == list(range(len(split)))  # evaluation sees every image once


def test_stream_is_chosen_when_the_decoded_images_would_not_fit(folder, monkeypatch):
    monkeypatch.setattr(images_module, "available_memory", lambda: 2 * 33 * 3 * 16 * 16)  # room for 33 images
    assert load_dataset("image-folder", folder, img_size=16, val_size=6).streamed  # 54 images
    assert not load_dataset("image-folder", folder, img_size=8, val_size=6).streamed  # a quarter of the bytes
    assert not load_dataset("image-folder", folder, img_size=16, val_size=6, stream=False).streamed


def test_stream_refused_for_datasets_held_in_memory():
    with pytest.raises(ValueError, match="always held in memory.*Drop --stream"):
        load_dataset("fashion-mnist", stream=True)


def test_stream_needs_files_that_exist(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="1 of 2 image files are missing"):
        images_module.image_split([folder / "train/ant/000.png", tmp_path / "gone.png"], torch.zeros(2), 16,
                                  stream=True)


# ---------------------------------------------------------------- the augmentation recipes


@pytest.mark.parametrize("recipe", ["basic", "csra", "q2l"])
def test_recipes_are_seeded_and_keep_shape_and_range(recipe):
    x = torch.randint(0, 256, (6, 3, 24, 20), dtype=torch.uint8)
    augment = Augmentation(recipe, crop_pad=2, hflip=True, size=(24, 20))
    first = augment(x, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and first.dtype == torch.float32
    assert 0 <= first.min() and first.max() <= 255
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(x, torch.Generator().manual_seed(2)))
    state = torch.get_rng_state()
    augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())  # torch's global generator is left as it was


def test_csra_crops_have_the_papers_area_and_aspect():
    augment = Augmentation("csra", size=(64, 64))
    augment(torch.zeros(4000, 1, 64, 64, dtype=torch.uint8), torch.Generator().manual_seed(0))
    box = augment.stage._params["src"]  # (B, 4, 2) corners (x, y), inclusive pixel coordinates
    width = box[:, 1, 0] - box[:, 0, 0] + 1
    height = box[:, 2, 1] - box[:, 1, 1] + 1
    area = width * height / 64**2
    assert CSRA_SCALE[0] - 0.03 <= area.min() and area.max() <= CSRA_SCALE[1]
    # area ~ U(0.7, 1) and log-ratio ~ U(log 3/4, log 4/3), kept when the crop fits in the image (as
    # torchvision's RandomResizedCrop redraws): the mean area of the kept crops is 0.800 (Monte Carlo, 10^6)
    assert area.mean() == pytest.approx(0.800, abs=0.01)
    ratio = width / height
    assert CSRA_RATIO[0] - 0.05 <= ratio.min() and ratio.max() <= CSRA_RATIO[1] + 0.05
    assert ratio.log().mean().abs() < 0.01  # log-uniform around 1


def test_cutout_boxes():
    x = torch.full((3000, 3, 40, 40), -1.0)
    out = cutout(x, 0.5, torch.Generator().manual_seed(0))
    inside = (out != -1).any(1)  # (B, H, W); a colour of 0 still differs from -1
    area = inside.flatten(1).sum(1)
    assert area.max() == 400 and area.min() >= 100  # 20 × 20, clipped to at least a corner's 10 × 10
    assert (out.amin((2, 3)) == out.amax((2, 3)))[area == 1600].all()  # one colour per box (none fills it)
    rows, cols = inside.any(2), inside.any(1)
    assert torch.equal(inside, rows[:, :, None] & cols[:, None, :])  # every box is a rectangle
    assert area.float().mean() == pytest.approx(400 * (1 - 10 / 40 / 2) ** 2, rel=0.03)  # centres uniform


# ---------------------------------------------------------------- the trainer on both paths


@pytest.mark.slow
def test_ddp_two_processes_stream_as_they_train_in_memory(folder, tmp_path):
    """Two gloo processes on the CPU train the same run from files and from memory: the same
    parameters on both ranks, the same scores and losses to the last digit."""
    def train(out: Path, *flags: str) -> dict:
        cmd = [sys.executable, "-m", "attnvision", "train", "--data", "image-folder", "--data-dir", str(folder),
               "--data-kw", '{"img_size": 16}', "--val-size", "6", "--model", "resnet20", "--epochs", "2",
               "--batch-size", "4", "--augment", "csra", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
               "--threads", "1", "--no-progress", "--out", str(out), *flags]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((out / "metrics.json").read_text())

    streamed = train(tmp_path / "streamed", "--stream", "--workers", "1")
    memory = train(tmp_path / "memory", "--no-stream")
    assert streamed["world_size"] == 2
    assert streamed["rank_param_checksums"][0] == streamed["rank_param_checksums"][1]
    assert streamed["rank_param_checksums"] == memory["rank_param_checksums"]
    assert streamed["test"] == memory["test"] and streamed["final"]["train_loss"] == memory["final"]["train_loss"]


# ---------------------------------------------------------------- WebDataset shards


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from attnvision.cli import app

    out = tmp_path_factory.mktemp("shards") / "fmt"
    result = CliRunner().invoke(app, ["shard", "--data", "image-folder", "--data-dir", str(folder), "--data-kw",
                                      '{"img_size": 16}', "--val-size", "6", "--shard-size", "7", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ("train 30 samples in 5 shards, val 6 samples in 1 shards, test 18 samples in 3 shards"
            in " ".join(result.output.split()))
    return out


def test_shards_hold_the_splits_and_stream_the_same_images(folder, shards):
    from attnvision.data import ShardSplit

    memory, _ = both_paths(folder)
    sharded = load_dataset("image-folder", shards, val_size=6)
    assert isinstance(sharded.train, ShardSplit) and sharded.train.counts == [7, 7, 7, 7, 2]
    assert sharded.class_names == memory.class_names and sharded.mean == pytest.approx(memory.mean)
    for part in ("val", "test"):  # evaluation reads the shards in order: the split's own order
        x, y = zip(*batches(getattr(sharded, part), "basic", 2, train=False))
        xm, ym = zip(*batches(getattr(memory, part), "basic", train=False))
        assert torch.equal(torch.cat(x), torch.cat(xm)) and torch.equal(torch.cat(y), torch.cat(ym))
    assert load_dataset("image-folder", shards, img_size=8).img_size == (8, 8)  # squished as decoded
    for split in (sharded.test, both_paths(folder)[1].test):  # explanations and exports take the first images
        first = first_images(split, 7)
        assert torch.equal(first.images, memory.test.images[:7]) and torch.equal(first.targets, memory.test.targets[:7])


@pytest.mark.parametrize("workers", [0, 2])
def test_shards_split_disjointly_over_ranks_every_epoch(shards, workers):
    """Ranks read disjoint shards and run the same number of steps; each epoch reshuffles."""
    split = load_dataset("image-folder", shards, val_size=6).train
    images = lambda epoch, rank: torch.cat([x for x, _ in batches(split, "basic", workers, epoch, rank, 2)])
    orders = []
    for epoch in (0, 1):
        ranks = [images(epoch, rank) for rank in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) > 0  # whole batches of 5, as many on each rank
        flat = [{tuple(im.flatten().tolist()) for im in r} for r in ranks]
        assert not flat[0] & flat[1]
        orders.append(ranks[0])
    assert not torch.equal(orders[0][:5], orders[1][:5])
    again = torch.cat([x for x, _ in batches(split, "basic", workers, 1, 0, 2)])
    assert torch.equal(again, orders[1])  # seeded: an epoch replays exactly


def test_shards_refuse_what_they_cannot_give(shards):
    with pytest.raises(ValueError, match="holds shards of 'image-folder', not 'voc2007'"):
        load_dataset("voc2007", shards)
    with pytest.raises(ValueError, match=r"val_size 3 \(shards: 6\)"):
        load_dataset("image-folder", shards, val_size=3)
    with pytest.raises(ValueError, match="always streamed: drop --no-stream"):
        load_dataset("image-folder", shards, stream=False)
    with pytest.raises(ValueError, match="read whole and in order: a subset"):
        load_dataset("image-folder", shards).train.subset(torch.arange(3))


@pytest.mark.slow
def test_ddp_two_processes_train_from_shards(shards, tmp_path):
    cmd = [sys.executable, "-m", "attnvision", "train", "--data", "image-folder", "--data-dir", str(shards),
           "--val-size", "6", "--model", "resnet20", "--epochs", "2", "--batch-size", "4", "--workers", "1",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--threads", "1", "--no-progress",
           "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(set(metrics["rank_param_checksums"])) == 1
    assert metrics["test"]["acc"] >= 0 and "streaming" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("source", ["files", "shards"])
def test_streamed_run_resumes_exactly(folder, shards, tmp_path, interrupted_after_first_epoch, source):
    """Killed after epoch 1 and resumed, a streamed run ends as the uninterrupted one does (resume
    is at epoch boundaries; the epoch's order and augmentation are functions of (seed, epoch))."""
    from dataclasses import replace

    from attnvision.checkpoint import load_checkpoint
    from attnvision.config import TrainConfig
    from attnvision.train import train

    cfg = TrainConfig(data="image-folder", data_dir=str(folder if source == "files" else shards),
                      data_kw={"img_size": 16}, val_size=6, stream=True, workers=1, augment="csra", epochs=2,
                      batch_size=4, accelerator="cpu", out=str(tmp_path / "a"))
    straight = train(cfg, progress=False)
    interrupted_after_first_epoch(replace(cfg, out=str(tmp_path / "b")))
    resumed = train(TrainConfig(), resume=tmp_path / "b", progress=False)
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in "ab")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed["test"] == straight["test"]


@pytest.mark.slow
def test_compare_trains_a_streamed_grid(shards, tmp_path):
    """The study streams as the trainer does: two cells from shards, reported."""
    from typer.testing import CliRunner

    from attnvision.cli import app

    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["compare", "--data", "image-folder", "--data-dir", str(shards), "--val-size", "6",
                                      "--attn", "none,se", "--epochs", "1", "--batch-size", "4", "--workers", "1",
                                      "--augment", "csra", "--localization", "none", "--jobs", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for cell in ("none-s0", "se-s0"):
        config = (out / "runs" / cell / "config.yaml").read_text()
        assert "augment: csra" in config and (out / "runs" / cell / "metrics.json").is_file()
    assert (out / "report.html").is_file()


def test_resized_shards_hold_the_training_size(folder, tmp_path):
    """``shard --resize`` stores the squished images: the same pixels from PNG sources."""
    from typer.testing import CliRunner

    from attnvision.cli import app

    out = tmp_path / "resized"
    result = CliRunner().invoke(app, ["shard", "--data", "image-folder", "--data-dir", str(folder), "--data-kw",
                                      '{"img_size": 16}', "--val-size", "6", "--resize", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "attnvision-shards.json").read_text())["resized"] is True
    memory, _ = both_paths(folder)
    assert torch.equal(first_images(load_dataset("image-folder", out, val_size=6).test, 18).images, memory.test.images)
