"""Where an attention module's training-step time goes: torch.profiler over resnet20 with and without it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gate_profile.py [--attn se eca cbam bam] [--batch 128] [--steps 5] [--top 12]

For each module: resnet20-small (1×28×28, the study's model) with the module and the plain network,
the same batch of random images, ``--steps`` training steps each (forward, cross-entropy, backward,
SGD-momentum update) under ``torch.profiler`` after one untimed warm-up step. Prints, per module,
the aten operators whose self CPU time per step grew the most over the plain network's: what the
module's extra time is made of (its own operators and the autograd nodes of their backward, e.g.
``MulBackward0`` and ``aten::mul`` for gate application, ``MaxBackward`` / ``aten::max`` for
channel max pooling). Self times exclude children, so the rows add up to the step's total.
Profiling adds overhead to every op call: read the columns as shares of a step, and take step-time
ratios from the interleaved ``module_overhead.py``, not from here. On the 2-core VM of issue 19 the
profiler inflated freshly allocating element-wise operators about tenfold (a CBAM block's
(128, 16, 28, 28) ``mul``, ``div`` and ``fill_``: 30-40 ms each profiled, 0.2-0.6 ms unprofiled), so
their shares here are too large; ``cbam_parts.py`` times a module's parts without the profiler.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from attnvision import create_model
from attnvision.attention import attn_label


def self_times_per_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, tuple[float, float]]:
    """{operator: (self CPU ms per step, calls per step)} of ``steps`` training steps of ``model``."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for event in prof.key_averages():
        totals[event.key][0] += event.self_cpu_time_total / 1000 / steps
        totals[event.key][1] += event.count / steps
    return {k: (ms, calls) for k, (ms, calls) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attn", nargs="+", default=["se", "eca", "cbam", "bam"], help="module specs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="operators listed per module")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    plain = self_times_per_step(create_model("resnet20", 10, in_chans=1), x, y, args.steps)
    plain_total = sum(ms for ms, _ in plain.values())
    print(f"batch {args.batch}, {args.steps} profiled steps, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"plain resnet20: {plain_total:.1f} ms self CPU time per step (profiled)\n")
    for spec in args.attn:
        times = self_times_per_step(create_model("resnet20", 10, in_chans=1, attn=spec), x, y, args.steps)
        total = sum(ms for ms, _ in times.values())
        extra = {op: times.get(op, (0.0, 0.0))[0] - plain.get(op, (0.0, 0.0))[0] for op in set(times) | set(plain)}
        print(f"### {attn_label(spec)}: {total:.1f} ms per step, {total / plain_total:.2f}× the plain network "
              f"(+{total - plain_total:.1f} ms)\n")
        print("| operator | ms / step | plain ms / step | extra ms | share of the extra | calls / step |")
        print("|---|---:|---:|---:|---:|---:|")
        for op in sorted(extra, key=extra.get, reverse=True)[:args.top]:
            ms, calls = times.get(op, (0.0, 0.0))
            share = extra[op] / (total - plain_total) if total > plain_total else float("nan")
            print(f"| `{op}` | {ms:.2f} | {plain.get(op, (0.0, 0.0))[0]:.2f} | {extra[op]:+.2f} | {100 * share:.0f}% | {calls:.0f} |")
        print()


if __name__ == "__main__":
    main()
