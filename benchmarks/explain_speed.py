"""Does attention-map capturing cost anything when off? And what does it cost when on?

    .venv/bin/python benchmarks/explain_speed.py [--rounds 5] [--batch 128]

resnet20 + CBAM on 64×64 single-channel images (the scene datasets' size), eval mode, no_grad:
forward passes timed in interleaved rounds on one model, (a) never explained, (b) right after an
``attention_maps`` call (hooks removed again), (c) an ``attention_maps`` call itself (the forward
pass plus every module's maps). Medians over rounds; per-round ratios to (a).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from attnvision import create_model
from attnvision.explain import attention_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="forward passes per timing")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model("resnet20", 10, in_chans=1, attn="cbam").eval().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 1, 64, 64).contiguous(memory_format=torch.channels_last)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        return (time.perf_counter() - t0) / args.repeats

    never = copy.deepcopy(model)  # the same weights, never explained
    with torch.no_grad():
        model(x), never(x)  # warm-up
        times = {"off (never explained)": [], "off (after a capture)": [], "capturing": []}
        for _ in range(args.rounds):
            times["off (never explained)"].append(timed(lambda: never(x)))
            times["capturing"].append(timed(lambda: attention_maps(model, x)))
            times["off (after a capture)"].append(timed(lambda: model(x)))
    never = times["off (never explained)"]
    print(f"resnet20 + cbam, batch {args.batch}, 64×64, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds × {args.repeats} passes; ratio = per-round time / the same round's "
          "never-explained time: median [min, max]")
    for name, values in times.items():
        ratios = [v / n for v, n in zip(values, never)]
        print(f"{name:24s} {1000 * statistics.median(values):8.1f} ms  {args.batch / statistics.median(values):7.0f} img/s"
              f"  ratio {statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]")

if __name__ == "__main__":
    main()
