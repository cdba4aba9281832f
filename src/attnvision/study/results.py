"""A study's numbers, read from its folder: per-run rows, per-configuration rows with statistics
against the baseline, learning curves and localisation scores. Reads run folders and the
study's own files only, never the trainer's internals.

Statistics (the conventions that change what a reader concludes):

- **mean ± std over seeds**, std the sample standard deviation (n − 1), n stated; "–" for n = 1.
  Test accuracy is that of the checkpoint selected on validation; the **final epoch's** test
  accuracy (metrics.json's ``test_final``, the last weights) is shown beside it, never selected on.
- **Δ to the baseline**: the mean over seeds of the paired per-seed differences, for the seeds
  both configurations finished.
- **95% CI of Δ** (test-set noise): a paired bootstrap over test images (2,000 resamples, seeded):
  per image the difference in correctness averaged over those seeds, resampled with replacement.
  It captures the test set's sampling error only. For multi-label data the statistic is the mAP
  difference (500 resamples). The CI excluding 0 is what the report calls a resolved difference.
- **Between-seed 95% interval of Δ** (training noise and test-set noise together): the paired t
  interval over the common seeds, mean ± t_{0.975, n−1}·s/√n of the per-seed differences
  (``stats.paired_t``); "–" for n < 2. It answers whether re-running the recipe with other seeds
  keeps the sign.
- **McNemar's exact test** per seed (single-label): the images exactly one of the two models gets
  right decide it. Shown uncorrected, per seed.
- **Holm's correction** over the family of configurations compared with the baseline, one p-value
  each: the paired t test over seeds (H0: mean per-seed difference 0) when n ≥ 2 common seeds, else
  the single seed's McNemar p (single-label; a multi-label configuration with one seed has no
  p and stays out of the family). The t test is preferred because its unit is the training run:
  its spread includes seed-to-seed variation, which McNemar (one pair of trained models) cannot
  see; McNemar is used only when one seed is all there is, and the report names the test behind
  every p. A configuration "survives Holm" when its adjusted p < 0.05 (family-wise 5%).
- **Resolvable difference**: 2.8·√(b + c)/N, the accuracy difference a two-sided McNemar test
  at α = 0.05 detects with 80% power given the b + c discordant images observed among N.
- **Minimum detectable effect** over seeds: 2.8·σ·√(2/k) (two-sided α = 0.05, 80% power, k common
  seeds per arm, the two-sample normal approximation, optimistic for a t test over few seeds), σ
  the seed-to-seed std of the test metric pooled over all configurations with ≥ 2 seeds
  (Σ(n_i − 1)s_i² / Σ(n_i − 1)): every arm shares the recipe, so pooling uses every seed run rather
  than the baseline's few. Beside it the test set's own limit: the binomial s.e. √(p(1 − p)/N)
  of one run's accuracy at the baseline's p.
- **Positive control** (``Study.positive_control``): the configuration expected to beat the
  baseline (a published gain). It appeared when the lower end of its between-seed interval (one
  seed: of its bootstrap CI) is above 0; when it did not, no null result of the study is read.
- **Localisation at equal quality**: each localisation configuration's map scores are means over
  its localisation seeds (sample std beside them), and its test accuracy is compared with the
  baseline's localisation runs by the same paired bootstrap over test images; where that CI
  excludes 0 the accuracies differ by more than the test set resolves and the report marks the
  map comparison as one at unequal quality (confounded with accuracy).
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
from ..explain.sanity import FAIL_SPEARMAN
from ..explain.scores import BASELINES, SCORE_COLUMNS
from ..metrics import average_precision
from ..run_folder import LOG, PREDICTIONS
from ..stats import POWER_FACTOR, holm, mcnemar_exact, paired_bootstrap, paired_t
from .grid import Cell, Study, load_grid
from .layout import COSTS, ENVIRONMENT, LOCALIZATION, MAIN, STUDY_FILE

LEFT_OUT = "left out of this report (`attnvision compare` rebuilds it)"
FAMILY_ALPHA = 0.05  # Holm's family-wise error rate
RANDOMIZED_MODEL = "randomized model"  # the reference row of Grad-CAM on the fully re-drawn baseline
SCORE_KEYS = tuple(key for key, _ in SCORE_COLUMNS)  # the scores a localisation row averages over seeds


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
                       best_val=metrics["best_val"][f"val_{metric}"],
                       test_final=(metrics.get("test_final") or {}).get(metric), params=metrics["params"], macs=metrics["macs"],
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
            per_seed[seed] = {**test, "resolvable": 100 * POWER_FACTOR * math.sqrt(test["only_a"] + test["only_b"]) / n}
            outcomes.append(right_a.double() - right_b.double())
        else:
            outcomes.append((a, b, targets))
    if task == "single":
        ci = paired_bootstrap(100 * torch.stack(outcomes).mean(0))
        resolvable = statistics.fmean(s["resolvable"] for s in per_seed.values())
        return {"seeds": seeds, "per_seed": per_seed, "ci": ci, "resolvable": resolvable, "images": n}
    return {"seeds": seeds, "per_seed": {}, "ci": map_bootstrap(outcomes), "resolvable": None,
            "images": len(outcomes[0][2])}


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
               "seeds_planned": sum(r["configuration"] == name for r in main),  # a screened-out one: 1
               "failed": [r["cell"] for r in main if r["configuration"] == name and r["status"] == "failed"]}
        if seeds:
            first = done[seeds[0]]
            row["metric"], row["task"] = first["metric"], first["task"]
            row["test_mean"], row["test_std"] = mean_std([done[s]["test"] for s in seeds])
            row["val_mean"], row["val_std"] = mean_std([done[s]["best_val"] for s in seeds])
            finals = [done[s]["test_final"] for s in seeds if done[s].get("test_final") is not None]
            if finals:  # runs older than test_final lack it
                row["test_final_mean"], row["test_final_std"] = mean_std(finals)
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
                    diffs = [done[s]["test"] - base[s]["test"] for s in common]
                    row["delta"], row["seed_ci"] = statistics.fmean(diffs), paired_t(diffs)
                    row["paired"] = paired_comparison({s: Path(done[s]["folder"]) for s in common},
                                                      {s: Path(base[s]["folder"]) for s in common}, row["task"])
        row.update(costs.get(name, {}))
        rows.append(row)
    add_family_statistics(rows, seed_noise(rows))
    return rows


def seed_noise(rows: list[dict]) -> dict:
    """What the study can resolve: the pooled seed-to-seed std ``sigma`` of the test metric (None
    without a configuration of ≥ 2 seeds) with its degrees of freedom ``df``, the test images
    ``images`` and, for single-label data, the binomial s.e. of one run's accuracy at the
    baseline's mean (``binomial_se``, in points)."""
    spread = [r for r in rows if r.get("test_std") is not None]
    df = sum(r["n"] - 1 for r in spread)
    sigma = math.sqrt(sum((r["n"] - 1) * r["test_std"] ** 2 for r in spread) / df) if df else None
    images = next((r["paired"]["images"] for r in rows if r.get("paired")), None)
    base = next(r for r in rows if r["baseline"])
    binomial_se = None
    if images and base.get("task") == "single":
        p = base["test_mean"] / 100
        binomial_se = 100 * math.sqrt(p * (1 - p) / images)
    return {"sigma": sigma, "df": df, "images": images, "binomial_se": binomial_se,
            "baseline_test": base.get("test_mean")}


