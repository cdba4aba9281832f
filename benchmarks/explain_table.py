"""Summarise explained runs (each kept folder's metrics.json, explain-scores.json, explain-pairs.pt)
into the markdown tables of docs/results.md.

    .venv/bin/python benchmarks/explain_table.py docs/runs/explain-single-e3-n10000 --baseline none

Table 1, one block per run: its test metric, then each map (Grad-CAM, the model's own map) and
the random map, with the localisation scores over every (test image, present class) pair and
deletion/insertion and ROAD AUC on the first images; the centre, edge and box reference rows once
(they do not depend on the model). Table 2 compares every run's Grad-CAM with the baseline run of the same
seed (``<name>-s<seed>`` with ``<baseline>-s<seed>``) on the same pairs: pointing game (within the
tolerance, and exact) by McNemar's exact test, energy-in-box by the mean paired difference with a
95% bootstrap interval over pairs. These intervals cover the test pairs' sampling only, not training-seed variation:
compare seeds for that.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from attnvision.explain.scores import RATIOS, SCORE_COLUMNS
from attnvision.stats import mcnemar_exact, paired_bootstrap

REFERENCE_ONCE = ("centre", "edge", "box")  # reference maps that do not depend on the model: one row each


def row(label: str, scores: dict) -> str:
    return f"| {label} | " + " | ".join(f"{scores[k]:.{2 if k in RATIOS else 1}f}" if k in scores else "–"
                                      for k, _ in SCORE_COLUMNS) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder whose subfolders are kept, explained runs")
    parser.add_argument("--baseline", required=True, help="run name without -s<seed> to compare the others with")
    args = parser.parse_args()
    runs = {p.parent.name: p.parent for p in sorted(args.folder.glob("*/explain-scores.json"))}
    baselines = {name: folder for name, folder in runs.items() if re.sub(r"-s\d+$", "", name) == args.baseline}
    if not baselines:
        raise SystemExit(f"no explained run '{args.baseline}-s<seed>' under {args.folder}; found: {', '.join(runs)}")
    first = json.loads((next(iter(baselines.values())) / "explain-scores.json").read_text())
    titles = {key: title.format(tol=f"{first['tolerance']:g}") for key, title in SCORE_COLUMNS}
    print(f"| run · map | test {'acc' if first['task'] == 'single' else 'mAP'} (%) | "
          + " | ".join(titles.values()) + " |")
    print("|---|---:|" + "---:|" * len(SCORE_COLUMNS))
    for name, folder in runs.items():
        scores = json.loads((folder / "explain-scores.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        test = metrics["test"][metrics["selection_metric"]]
        for i, (method, values) in enumerate((m, v) for m, v in scores["methods"].items() if m not in REFERENCE_ONCE):
            print(row(f"{name} · {method}", values).replace(" | ", f" | {test:.2f} | " if i == 0 else " | | ", 1))
    for method in (m for m in REFERENCE_ONCE if m in first["methods"]):  # edge: not in older runs
        print(row(f"({method} map)", first["methods"][method]).replace(" | ", " | | ", 1))
    print(f"\n{first['pairs']} (image, class) pairs of {first['images']} test images; deletion/insertion on the "
          f"pairs of the first {first['faithfulness_images']} images ({first['methods']['gradcam']['faithfulness_pairs']}"
          " pairs).\n")

    # counts and differences, not percentages: the score names without their unit
    names = {key: title.removesuffix(" (%)") for key, title in titles.items()}
    print(f"| Grad-CAM of run vs {args.baseline} (same seed) | {names['pointing_game']}: hits only run / only "
          f"{args.baseline} | McNemar p | {names['pointing_game_exact']}: only run / only {args.baseline} | McNemar p "
          f"| {names['energy_in_box']}: Δ (points) | 95% CI |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, folder in runs.items():
        seed = re.search(r"-s\d+$", name)
        base_name = f"{args.baseline}{seed.group() if seed else ''}"
        if name in baselines or base_name not in baselines:
            continue
        base = torch.load(baselines[base_name] / "explain-pairs.pt", weights_only=True)
        other = torch.load(folder / "explain-pairs.pt", weights_only=True)
        if not torch.equal(other["pairs"].long(), base["pairs"].long()):
            raise SystemExit(f"{name} and {base_name} explain different pairs: not comparable")
        a, b = other["gradcam"], base["gradcam"]
        tests = [mcnemar_exact(a[k].bool(), b[k].bool()) for k in ("pointing_game", "pointing_game_exact")]
        ci = paired_bootstrap((a["energy_in_box"].float() - b["energy_in_box"].float()) * 100)
        print(f"| {name} | " + "".join(f"{t['only_a']} / {t['only_b']} | {t['p']:.2g} | " for t in tests)
              + f"{ci['mean']:+.2f} | [{ci['low']:+.2f}, {ci['high']:+.2f}] |")

if __name__ == "__main__":
    main()
