"""Training throughput of our trainer vs a bare PyTorch loop, same model, batch and run.

    .venv/bin/python benchmarks/throughput.py [--images 12800] [--repeats 3] [--data fashion-mnist-scenes]

Both sides train resnet20 (small) on Fashion-MNIST images (or 64×64 scenes) held in memory, batch
128, SGD with Nesterov momentum, channels_last. The bare loop is the least a training loop can do:
slice a pre-normalised tensor, forward, loss, backward, step. Our side is ``attnvision.train.train`` (Fabric,
batched crop+flip augmentation, LR schedule, NaN checks, progress accounting), whose images/s is
measured over its training steps only. Each side runs 2 epochs per repeat and is timed on the second
(warm) epoch; repeats alternate the two sides so that machine drift hits both alike, and the median
is reported. The last line is ``ratio: <ours / bare>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from attnvision import create_model
from attnvision.config import TrainConfig
from attnvision.evaluate import build_loss, load_bundle
from attnvision.train import build_optimizer, train


def bare_loop_images_per_s(cfg: TrainConfig) -> float:
    torch.manual_seed(cfg.seed)
    bundle = load_bundle(cfg)
    mean, std = torch.tensor(bundle.mean).view(1, -1, 1, 1), torch.tensor(bundle.std).view(1, -1, 1, 1)
    images = ((bundle.train.images.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
    targets = bundle.train.targets
    model = create_model(cfg.model, bundle.num_classes, in_chans=bundle.in_chans).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    loss_fn = build_loss(cfg, bundle.task)
    model.train()
    rate = 0.0
    for _ in range(2):
        order = torch.randperm(len(images))
        start = time.perf_counter()
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i:i + cfg.batch_size]
            loss = loss_fn(model(images[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rate = len(order) / (time.perf_counter() - start)
    return rate


def trainer_images_per_s(cfg: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        metrics = train(TrainConfig(**{**cfg.__dict__, "out": out}), progress=False)
    return metrics["final"]["images_per_s"]  # the second (warm) epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12800, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="fashion-mnist", choices=("fashion-mnist", "fashion-mnist-scenes"))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    cfg = TrainConfig(data=args.data, model="resnet20", epochs=2, batch_size=128, train_subset=args.images,
                      data_dir=args.data_dir, accelerator="cpu")
    bare, ours = [], []
    for r in range(args.repeats):
        bare.append(bare_loop_images_per_s(cfg))
        ours.append(trainer_images_per_s(cfg))
        print(f"repeat {r + 1}: bare {bare[-1]:.0f} img/s, attnvision {ours[-1]:.0f} img/s", flush=True)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, {args.data}, images/epoch {args.images}")
    print(f"bare loop: {b:.0f} img/s (median of {args.repeats})")
    print(f"attnvision trainer: {o:.0f} img/s (median of {args.repeats})")
    print(f"ratio: {o / b:.3f}")


if __name__ == "__main__":
    main()
