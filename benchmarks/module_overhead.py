"""Training-step cost of every registered attention module, as ratios to the plain ResNet-20 in one run.

    .venv/bin/python benchmarks/module_overhead.py [--batch 64] [--steps 10] [--rounds 3] [--extra SPEC ...]
        [--only NAME ...] [--compile] [--memory-format channels_last|contiguous]

Two measurements, each a forward + backward + SGD step on random Fashion-MNIST-shaped data:
- block: one resnet20-small BasicBlock at each stage's shape (16×28×28, 32×14×14, 64×7×7) with the
  module where its placement puts it ("block": on the residual branch; "stage": after the block;
  "conv": replacing both 3×3 convs), divided by the plain block's time;
- model: resnet20-small (1 input channel, 28×28) with the module vs without ("conv" modules replace
  the 3×3 convs of the last stage only, ``attn_stages=[3]``, where SANet and BoTNet put them; one
  without a stride, AA-conv, cannot replace that stage's strided conv: "-").
``--extra`` adds module specs beyond the registered names, e.g. composed gates
("gate:channel=eca,spatial=simam"); ``--only`` measures the named modules instead of every one.
Models, blocks and inputs are channels-last, as the study's runs (``TrainConfig.channels_last``)
and its costs; ``--memory-format contiguous`` measures the NCHW layout instead.
``--compile`` also times each resnet20 through torch.compile (``compiled.Compiled``, Inductor): its
first step, which compiles, apart; then, in the same rounds, the compiled step, its ratio to the
compiled plain model's and its speed-up over the same model eager.
After an untimed warm-up of the baselines, rounds interleave all candidates so that drift on a
shared machine hits them alike; each time is the median over rounds of the mean step time.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from attnvision import create_attn, create_model, list_attn
from attnvision.attention import attn_class, attn_label
from attnvision.backbones.resnet import BasicBlock
from attnvision.compiled import Compiled
from attnvision.profile import train_step_time

STAGES = ((16, 28), (32, 14), (64, 7))


class BlockWith(nn.Module):
    """A BasicBlock (C → C) with an attention module at its placement."""

    def __init__(self, channels: int, attn: str | None) -> None:
        super().__init__()
        placement = attn_class(attn).placement if attn else None
        self.block = BasicBlock(channels, channels, attn=create_attn(attn, channels) if placement == "block" else None)
        self.after = create_attn(attn, channels) if placement == "stage" else nn.Identity()
        if placement == "conv":
            self.block.conv1 = create_attn(attn, channels)
            self.block.conv2 = create_attn(attn, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.block(x))


def loss(out: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for a model's logits, a square loss for a block's feature map."""
    return F.cross_entropy(out, torch.zeros(len(out), dtype=torch.long)) if out.ndim == 2 else out.square().mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", nargs="*", default=[], help="more module specs, e.g. composed gates")
    parser.add_argument("--only", nargs="*", help="measure these modules (and the plain network) only")
    parser.add_argument("--compile", action="store_true", help="also time each resnet20 through torch.compile")
    parser.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    args = parser.parse_args()
    layout = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[args.memory_format]
    torch.manual_seed(0)
    names = [None, *(args.only if args.only is not None else list_attn()), *args.extra]
    block_inputs = [torch.randn(args.batch, c, s, s).contiguous(memory_format=layout) for c, s in STAGES]
    blocks = {(n, i): BlockWith(c, n).to(memory_format=layout) for n in names for i, (c, _) in enumerate(STAGES)}
    models = {}
    for n in names:
        try:
            models[n] = create_model("resnet20", 10, attn=n, in_chans=1,
                                     attn_stages=[3] if n and attn_class(n).placement == "conv" else None
                                     ).to(memory_format=layout)
        except ValueError as e:  # AA-conv has no stride: it cannot replace stage 3's strided conv
            print(f"no resnet20 with {n}: {e}")
    image = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=layout)
    block_times = {k: [] for k in blocks}
    model_times = {k: [] for k in models}
    for i, x in enumerate(block_inputs):  # process-level warm-up (thread pool, allocator) before any timing
        train_step_time(blocks[(None, i)], x, loss, args.steps)
    train_step_time(models[None], image, loss, args.steps)
    compiled = {n: Compiled(model, attn_label(n) if n else "none") for n, model in models.items()} if args.compile else {}
    # the first compiled step compiles: timed apart; where compilation failed, Compiled said why and runs eager
    compile_seconds = {n: train_step_time(c, image, loss, steps=1, warmup=0) for n, c in compiled.items()}
    compiled = {n: c for n, c in compiled.items() if c.active}
    compiled_times = {k: [] for k in compiled}
    for r in range(args.rounds):
        for key, block in blocks.items():
            block_times[key].append(train_step_time(block, block_inputs[key[1]], loss, args.steps))
        for key, model in models.items():
            model_times[key].append(train_step_time(model, image, loss, args.steps))
            if key in compiled:
                compiled_times[key].append(train_step_time(compiled[key], image, loss, args.steps))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    def median(times: list[float]) -> float:
        return statistics.median(times)

    print(f"\nbatch {args.batch}, {args.memory_format}, {args.steps} steps × {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    compiled_header = " compiled step (ms) | compiled ratio | compile speed-up | compile (s) |" if args.compile else ""
    print("| module | placement | block 16×28² | block 32×14² | block 64×7² | resnet20 step (ms) | resnet20 ratio |"
          + compiled_header)
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * 4 * args.compile)
    base_model = median(model_times[None])
    for n in names:
        ratios = [median(block_times[(n, i)]) / median(block_times[(None, i)]) for i in range(len(STAGES))]
        placement = attn_class(n).placement if n else "-"
        model_cols = (f"{1000 * median(model_times[n]):.1f} | {median(model_times[n]) / base_model:.2f}"
                      if n in models else "- | -")
        label = attn_label(n) if n else "none"
        if n in compiled and None in compiled:
            speedup = median([e / c for e, c in zip(model_times[n], compiled_times[n])])
            model_cols += (f" | {1000 * median(compiled_times[n]):.1f} | "
                           f"{median(compiled_times[n]) / median(compiled_times[None]):.2f} | {speedup:.2f} | "
                           f"{compile_seconds[n]:.0f}")
        elif args.compile:
            model_cols += " | - | - | - | -"
        print(f"| {label} | {placement} | " + " | ".join(f"{r:.2f}" for r in ratios) + f" | {model_cols} |")


if __name__ == "__main__":
    main()