def family_p(row: dict) -> tuple[float, str] | None:
    """The configuration's one p-value against the baseline and its test (module docstring)."""
    if row.get("seed_ci"):
        return row["seed_ci"]["p"], "t over seeds"
    per_seed = (row.get("paired") or {}).get("per_seed") or {}
    if len(per_seed) == 1:
        return next(iter(per_seed.values()))["p"], "McNemar"
    return None


def add_family_statistics(rows: list[dict], noise: dict) -> None:
    """Per compared configuration: its p (``p``, ``p_test``), Holm's adjusted p (``holm_p``) and
    verdict at family-wise 5% (``holm``), and the minimum detectable effect for its seeds (``mde``)."""
    family = {}
    for row in rows:
        if row.get("paired"):
            found = family_p(row)
            if found is not None:
                row["p"], row["p_test"] = found
                family[row["configuration"]] = row["p"]
            if noise["sigma"] is not None:
                row["mde"] = POWER_FACTOR * noise["sigma"] * math.sqrt(2 / len(row["paired"]["seeds"]))
    adjusted = holm(family)
    for row in rows:
        if row["configuration"] in adjusted:
            row["holm_p"] = adjusted[row["configuration"]]
            row["holm"] = (("better" if row["delta"] > 0 else "worse") if row["holm_p"] < FAMILY_ALPHA
                           else "not significant")
            row["family_size"] = len(adjusted)


