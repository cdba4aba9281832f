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

from attnvision.explain.run import runs_gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with best.pt")
    parser.add_argument("--images", type=int, default=8, help="the first N test images")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    print(f"wrote {runs_gallery({run.name: run / 'best.pt' for run in args.runs}, args.out, args.images)}")


if __name__ == "__main__":
    main()
