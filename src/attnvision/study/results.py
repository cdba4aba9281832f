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
import math
import statistics
from pathlib import Path

import torch

from ..checkpoint import DamagedFileError, read_json
from ..explain.run import SCORES_FILE
from ..explain.scores import BASELINES
from ..metrics import average_precision
from ..run_folder import LOG, PREDICTIONS
from ..stats import mcnemar_exact, paired_bootstrap
from .grid import Cell, Study, load_grid
from .layout import COSTS, ENVIRONMENT, LOCALIZATION, MAIN, STUDY_FILE

LEFT_OUT = "left out of this report (`attnvision compare` rebuilds it)"


def read_study(out: Path) -> Study:
    path = out / STUDY_FILE
    if not path.is_file():
        raise ValueError(f"{out} is not a study folder (no {STUDY_FILE}): run `attnvision compare --out {out}` first")
    return Study.from_dict(load_grid(path), str(path))


def read_rebuildable(path: Path, instead: str) -> dict | None:
    """A study file that a phase rebuilds (costs, scores, environment): its contents, or None when
    it is missing or damaged; a damaged one is said in one line, with what happens ``instead``."""
    try:
        return read_json(path)
    except DamagedFileError as e:
        print(f"{e}; {instead}", flush=True)
        return None


def mean_std(values: list[float]) -> tuple[float, float | None]:
    if not values:
        return math.nan, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_rows(cells: list[Cell]) -> list[dict]:
    """One row per cell: its status, metrics, history and command."""
    rows = []
    for cell in cells:
        row = {"part": cell.part, "cell": cell.name, "configuration": cell.configuration, "seed": cell.config.seed,
               "folder": str(cell.folder), "command": cell.command, "history": read_log(cell.folder / LOG)}
        metrics, error = cell.metrics, cell.error
        if metrics is not None:
            metric = metrics["selection_metric"]
            row.update(status="finished", metric=metric, test=metrics["test"][metric],
                       best_val=metrics["best_val"][f"val_{metric}"], params=metrics["params"], macs=metrics["macs"],
                       train_time_s=metrics["train_time_s"], images_per_s=metrics["images_per_s"],
                       epochs=metrics["epochs"], threads=metrics.get("threads"), device=metrics.get("device"),
                       epoch_time_s=statistics.median(r["epoch_time_s"] for r in row["history"]) if row["history"] else None,
                       task=metrics["task"],
                       **{f"test_{k}": metrics["test"][k] for k in ("CF1", "OF1") if k in metrics["test"]})
        elif error is not None:
            row.update(status="failed", error=error)
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


def configuration_rows(study: Study, runs: list[dict], costs: dict) -> list[dict]:
    """One row per configuration of the main grid: test metric over seeds, Δ to the baseline with
    its tests, costs (costs.json's configurations), training time."""
    main = [r for r in runs if r["part"] == MAIN]
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
        if r["part"] != MAIN or not r["history"]:
            continue
        metric = "val_acc" if "val_acc" in r["history"][0] else "val_mAP"
        c = curves.setdefault(r["configuration"], {"metric": metric, "epochs": {}})
        for h in r["history"]:
            c["epochs"].setdefault(int(h["epoch"]), []).append((h[metric], h["train_loss"]))
    return {name: {"metric": c["metric"], "epoch": sorted(c["epochs"]),
                   "val": [statistics.fmean(v for v, _ in c["epochs"][e]) for e in sorted(c["epochs"])],
                   "train_loss": [statistics.fmean(t for _, t in c["epochs"][e]) for e in sorted(c["epochs"])]}
            for name, c in curves.items()}


def localization_rows(study: Study, cells: list[Cell], runs: list[dict]) -> tuple[list[dict], dict | None]:
    """Per configuration of the localisation part: its test metric and each map's scores
    (Grad-CAM, its own map where it has one); plus the reference maps (random, centre, box) of the
    baseline's cell, and the explain settings. ``runs``: the cells' rows, in the same order."""
    rows, reference, settings = [], None, None
    for cell, r in zip(cells, runs, strict=True):
        if cell.part != LOCALIZATION:
            continue
        row = {"configuration": r["configuration"], "status": r["status"], "test": r.get("test")}
        scores = read_rebuildable(cell.explain_folder / SCORES_FILE, LEFT_OUT)
        if scores is not None:
            settings = {k: scores[k] for k in ("data", "split", "images", "pairs", "tolerance", "faithfulness_images",
                                               "steps", "layer")}
            row["maps"] = {m: s for m, s in scores["methods"].items() if m not in BASELINES}
            if r["configuration"] == study.baseline_name:
                reference = {m: s for m, s in scores["methods"].items() if m in BASELINES}
        rows.append(row)
    return rows, (None if settings is None else {"settings": settings, "reference": reference})


def collect(study: Study, cells: list[Cell], out: Path) -> dict:
    """Everything the report shows."""
    runs = run_rows(cells)
    localization, explain = localization_rows(study, cells, runs)
    environment = read_rebuildable(out / ENVIRONMENT, LEFT_OUT) or {}
    costs = read_rebuildable(out / COSTS, LEFT_OUT)
    configurations = configuration_rows(study, runs, costs["configurations"] if costs else {})
    return {"study": study, "out": out, "runs": runs, "configurations": configurations,
            "curves": learning_curves(runs), "localization": localization, "explain": explain,
            "environment": environment, "cost_settings": costs["settings"] if costs else None}