def positive_control(study: Study, rows: list[dict]) -> dict | None:
    """Did the configuration expected to beat the baseline do so? {"configuration", "row",
    "interval" (between-seed, or the bootstrap CI for one seed), "basis", "appeared"}; None when the
    study names none. "appeared" is None while it has no comparison with the baseline."""
    if study.positive_control is None:
        return None
    row = next(r for r in rows if r["configuration"] == study.positive_control)
    interval, basis = (row["seed_ci"], "between-seed 95% interval") if row.get("seed_ci") else \
        ((row.get("paired") or {}).get("ci"), "test-image bootstrap 95% CI (one seed)")
    return {"configuration": row["configuration"], "row": row, "interval": interval, "basis": basis,
            "appeared": None if interval is None else interval["low"] > 0}


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
    """Per configuration of the localisation part, over its finished seeds: the test metric (mean,
    std) with its paired comparison to the baseline's localisation runs (``paired``: whether the
    maps are compared at equal accuracy), each map's scores (mean and std of every score: Grad-CAM,
    its own map where it has one) and its sanity checks. Plus the reference maps (random, centre,
    edge, box, and Grad-CAM of the fully re-drawn model) of the baseline's first seed, and the explain
    settings. ``runs``: the cells' rows, in the same order."""
    found: dict[str, list[tuple[dict, dict | None]]] = {}
    reference, settings = None, None
    for cell, r in zip(cells, runs, strict=True):
        if cell.part != LOCALIZATION:
            continue
        scores = read_rebuildable(cell.explain_folder / SCORES_FILE, LEFT_OUT) if r["status"] == "finished" else None
        found.setdefault(r["configuration"], []).append((r, scores))
        if scores is not None and settings is None:
            settings = {k: scores[k] for k in ("data", "split", "images", "pairs", "tolerance", "faithfulness_images",
                                               "steps", "layer")}
        if scores is not None and reference is None and r["configuration"] == study.baseline_name:
            reference = {m: s for m, s in scores["methods"].items() if m in BASELINES}
            randomized = (scores.get("sanity") or {}).get("gradcam", {}).get("randomized_model_scores")
            if randomized is not None:
                reference[RANDOMIZED_MODEL] = randomized
    base = {r["seed"]: Path(r["folder"]) for r, _ in found.get(study.baseline_name, []) if r["status"] == "finished"}
    rows = [localization_row(name, found.get(name, []), base, name == study.baseline_name)
            for name, _ in study.configurations() if name in found]
    return rows, (None if settings is None else {"settings": settings, "reference": reference})


def localization_row(name: str, seeds: list[tuple[dict, dict | None]], base: dict[int, Path], baseline: bool) -> dict:
    """One configuration's localisation row from its (run row, scores) per seed (``localization_rows``)."""
    finished = [r for r, _ in seeds if r["status"] == "finished"]
    row = {"configuration": name, "baseline": baseline, "n": len(finished), "status": seeds[0][0]["status"]}
    if not finished:
        return row
    row["test"], row["test_std"] = mean_std([r["test"] for r in finished])
    if not baseline:
        row["paired"] = paired_comparison({r["seed"]: Path(r["folder"]) for r in finished}, base, finished[0]["task"])
    explained = [s for _, s in seeds if s is not None]
    if explained:
        maps = [m for m in explained[0]["methods"] if m not in BASELINES]
        row["maps"] = {m: seed_summary([s["methods"][m] for s in explained if m in s["methods"]]) for m in maps}
    sanity = [s["sanity"] for s in explained if s.get("sanity")]
    if sanity:
        row["sanity"] = {m: sanity_summary([s[m] for s in sanity if m in s]) for m in sanity[0]}
    return row


def seed_summary(per_seed: list[dict]) -> dict:
    """{"mean": {score: mean over seeds}, "std": {score: sample std, None for one seed}, "n"}."""
    keys = [k for k in SCORE_KEYS if k in per_seed[0]]
    spread = {k: mean_std([s[k] for s in per_seed if s.get(k) is not None]) for k in keys}
    return {"mean": {k: v[0] for k, v in spread.items()}, "std": {k: v[1] for k, v in spread.items()},
            "n": len(per_seed)}


def sanity_summary(per_seed: list[dict]) -> dict:
    """A method's sanity checks over seeds: mean Spearman and SSIM at the fully re-drawn model and
    against the permuted-label model (None where not tested), and whether it fails either test (mean
    Spearman above ``explain.sanity.FAIL_SPEARMAN``: "fails", "fails_permuted")."""
    full = [s["steps"][-1] for s in per_seed]
    permuted = [s["data_randomization"] for s in per_seed if "data_randomization" in s]
    spearman = statistics.fmean(f["spearman"] for f in full)
    permuted_spearman = statistics.fmean(p["spearman"] for p in permuted) if permuted else None
    return {"seeds": len(per_seed), "spearman": spearman, "ssim": statistics.fmean(f["ssim"] for f in full),
            "permuted_spearman": permuted_spearman,
            "permuted_ssim": statistics.fmean(p["ssim"] for p in permuted) if permuted else None,
            "fails": spearman > FAIL_SPEARMAN,
            "fails_permuted": permuted_spearman is not None and permuted_spearman > FAIL_SPEARMAN,
            "threshold": FAIL_SPEARMAN}


def collect(study: Study, cells: list[Cell], out: Path) -> dict:
    """Everything the report shows."""
    runs = run_rows(cells)
    localization, explain = localization_rows(study, cells, runs)
    environment = read_rebuildable(out / ENVIRONMENT, LEFT_OUT) or {}
    costs = read_rebuildable(out / COSTS, LEFT_OUT)
    configurations = configuration_rows(study, runs, costs["configurations"] if costs else {})
    return {"study": study, "out": out, "runs": runs, "configurations": configurations,
            "noise": seed_noise(configurations), "positive_control": positive_control(study, configurations),
            "curves": learning_curves(runs), "localization": localization, "explain": explain,
            "environment": environment, "cost_settings": costs["settings"] if costs else None,
            "screen": None if study.confirm is None else study.screen_ranking(out)}
