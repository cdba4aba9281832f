"""Validation accuracy vs epoch of short-recipe candidates beside a long reference run, test accuracy
against the epoch budget, and their table.

    .venv/bin/python benchmarks/recipe_curves.py docs/runs/recipe-search \\
        --reference docs/runs/fmnist-attention/none-s0 --out docs/recipe-curves.png

The folder holds finished run folders (their log.csv and metrics.json, e.g. the copies kept in
docs/runs/recipe-search). Candidates group runs by their folder name without its ``-s<seed>`` suffix
(``lin-ema-tta-s0``, ``lin-ema-tta-s1`` → ``lin-ema-tta``); each curve is the mean over its seeds of
the validation accuracy per epoch (the evaluated weights: the moving average where the run kept one),
with the seeds' range shaded; for runs with a weight moving average, the raw weights' curve\n(val_raw_acc, what the same run without the average would score) is drawn dotted. The reference is drawn dashed, with a dotted line 0.3 pp below its final
validation accuracy (the issue's "within 0.3 pp" target, drawn on validation for orientation only;
the target itself is on test).

The markdown table goes to stdout: test accuracy of each run's best-validation checkpoint (mean ±
sample std over seeds, and its difference to the reference's test accuracy), best validation accuracy,
epochs, training time (evaluation excluded) and, for runs with a weight moving average, its gain on
validation at the last epoch (val_acc − val_raw_acc, mean over seeds).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(folder: Path) -> dict:
    with open(folder / "log.csv", newline="") as f:
        log = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return {"name": folder.name, "log": log, "metrics": json.loads((folder / "metrics.json").read_text())}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def curve(runs: list[dict], key: str = "val_acc") -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs every seed has, and the mean, min and max of ``key`` over the seeds at each."""
    epochs = min(len(r["log"]) for r in runs)
    xs, mean, lo, hi = [], [], [], []
    for i in range(epochs):
        values = [r["log"][i][key] for r in runs]
        xs.append(int(runs[0]["log"][i]["epoch"]))
        mean.append(statistics.mean(values))
        lo.append(min(values))
        hi.append(max(values))
    return xs, mean, lo, hi


def table(groups: dict[str, list[dict]], reference: dict | None) -> str:
    ref_test = reference["metrics"]["test"]["acc"] if reference else None
    lines = ["| recipe | seeds | test acc (%) | Δ test vs reference (pp) | best val acc (%) | epochs "
             "| train time / run (min) | s / epoch | EMA gain on val, last epoch (pp) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = ([("reference: " + reference["name"], [reference])] if reference else []) + list(groups.items())
    for name, runs in rows:
        tests = [r["metrics"]["test"]["acc"] for r in runs]
        delta = f"{statistics.mean(tests) - ref_test:+.2f}" if ref_test is not None else "–"
        gains = [r["log"][-1]["val_acc"] - r["log"][-1]["val_raw_acc"] for r in runs if "val_raw_acc" in r["log"][-1]]
        gain = f"{statistics.mean(gains):+.2f}" if gains else "–"
        train_s = [r["metrics"]["train_time_s"] for r in runs]
        epochs = runs[0]["metrics"]["epochs"]
        lines.append(f"| {name} | {', '.join(str(r['metrics']['seed']) for r in runs)} | {mean_std(tests)} | {delta} "
                     f"| {mean_std([r['metrics']['best_val']['val_acc'] for r in runs])} | {epochs} "
                     f"| {statistics.mean(train_s) / 60:.1f} | {statistics.mean(s / epochs for s in train_s):.0f} "
                     f"| {gain} |")
    return "\n".join(lines)


def plot(groups: dict[str, list[dict]], reference: dict | None, out: Path, ymin: float, title: str) -> None:
    """Left: validation accuracy per epoch; right: test accuracy against the epoch budget (every
    group's mean over seeds, each seed a dot), with the target 0.3 pp below the reference's test."""
    fig, (ax, budget) = plt.subplots(1, 2, figsize=(14, 5), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    top = ymin
    if reference:
        xs, ys, _, _ = curve([reference])
        ax.plot(xs, ys, "k--", lw=1.5, label=f"reference {reference['name']} ({len(xs)} epochs)")
        top = max(ys)
        ax.axhline(ys[-1] - 0.3, color="k", ls=":", lw=1, label="reference final val − 0.3 pp")
    for name, runs in groups.items():
        xs, ys, lo, hi = curve(runs)
        seeds = len(runs)
        (line,) = ax.plot(xs, ys, marker="o", ms=3, lw=1.5,
                          label=f"{name} (mean of {seeds} seed{'s' if seeds > 1 else ''}; final {ys[-1]:.2f})")
        if seeds > 1:
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        top = max(top, *ys)
        if all("val_raw_acc" in row for r in runs for row in r["log"]):  # the same runs' raw weights
            xs, raw, _, _ = curve(runs, "val_raw_acc")
            ax.plot(xs, raw, ls=":", marker="x", ms=3, lw=1.2, color=line.get_color(),
                    label=f"{name}, raw weights, i.e. without EMA (final {raw[-1]:.2f})")
            top = max(top, *raw)
        tests = [r["metrics"]["test"]["acc"] for r in runs]
        budget.scatter([runs[0]["metrics"]["epochs"]] * seeds, tests, s=12, color=line.get_color(), alpha=0.5)
        budget.plot([runs[0]["metrics"]["epochs"]], [statistics.mean(tests)], "o", ms=7, color=line.get_color(),
                    label=f"{name}: {mean_std(tests)}")
    if reference:
        ref_test = reference["metrics"]["test"]["acc"]
        budget.plot([reference["metrics"]["epochs"]], [ref_test], "ks", ms=7, label=f"reference: {ref_test:.2f}")
        budget.axhline(ref_test - 0.3, color="k", ls=":", lw=1, label=f"target: reference − 0.3 pp ({ref_test - 0.3:.2f})")
        budget.axvline(reference["metrics"]["epochs"] / 3, color="grey", ls="--", lw=1, label="a third of its epochs")
    budget.set_xlabel("epoch budget (each point a run trained for that many epochs)")
    budget.set_ylabel("test accuracy (%), best-validation checkpoint")
    budget.grid(alpha=0.3)
    budget.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(ymin, top + 0.5)
    ax.set_xlim(left=0.5)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder whose subfolders are finished run folders")
    parser.add_argument("--reference", type=Path, help="the long run to compare with (a run folder)")
    parser.add_argument("--out", type=Path, default=Path("docs/recipe-curves.png"), help="the PNG to write")
    parser.add_argument("--ymin", type=float, default=88.0, help="lower end of the accuracy axis")
    parser.add_argument("--title", default="resnet20 on Fashion-MNIST (55,000 training images): validation accuracy "
                        "per epoch", help="the left panel's title")
    args = parser.parse_args()
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(args.folder.glob("*/metrics.json")):
        groups[re.sub(r"-s\d+$", "", path.parent.name)].append(read_run(path.parent))
    if not groups:
        raise SystemExit(f"no */metrics.json under {args.folder}")
    reference = read_run(args.reference) if args.reference else None
    plot(groups, reference, args.out, args.ymin, args.title)
    print(table(groups, reference))


if __name__ == "__main__":
    main()
