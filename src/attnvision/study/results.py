"""A study's numbers, read from its folder: per-run rows, per-configuration rows with statistics
against the baseline, learning curves and localisation scores. Reads run folders and the
study's own files only, never the trainer's internals.

Statistics (the conventions that change what a reader concludes):

- **mean ± std over seeds**, std the sample standard deviation (n − 1), n stated; "–" for n = 1.
- **Δ to the baseline**: the mean over seeds of the paired per-seed differences, for the seeds
  both configurations finished.
- **95% CI of Δ**: a paired bootstrap over test images (2,000 resamples, seeded): per image the
  difference in correctness averaged over those seeds, resampled with replacement. It captures
  the test set's sampling error; seed-to-seed variation shows in the std. For multi-label data
  the statistic is the mAP difference (500 resamples). The CI excluding 0 is what the report
  calls a resolved difference.
- **McNemar's exact test** per seed (single-label): the images exactly one of the two models gets
  right decide it. p-values are per seed, not corrected for the number of configurations.
- **Resolvable difference**: 2.8·√(b + c)/N, the accuracy difference a two-sided McNemar test
  at α = 0.05 detects with 80% power given the b + c discordant images observed among N.
- Paired tests use the per-image logits each run saves (float16, ``test_predictions.pt``).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import torch

from ..explain.scores import BASELINES
from ..metrics import average_precision
from ..stats import mcnemar_exact, paired_bootstrap
from ..run_folder import PREDICTIONS
from .execute import FAILED, display_command
from .grid import Study, load_grid
from .measure import COSTS

EXPLAIN = "explain"


def read_study(out: Path) -> Study:
    path = out / "study.yaml"
    if not path.is_file():
        raise ValueError(f"{out} is not a study folder (no study.yaml): run `attnvision compare --out {out}` first")
    return Study.from_dict(load_grid(path), str(path))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    if not values:
        return math.nan, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_rows(study: Study, out: Path) -> list[dict]:
    """One row per cell: its status, metrics, history and command."""
    rows = []
    for cell in study.cells(out):
        folder = cell.folder
        row = {"part": cell.part, "cell": cell.name, "configuration": cell.configuration, "seed": cell.config.seed,
               "folder": str(folder), "command": display_command(cell), "history": read_log(folder / "log.csv")}
        if (folder / "metrics.json").is_file():
            metrics = json.loads((folder / "metrics.json").read_text())
            metric = metrics["selection_metric"]
            row.update(status="finished", metric=metric, test=metrics["test"][metric],
                       best_val=metrics["best_val"][f"val_{metric}"], params=metrics["params"], macs=metrics["macs"],
                       train_time_s=metrics["train_time_s"], images_per_s=metrics["images_per_s"],
                       epochs=metrics["epochs"], threads=metrics.get("threads"), device=metrics.get("device"),
                       epoch_time_s=statistics.median(r["epoch_time_s"] for r in row["history"]) if row["history"] else None,
                       task=metrics["task"],
                       **{f"test_{k}": metrics["test"][k] for k in ("CF1", "OF1") if k in metrics["test"]})
        elif (folder / FAILED).is_file():
            row.update(status="failed", error=json.loads((folder / FAILED).read_text())["error"])
        else:
            row.update(status="not run")
        rows.append(row)
    return rows


def load_predictions(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    saved = torch.load(folder / PREDICTIONS, map_location="cpu", weights_only=True)
    return saved["logits"].float(), saved["targets"]


def paired_comparison(runs: dict[int, Path], baseline: dict[int, Path], task: str) -> dict | None:
    """Statistics of a configuration against the baseline over their common seeds (see the module
    docstring); None when they share no finished seed."""
    seeds = sorted(set(runs) & set(baseline))
    if not seeds:
        return None
    per_seed, diffs, outcomes = {}, [], []
    for seed in seeds:
        (a, targets), (b, _) = load_predictions(runs[seed]), load_predictions(baseline[seed])
        if task == "single":
            right_a, right_b = a.argmax(1) == targets, b.argmax(1) == targets
            test = mcnemar_exact(right_a, right_b)
            n = len(targets)
            per_seed[seed] = {**test, "resolvable": 100 * 2.8 * math.sqrt(test["only_a"] + test["only_b"]) / n}
            outcomes.append(right_a.double() - right_b.double())
        else:
            outcomes.append((a, b, targets))
    if task == "single":
        ci = paired_bootstrap(100 * torch.stack(outcomes).mean(0))
        resolvable = statistics.fmean(s["resolvable"] for s in per_seed.values())
        return {"seeds": seeds, "per_seed": per_seed, "ci": ci, "resolvable": resolvable}
    return {"seeds": seeds, "per_seed": {}, "ci": map_bootstrap(outcomes), "resolvable": None}


def map_bootstrap(outcomes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], samples: int = 500,
                  seed: int = 0) -> dict:
    """Percentile bootstrap over images of the mAP difference (A − B), averaged over seeds."""
    def mean_map_difference(index: torch.Tensor) -> float:
        return statistics.fmean(100 * float(average_precision(a[index], t[index]).nanmean()
                                            - average_precision(b[index], t[index]).nanmean())
                                for a, b, t in outcomes)

    n = len(outcomes[0][2])
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([mean_map_difference(torch.randint(n, (n,), generator=g)) for _ in range(samples)])
    low, high = torch.quantile(values.double(), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return {"mean": mean_map_difference(torch.arange(n)), "low": low, "high": high}


def configuration_rows(study: Study, out: Path, runs: list[dict]) -> list[dict]:
    """One row per configuration of the main grid: test metric over seeds, Δ to the baseline with
    its tests, costs (costs.json), training time."""
    costs = json.loads((out / COSTS).read_text())["configurations"] if (out / COSTS).is_file() else {}
    main = [r for r in runs if r["part"] == "runs"]
    finished = {}
    for r in main:
        if r["status"] == "finished":
            finished.setdefault(r["configuration"], {})[r["seed"]] = r
    baseline = study.baseline_name
    rows = []
    for name, axes in study.configurations():
        done = finished.get(name, {})
        seeds = sorted(done)
        row = {"configuration": name, **axes, "baseline": name == baseline, "n": len(seeds),
               "seeds_planned": len(study.seed),
               "failed": [r["cell"] for r in main if r["configuration"] == name and r["status"] == "failed"]}
        if seeds:
            first = done[seeds[0]]
            row["metric"], row["task"] = first["metric"], first["task"]
            row["test_mean"], row["test_std"] = mean_std([done[s]["test"] for s in seeds])
            row["val_mean"], row["val_std"] = mean_std([done[s]["best_val"] for s in seeds])
            for key in ("test_CF1", "test_OF1"):
                if key in first:
                    row[key] = statistics.fmean(done[s][key] for s in seeds)
            row["params"], row["macs"] = first["params"], first["macs"]
            row["epoch_time_s"] = statistics.median(done[s]["epoch_time_s"] for s in seeds if done[s]["epoch_time_s"])
            row["train_time_s"] = statistics.fmean(done[s]["train_time_s"] for s in seeds)
            row["images_per_s"] = statistics.fmean(done[s]["images_per_s"] for s in seeds)
            row["threads"] = first["threads"]
            base = finished.get(baseline, {})
            if name != baseline and base:
                common = sorted(set(seeds) & set(base))
                if common:
                    row["delta"] = statistics.fmean(done[s]["test"] - base[s]["test"] for s in common)
                    row["paired"] = paired_comparison({s: Path(done[s]["folder"]) for s in common},
                                                      {s: Path(base[s]["folder"]) for s in common}, row["task"])
        row.update(costs.get(name, {}))
        rows.append(row)
    return rows


def learning_curves(runs: list[dict]) -> dict[str, dict]:
    """Per configuration of the main grid: epoch → mean over seeds of val metric and train loss."""
    curves: dict[str, dict] = {}
    for r in runs:
        if r["part"] != "runs" or not r["history"]:
            continue
        metric = "val_acc" if "val_acc" in r["history"][0] else "val_mAP"
        c = curves.setdefault(r["configuration"], {"metric": metric, "epochs": {}})
        for h in r["history"]:
            c["epochs"].setdefault(int(h["epoch"]), []).append((h[metric], h["train_loss"]))
    return {name: {"metric": c["metric"], "epoch": sorted(c["epochs"]),
                   "val": [statistics.fmean(v for v, _ in c["epochs"][e]) for e in sorted(c["epochs"])],
                   "train_loss": [statistics.fmean(t for _, t in c["epochs"][e]) for e in sorted(c["epochs"])]}
            for name, c in curves.items()}


def localization_rows(study: Study, runs: list[dict], out: Path) -> tuple[list[dict], dict | None]:
    """Per configuration of the localisation part: its test metric and each map's scores
    (Grad-CAM, its own map where it has one); plus the reference maps (random, centre, box) of the
    baseline's cell, and the explain settings."""
    rows, reference, settings = [], None, None
    for r in runs:
        if r["part"] != "localization":
            continue
        path = Path(r["folder"]) / EXPLAIN / "scores.json"
        row = {"configuration": r["configuration"], "status": r["status"], "test": r.get("test")}
        if path.is_file():
            scores = json.loads(path.read_text())
            settings = {k: scores[k] for k in ("data", "split", "images", "pairs", "tolerance", "faithfulness_images",
                                               "steps", "layer")}
            row["maps"] = {m: s for m, s in scores["methods"].items() if m not in BASELINES}
            if r["configuration"] == study.baseline_name:
                reference = {m: s for m, s in scores["methods"].items() if m in BASELINES}
        rows.append(row)
    return rows, (None if settings is None else {"settings": settings, "reference": reference})


def collect(out: Path) -> dict:
    """Everything the report shows."""
    study = read_study(out)
    runs = run_rows(study, out)
    localization, explain = localization_rows(study, runs, out)
    environment = json.loads((out / "environment.json").read_text()) if (out / "environment.json").is_file() else {}
    costs = json.loads((out / COSTS).read_text())["settings"] if (out / COSTS).is_file() else None
    return {"study": study, "out": out, "runs": runs, "configurations": configuration_rows(study, out, runs),
            "curves": learning_curves(runs), "localization": localization, "explain": explain,
            "environment": environment, "cost_settings": costs}
