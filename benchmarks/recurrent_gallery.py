"""Where the recurrent attention models look, step by step, on the same test scenes (issue 18).

    .venv/bin/python benchmarks/recurrent_gallery.py --dram RUN --sat RUN [--images 6] --out docs/recurrent-attention.png

RUN: a run folder (its best.pt). One column per test scene (the first ``--images``), rows:
1. the scene with its item boxes (green) and DRAM's glimpses: the finest retina patch of every
   glimpse as a square coloured by its label step (step 1 red, 2 orange, 3 yellow, 4 green, …),
   glimpse centres joined in order; the title lists the labels DRAM emitted (✓ present, ✗ not);
2. and below: one row per decoding step of show-attend-tell: its attention α_t over the 16×16
   feature map, upsampled to the scene, with the label emitted at that step (a scene whose decoding
   stopped earlier leaves its panel empty).
Maps are min-max scaled per panel (``explain.figures.show_overlay``; white cross: the maximum).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attnvision.evaluate import load_run
from attnvision.explain.cam import upsample
from attnvision.explain.figures import CELL, pyplot, show_image, show_overlay
from attnvision.label_sequence import decoded_tokens

STEP_COLOURS = ("red", "orange", "yellow", "lime", "cyan", "magenta", "white")


def normalised(bundle, images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → the model's input, normalised by the dataset's mean and std."""
    mean, std = torch.tensor(bundle.mean).view(1, -1, 1, 1), torch.tensor(bundle.std).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def emitted_labels(step_logits: torch.Tensor) -> list[list[int]]:
    """Per image, the classes emitted step by step (greedy, up to END)."""
    end = step_logits.shape[2] - 1
    tokens = decoded_tokens(step_logits)
    return [[t for t in row.tolist() if t != end] for row in tokens]


def draw_glimpses(ax, model, x: torch.Tensor) -> list[int]:
    """DRAM's glimpse squares and path on ``ax`` for one normalised image x (1, 1, H, W); returns its labels."""
    from matplotlib.patches import Rectangle

    run = model.decode(x)
    centres = model.glimpse_centres(x)[0]  # (S, 2) as (y, x)
    per_label = model.glimpses_per_label
    labels = emitted_labels(run.step_logits)[0]
    for n, (cy, cx) in enumerate(centres.tolist()):
        colour = STEP_COLOURS[min(n // per_label, len(STEP_COLOURS) - 1)]
        if n // per_label > len(labels):  # glimpses after the END step
            break
        half = model.patch_size / 2
        ax.add_patch(Rectangle((cx - half, cy - half), 2 * half, 2 * half, fill=False, edgecolor=colour, lw=1))
    shown = centres[:(len(labels) + 1) * per_label]
    ax.plot(shown[:, 1], shown[:, 0], color="white", lw=0.6, marker=".", markersize=3)
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dram", type=Path, required=True)
    parser.add_argument("--sat", type=Path, required=True)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _, bundle, dram, _, _ = load_run(args.dram / "best.pt")
    sat = load_run(args.sat / "best.pt")[2]
    raw, targets = bundle.test.images[:args.images], bundle.test.targets[:args.images]
    x, boxes, names = normalised(bundle, raw), bundle.extras["boxes"]["test"][:args.images], bundle.class_names
    with torch.no_grad():
        decoding = sat.head.decode(sat.forward_features(x))
    sat_labels = emitted_labels(decoding.step_logits)
    alphas = upsample(decoding.alphas.unflatten(2, sat.forward_features(x[:1]).shape[2:]), x.shape[-2:])
    steps = max(1, max(len(labels) for labels in sat_labels))
    plt = pyplot()
    fig, axes = plt.subplots(1 + steps, args.images, figsize=(CELL * args.images, CELL * (1 + steps) + 0.3),
                             squeeze=False)
    for i in range(args.images):
        show_image(axes[0, i], raw[i], boxes[i])
        with torch.no_grad():
            labels = draw_glimpses(axes[0, i], dram, x[i:i + 1])
        marks = ", ".join(f"{names[c]} {'✓' if targets[i, c] == 1 else '✗'}" for c in labels) or "nothing"
        axes[0, i].set_title(f"DRAM: {marks}", fontsize=6)
        for t in range(steps):
            ax = axes[1 + t, i]
            if t < len(sat_labels[i]):
                show_overlay(ax, raw[i], alphas[i, t], boxes[i])
                c = sat_labels[i][t]
                ax.set_title(f"SAT step {t + 1}: {names[c]} {'✓' if targets[i, c] == 1 else '✗'}", fontsize=6)
            else:
                ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(args.out)


if __name__ == "__main__":
    main()
