"""Summarise run folders (their metrics.json) into a markdown table, mean ± std over seeds.

    .venv/bin/python benchmarks/results_table.py runs/fmnist-attention

Rows group runs by their folder name without its ``-s<seed>`` suffix (e.g. ``cbam-s0``, ``cbam-s1``
→ ``cbam``); the std is the sample std over seeds (n ≥ 2).
The score is the test metric of each run's best-validation checkpoint.
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
    metric = next(iter(groups.values()))[0]["selection_metric"]
    print(f"| run | model | attention | head | params | MMACs | test {metric} (%) | best val {metric} (%) | seeds "
          "| train time / run (min) | train img/s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, runs in groups.items():
        m = runs[0]
        print(f"| {name} | {m['model']} | {m['attn'] or 'none'} | {m['head'] or 'default'} | {m['params']:,} "
              f"| {m['macs'] / 1e6:.2f} "
              f"| {mean_std([r['test'][metric] for r in runs])} "
              f"| {mean_std([r['best_val'][f'val_{metric}'] for r in runs])} | {len(runs)} "
              f"| {statistics.mean(r['train_time_s'] for r in runs) / 60:.1f} "
              f"| {statistics.mean(r['images_per_s'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
