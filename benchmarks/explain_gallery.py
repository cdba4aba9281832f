"""A gallery PNG: the same test images explained by several runs (one row per run and map).

    .venv/bin/python benchmarks/explain_gallery.py runs/explain-single-e3-n10000/{none,se,cbam}-s0 \
        --images 8 --out docs/explain-gallery-single.png

Each column is one test image with the boxes of the class it explains (the ground truth; for
multi-label data the image's first present class); each row one run's Grad-CAM, plus a row with
the run's own map where it has one (spatial gate, CSRA, Query2Label).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attnvision.data import TensorLoader
from attnvision.explain.cam import has_own_maps, pair_maps
from attnvision.explain.figures import gallery_figure
from attnvision.explain.run import pair_boxes
from attnvision.train import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with best.pt")
    parser.add_argument("--images", type=int, default=8, help="the first N test images")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    rows, images, boxes, titles = {}, None, None, None
    for run in args.runs:
        cfg, bundle, model, fabric, _ = load_run(run / "best.pt")
        test = bundle.test.subset(torch.arange(args.images))
        x, _ = next(iter(TensorLoader(test, args.images, mean=bundle.mean, std=bundle.std, train=False,
                                      device=fabric.device, channels_last=cfg.channels_last)))
        targets = test.targets if bundle.task == "single" else test.targets.argmax(1)  # first present class
        pairs = torch.stack([torch.arange(args.images), targets], 1)
        if images is None:
            images, titles = test.images, [bundle.class_names[c] for c in targets]
            all_boxes = bundle.extras.get("boxes", {}).get("test")
            boxes = None if all_boxes is None else pair_boxes(all_boxes, pairs)
        rows[f"{run.name} Grad-CAM"] = pair_maps(model, x, pairs, "gradcam").cpu()
        if has_own_maps(model, x[:1]):
            rows[f"{run.name} own map"] = pair_maps(model, x, pairs, "attention").cpu()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gallery_figure(args.out, images, rows, boxes, titles)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
