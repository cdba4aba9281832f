"""Is configuration A better than B? Paired tests over the run folders of one experiment.

    .venv/bin/python benchmarks/paired_runs.py runs/recurrent-n10000 sat gap [--metric exact]

FOLDER holds run folders named ``<name>-s<seed>`` (a ``train_kept`` experiment's runs/ folder: the
tests need each run's ``test_predictions.pt``). For every seed that both A and B have:
- McNemar's exact test on the test images, paired by image: an image is a hit when the
  prediction is right (single-label: top-1; multi-label: the predicted set, sigmoid ≥ 0.5, equals
  the label set: ``metrics.exact_set_hits``). It answers whether the two models differ on these test
  images, with that seed's training run held fixed.
- Over seeds, the paired t interval of the difference A − B in ``--metric`` (a key of the test
  metrics in ``metrics.json``, default: the run's selection metric): whether the difference
  survives the training noise. With two seeds the t test has one degree of freedom and rarely does.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from attnvision.metrics import exact_set_hits
from attnvision.run_folder import METRICS
from attnvision.stats import mcnemar_exact, paired_t
from attnvision.study.results import load_predictions


def hits(run: Path) -> torch.Tensor:
    """bool (N,): the run's right answers on its test images (module docstring)."""
    logits, targets = load_predictions(run)
    if targets.dim() == 1:
        return logits.argmax(1) == targets
    return exact_set_hits(logits.sigmoid() >= 0.5, targets)


def seeds_of(folder: Path, name: str) -> dict[int, Path]:
    found = {}
    for run in folder.glob(f"{name}-s*"):
        match = re.fullmatch(rf"{re.escape(name)}-s(\d+)", run.name)
        if match and (run / METRICS).is_file():
            found[int(match.group(1))] = run
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder whose subfolders are <name>-s<seed> run folders")
    parser.add_argument("a", help="run name without -s<seed>")
    parser.add_argument("b", help="run name without -s<seed>")
    parser.add_argument("--metric", help="test metric of the paired t test (default: the selection metric)")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    runs_a, runs_b = seeds_of(args.folder, args.a), seeds_of(args.folder, args.b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        parser.error(f"no seed has finished runs of both {args.a} and {args.b} in {args.folder}")
    metric = args.metric or json.loads((runs_a[seeds[0]] / METRICS).read_text())["selection_metric"]
    print(f"| seed | {args.a} {metric} | {args.b} {metric} | right only by {args.a} | right only by {args.b} "
          f"| McNemar p |")
    print("|---:|---:|---:|---:|---:|---:|")
    diffs = []
    for seed in seeds:
        value_a = json.loads((runs_a[seed] / METRICS).read_text())["test"][metric]
        value_b = json.loads((runs_b[seed] / METRICS).read_text())["test"][metric]
        diffs.append(value_a - value_b)
        test = mcnemar_exact(hits(runs_a[seed]), hits(runs_b[seed]))
        print(f"| {seed} | {value_a:.2f} | {value_b:.2f} | {test['only_a']} | {test['only_b']} | {test['p']:.2g} |")
    over_seeds = paired_t(diffs)
    if over_seeds is None:
        print(f"\nOne seed: no interval over seeds for {metric}.")
    else:
        print(f"\nOver {over_seeds['n']} seeds, {args.a} − {args.b} in {metric}: {over_seeds['mean']:+.2f} "
              f"(95% t interval [{over_seeds['low']:+.2f}, {over_seeds['high']:+.2f}], p = {over_seeds['p']:.2g})")


if __name__ == "__main__":
    main()
