"""Where CBAM's training-step time goes, part by part, against the block it sits in: each part's
forward + backward timed alone at the three resnet20 stage shapes, interleaved in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cbam_parts.py [--batch 128] [--repeats 10] [--rounds 5]

Parts, on a channels-last (B, C, H, W) feature map as in the study's models (each returns a tensor
whose sum is back-propagated to its inputs):
- block: the plain resnet20 BasicBlock (two 3×3 convs, BNs, ReLU, shortcut): what the gate is added to;
- SE: the whole SE module (``create_attn("se", C)``), for comparison;
- channel product: x ⊙ c for a (B, C, 1, 1) gate c, the part every channel gate cannot avoid
  (forward: read x, write y; backward: g ⊙ c, and Σ_hw g ⊙ x for c's gradient);
- channel gate: x ⊙ σ(MLP(avg) + MLP(max)) (CBAM's M_c, ``ChannelGate``), pooling and product included;
- channel z-pool: [max_c ; mean_c], the spatial gate's descriptor (``pooling.z_pool``);
- 7×7 conv: BN(conv 2→1, 7×7) on the pooled (B, 2, H, W) maps, then σ;
- spatial product: x ⊙ s for a (B, 1, H, W) map s, broadcast along the channel (innermost) axis;
- CBAM: the whole module;
- and, forward only under ``torch.no_grad`` (serving): the channel z-pool as ``z_pool`` computes it
  there (``amax``) against ``max(dim)`` and ``mean(dim)`` stacked.
Times are medians over rounds of the mean of ``--repeats`` calls; ratios divide by the block's.
The parts' sum exceeds the module's time by what they share. ``torch.profiler`` is not used: on
this machine (a 2-core VM) it inflated every freshly allocating element-wise operator of a CBAM
block about tenfold (30-40 ms for a (128, 16, 28, 28) ``mul`` that takes 0.2-0.6 ms unprofiled).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnvision import create_attn
from attnvision.attention.pooling import z_pool
from attnvision.backbones.resnet import BasicBlock

STAGES = ((16, 28), (32, 14), (64, 7))


def fwd_bwd_ms(fn, inputs: list[torch.Tensor], repeats: int) -> float:
    """Mean milliseconds of ``fn(*inputs).sum().backward()`` over ``repeats`` calls; forward only,
    under ``torch.no_grad``, where no input requires a gradient."""
    start = time.perf_counter()
    for _ in range(repeats):
        if any(t.requires_grad for t in inputs):
            fn(*inputs).sum().backward()
        else:
            with torch.no_grad():
                fn(*inputs)
    return 1000 * (time.perf_counter() - start) / repeats


def parts(channels: int, side: int, batch: int) -> dict[str, tuple]:
    """{part: (function, inputs)} at one stage's shape."""
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=cl).requires_grad_()
    pooled = torch.randn(batch, 2, side, side).contiguous(memory_format=cl).requires_grad_()
    s = torch.rand(batch, 1, side, side).contiguous(memory_format=cl).requires_grad_()
    c = torch.rand(batch, channels, 1, 1).requires_grad_()
    block = BasicBlock(channels, channels).to(memory_format=cl)
    cbam = create_attn("cbam", channels)
    return {
        "block": (block, [x]),
        "SE": (create_attn("se", channels), [x]),
        "channel product": (lambda t, g: t * g, [x, c]),
        "channel gate": (lambda t: t * cbam.channel.gate(t), [x]),
        "channel z-pool": (lambda t: z_pool(t, 1), [x]),
        "7×7 conv": (lambda p: cbam.spatial.bn(cbam.spatial.conv(p)).sigmoid(), [pooled]),
        "spatial product": (lambda t, m: t * m, [x, s]),
        "CBAM": (cbam, [x]),
        "channel z-pool, forward only": (lambda t: z_pool(t, 1), [x.detach()]),
        "max(dim) + mean(dim), forward only": (lambda t: torch.stack([t.max(1).values, t.mean(1)], 1), [x.detach()]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    stages = {(c, s): parts(c, s, args.batch) for c, s in STAGES}
    times = {(stage, name): [] for stage, table in stages.items() for name in table}
    for table in stages.values():  # warm-up
        for fn, inputs in table.values():
            fwd_bwd_ms(fn, inputs, 2)
    for _ in range(args.rounds):
        for stage, table in stages.items():
            for name, (fn, inputs) in table.items():
                times[(stage, name)].append(fwd_bwd_ms(fn, inputs, args.repeats))
    print(f"batch {args.batch}, channels-last, forward + backward, {torch.get_num_threads()} thread(s), "
          f"median of {args.rounds} rounds × {args.repeats} calls; ms (ratio to the block)\n")
    print("| part | " + " | ".join(f"{c}×{s}²" for c, s in STAGES) + " |")
    print("|---|" + "---:|" * len(STAGES))
    for name in next(iter(stages.values())):
        cols = []
        for stage in stages:
            ms = statistics.median(times[(stage, name)])
            cols.append(f"{ms:.2f} ({ms / statistics.median(times[(stage, 'block')]):.2f})")
        print(f"| {name} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
