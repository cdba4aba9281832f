"""Summarise run folders (their metrics.json) into a markdown table, mean ± std over seeds.

    .venv/bin/python benchmarks/results_table.py docs/runs/fmnist-attention

The folder holds run folders: the copies kept in docs/runs/<experiment>, or a study's runs/.
Rows group runs by their folder name without its ``-s<seed>`` suffix (e.g. ``cbam-s0``, ``cbam-s1``
→ ``cbam``); the std is the sample std over seeds (n ≥ 2).
The score is the test metric of each run's best-validation checkpoint (multi-label runs add CF1
and OF1); s / epoch is the training time divided by the epochs, evaluation excluded.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder whose subfolders are run folders")
    args = parser.parse_args()
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(args.folder.glob("*/metrics.json")):
        groups[re.sub(r"-s\d+$", "", path.parent.name)].append(json.loads(path.read_text()))
    if not groups:
        raise SystemExit(f"no */metrics.json under {args.folder}")
    first = next(iter(groups.values()))[0]
    metric = first["selection_metric"]
    # Multi-label runs also show the F1 scores at threshold 0.5 (CSRA's tables report them with mAP).
    extra = ("CF1", "OF1") if first["task"] == "multilabel" else ()
    print(f"| run | model | attention | head | params | MMACs | test {metric} (%) | "
          + "".join(f"test {k} (%) | " for k in extra)
          + f"best val {metric} (%) | seeds | train time / run (min) | s / epoch | train img/s |")
    print("|---|---|---|---|---:|---:|---:|" + "---:|" * len(extra) + "---:|---:|---:|---:|---:|")
    for name, runs in groups.items():
        m = runs[0]
        print(f"| {name} | {m['model']} | {m['attn'] or 'none'} | {m['head'] or 'default'} | {m['params']:,} "
              f"| {m['macs'] / 1e6:.2f} "
              + "".join(f"| {mean_std([r['test'][k] for r in runs])} " for k in (metric, *extra))
              + f"| {mean_std([r['best_val'][f'val_{metric}'] for r in runs])} | {len(runs)} "
              f"| {statistics.mean(r['train_time_s'] for r in runs) / 60:.1f} "
              f"| {statistics.mean(r['train_time_s'] / r['epochs'] for r in runs):.0f} "
              f"| {statistics.mean(r['images_per_s'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
