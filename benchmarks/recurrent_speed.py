"""Training speed of the recurrent attention models beside resnet20 heads on Fashion-MNIST scenes,
as ratios to resnet20 + GAP in one interleaved run (issue 18).

    .venv/bin/python benchmarks/recurrent_speed.py [--batch 128] [--steps 3] [--rounds 5]

Forward + loss + backward + SGD step (``profile.train_step_time``) on the first ``--batch``
training scenes (64×64, 1-4 items) with their targets: resnet20 (small) with the GAP, CSRA (8
heads) and show-attend-tell heads, and DRAM, each with its defaults. BCE for the heads that take an
external loss; DRAM and show-attend-tell train on their own objective (``label_sequence``).
Rounds interleave the models; each time is the median over rounds of the mean step time, and
images/s is the batch over it. Parameters and MACs (``profile.MACS_CONVENTION``) at 1×64×64.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from attnvision import create_model
from attnvision.data import load_dataset
from attnvision.profile import count_macs, count_params, train_step_time

MODELS = (("resnet20 + GAP", "resnet20", "gap", {}), ("resnet20 + CSRA (8 heads)", "resnet20", "csra", {"heads": 8}),
          ("resnet20 + show-attend-tell", "resnet20", "sat", {}), ("DRAM", "dram", None, {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    bundle = load_dataset("fashion-mnist-scenes", val_size=5000)
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    x = (bundle.train.images[:args.batch].float() / 255 - mean) / std
    y = bundle.train.targets[:args.batch]
    models = [create_model(model, bundle.num_classes, in_chans=1, head=head, **({"head_kw": kw} if kw else {}))
              for _, model, head, kw in MODELS]

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y)

    times = [[] for _ in models]
    for model in models:  # untimed warm-up
        train_step_time(model, x, loss, 1, targets=y)
    for _ in range(args.rounds):
        for i, model in enumerate(models):
            times[i].append(train_step_time(model, x, loss, args.steps, targets=y))
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch}, "
          f"{args.steps} steps × {args.rounds} rounds\n")
    print("| model | params | MMACs | step (ms) | train img/s | ratio to GAP |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(times[0])
    for (label, *_), model, t in zip(MODELS, models, times):
        step = statistics.median(t)
        print(f"| {label} | {count_params(model):,} | {count_macs(model, (1, 64, 64)) / 1e6:.1f} | {1000 * step:.0f} "
              f"| {args.batch / step:.0f} | {step / base:.2f} |")


if __name__ == "__main__":
    main()
