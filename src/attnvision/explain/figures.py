"""Pictures of explanations: one figure per image (its boxes, then each explained class's map per
method) and a gallery (the same images across several models or methods). matplotlib, Agg backend,
PNG at 100 dpi. Maps are shown min-max scaled per map (the scale differs between methods; the
scores never use this scaling), in the "jet" colour map at 50% over the grey or colour image; a
white cross marks each map's maximum (the pointing-game point)."""

from __future__ import annotations

from pathlib import Path

import torch

CELL = 1.9  # inches per panel


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def show_image(ax, image: torch.Tensor, boxes: torch.Tensor | None = None) -> None:
    """Draw uint8 (C, H, W) on ``ax`` with the boxes (k, ≥4) = (x0, y0, x1, y1, …) in green."""
    from matplotlib.patches import Rectangle

    picture = image.permute(1, 2, 0).numpy()
    ax.imshow(picture[..., 0] if image.shape[0] == 1 else picture, cmap="gray", vmin=0, vmax=255)
    for x0, y0, x1, y1 in ([] if boxes is None else boxes[:, :4].tolist()):
        # pixel centres sit at integers, so a box of pixels [x0, x1) spans x0 − 0.5 … x1 − 0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.2))
    ax.set_xticks([])
    ax.set_yticks([])


def show_overlay(ax, image: torch.Tensor, saliency: torch.Tensor, boxes: torch.Tensor | None = None) -> None:
    """The image, its boxes and ``saliency`` (H, W) on top, with its maximum marked."""
    show_image(ax, image, boxes)
    m = saliency.float()
    span = (m.max() - m.min()).item()
    scaled = (m - m.min()) / span if span > 0 else torch.zeros_like(m)
    ax.imshow(scaled.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    if span > 0:
        y, x = divmod(int(m.flatten().argmax()), m.shape[1])
        ax.plot([x], [y], marker="+", color="white", markersize=9, markeredgewidth=2)


def image_figure(path: str | Path, image: torch.Tensor, class_names: list[str], probs: torch.Tensor,
                 maps: dict[str, torch.Tensor], boxes: list[torch.Tensor] | None = None) -> None:
    """One row per explained class: the image with that class's boxes, then each method's map
    (maps[method] is (K, H, W) for the K classes). Titles name the class and its predicted
    probability."""
    plt = pyplot()
    rows, cols = max(len(class_names), 1), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(CELL * cols, CELL * rows + 0.3), squeeze=False)
    for r, name in enumerate(class_names):
        row_boxes = None if boxes is None else boxes[r]
        show_image(axes[r, 0], image, row_boxes)
        axes[r, 0].set_title(f"{name}  p={float(probs[r]):.2f}", fontsize=8)
        for c, (method, m) in enumerate(maps.items(), start=1):
            show_overlay(axes[r, c], image, m[r], row_boxes)
            axes[r, c].set_title(f"{name}: {method}", fontsize=8)
    if not class_names:
        show_image(axes[0, 0], image)
        for ax in axes[0, 1:]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def gallery_figure(path: str | Path, images: torch.Tensor, rows: dict[str, torch.Tensor],
                   boxes: list[torch.Tensor] | None = None, column_titles: list[str] | None = None) -> None:
    """A grid: the images (N, C, H, W) uint8 in the first row, then one row per entry of ``rows``
    (label → maps (N, H, W)), e.g. the same test images explained by several models."""
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(CELL * n + 0.9, CELL * (1 + len(rows))), squeeze=False)
    for i in range(n):
        show_image(axes[0, i], images[i], None if boxes is None else boxes[i])
        if column_titles:
            axes[0, i].set_title(column_titles[i], fontsize=8)
        for r, maps in enumerate(rows.values(), start=1):
            show_overlay(axes[r, i], images[i], maps[i], None if boxes is None else boxes[i])
    for r, label in enumerate(["image"] + list(rows)):
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
