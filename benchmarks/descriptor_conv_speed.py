"""What ``Conv1x1`` (attention/common.py: a 1×1 convolution run as a matrix product on pooled
(B, C, 1, 1) descriptors) saves: resnet20 training steps with each channel-gate module, as built,
against the same model (same weights) whose ``Conv1x1`` layers are plain ``nn.Conv2d``, and the
plain network, in one interleaved run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/descriptor_conv_speed.py [--attn se cbam ...] [--batch 128] [--steps 5] [--rounds 5]

Models and input are channels-last, as the study's runs. Each time is the median over rounds of the mean step time (``profile.train_step_time``: forward,
cross-entropy, backward, SGD-momentum update, after an untimed warm-up step).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from attnvision import create_model
from attnvision.attention import attn_label
from attnvision.attention.common import Conv1x1
from attnvision.profile import train_step_time


def with_plain_convs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``Conv1x1`` layers are ``nn.Conv2d`` with the same weights."""
    plain = copy.deepcopy(model)
    for module in list(plain.modules()):
        for name, child in module.named_children():
            if isinstance(child, Conv1x1):
                conv = nn.Conv2d(child.in_channels, child.out_channels, 1, bias=child.bias is not None)
                conv.load_state_dict(child.state_dict())
                setattr(module, name, conv)
    return plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attn", nargs="+", default=["se", "cbam", "ese", "lcbam", "gc"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)  # as the study's runs
    y = torch.randint(0, 10, (args.batch,))

    def loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    models = {"none": create_model("resnet20", 10, in_chans=1)}
    for spec in args.attn:
        fast = create_model("resnet20", 10, in_chans=1, attn=spec)
        if not any(isinstance(m, Conv1x1) for m in fast.modules()):
            parser.error(f"resnet20 with {spec} has no Conv1x1 layer")
        models[f"{attn_label(spec)} (Conv1x1)"] = fast
        models[f"{attn_label(spec)} (nn.Conv2d)"] = with_plain_convs(fast)
    times: dict[str, list[float]] = {name: [] for name in models}
    models = {name: model.to(memory_format=torch.channels_last) for name, model in models.items()}
    train_step_time(models["none"], x, loss, args.steps)  # process warm-up before any timing
    for r in range(args.rounds):
        for name, model in models.items():
            times[name].append(train_step_time(model, x, loss, args.steps))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(times["none"])
    print(f"\nbatch {args.batch}, {args.steps} steps × {args.rounds} rounds, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}\n")
    print("| model | step (ms) | ratio to resnet20 |")
    print("|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {1000 * statistics.median(t):.1f} | {statistics.median(t) / base:.3f} |")


if __name__ == "__main__":
    main()
