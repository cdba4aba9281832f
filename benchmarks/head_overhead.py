"""Training-step cost of each classification head over GAP on the same backbone, ratios in one run.

    .venv/bin/python benchmarks/head_overhead.py [--steps 3] [--rounds 3]

Forward + backward + SGD step of (backbone, input, classes): resnet50 at 224² with 20 classes
(VOC-like, batch 8) and resnet20-small on 1×64×64 Fashion-MNIST scenes with 10 classes (batch 64).
Rounds interleave the heads; each time is the median over rounds of the mean step time. The CSRA
paper reports +0.8% for 8 heads on ResNet-101 at 448² (GPU).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from attnvision import create_model
from attnvision.profile import train_step_time

SETUPS = (("resnet50", 3, 224, 20, 8), ("resnet20", 1, 64, 10, 64))
HEADS = (("gap", {}), ("csra", {"heads": 1}), ("csra", {"heads": 8}), ("query2label", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, {args.steps} steps × {args.rounds} rounds\n")
    print("| backbone | input | head | step (ms) | ratio to GAP |")
    print("|---|---|---|---:|---:|")
    for name, chans, size, classes, batch in SETUPS:
        x = torch.randn(batch, chans, size, size)
        y = (torch.rand(batch, classes) < 0.2).float()
        models = [create_model(name, classes, in_chans=chans, head=head, head_kw=kw) for head, kw in HEADS]
        times = [[] for _ in models]

        def loss(out: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(out, y)

        for _ in range(args.rounds):
            for i, model in enumerate(models):
                times[i].append(train_step_time(model, x, loss, args.steps))
        base = statistics.median(times[0])
        for (head, kw), t in zip(HEADS, times):
            label = head + (f" ({kw['heads']} heads)" if kw else "")
            print(f"| {name} | {batch}×{chans}×{size}² | {label} | {1000 * statistics.median(t):.1f} "
                  f"| {statistics.median(t) / base:.3f} |")


if __name__ == "__main__":
    main()
