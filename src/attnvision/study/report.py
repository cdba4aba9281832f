"""A study's report from its folder (``results.collect``): ``report.html`` (one self-contained
file: inline CSS, inline JavaScript for sorting, plots as inline SVG, the gallery as a data URI;
no network access, no external URL), ``report.md``, ``results.csv`` (one row per run and one per
configuration) and ``plots/*.png`` + ``*.svg``; plus the summary table printed to the terminal.

One document, rendered twice. ``document(data, ...)`` describes the report once: its title, a
lead paragraph and its sections in order, each a title and a list of blocks (``Paragraph``,
``Table`` of (text, sort value) cells, ``Figures`` with a caption, ``Failures``, ``KeyValues``).
The templates in ``templates/`` render that description: ``report.html.j2`` (autoescaped; the
package files ``report.css`` and ``report.js`` are inlined so the page stays one file) and
``report.md.j2`` (``|`` escaped in table cells). Neither template knows a section by name, so both
files always hold the same sections in the same order.

A table's columns are ``Column`` objects: a title, the value a cell sorts by (and results.csv
holds), the text a reader sees, and where it is shown. ``CONFIGURATION_COLUMNS`` feeds the main
table, the terminal summary and the configuration rows of results.csv; ``RUN_COLUMNS`` the runs
table and the run rows; ``LOCALIZATION_COLUMNS`` (scores from ``explain.scores.SCORE_COLUMNS``)
the localisation table.

A new section: a function returning a ``Section`` (or None when it has nothing to show), added to
the list in ``document`` where it belongs in the order. A new column: a ``Column`` in the list
of its table, with ``csv=`` when results.csv should carry it. A new kind of block: a dataclass
with a ``kind`` and a branch for it in each template.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, ClassVar, NamedTuple

import jinja2
import rich.table

from ..explain.figures import pyplot
from ..explain.scores import RATIOS, SCORE_COLUMNS
from ..profile import MACS_CONVENTION
from ..stats import POWER_FACTOR
from .layout import GALLERY, LOCALIZATION, MAIN, PLOTS, REPORT_HTML, REPORT_MD, RESULTS_CSV, TRAIN_LOG
from .results import FAMILY_ALPHA, RANDOMIZED_MODEL

REPORT, TERMINAL = "report", "terminal"  # where a column is shown: the report's tables, the summary compare prints


# ---- number formatting ------------------------------------------------------------------------

def num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def pm(mean, std, digits: int = 2) -> str:
    return num(mean, digits) + ("" if std is None else f" ± {std:.{digits}f}")


def p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def verdict(row: dict) -> str:
    paired = row.get("paired")
    if row["baseline"]:
        return "baseline"
    if not paired:
        return "–"
    ci = paired["ci"]
    if ci["low"] > 0:
        return "better"
    if ci["high"] < 0:
        return "worse"
    return "not resolved"


def median_of(row: dict, key: str):
    value = row.get(key)
    return value["median"] if isinstance(value, dict) else None


# ---- columns ----------------------------------------------------------------------------------

class Cell(NamedTuple):
    text: str
    sort: object  # None: no value (sorts last)


@dataclass(frozen=True)
class Column:
    """A column of a table of row dicts: ``value`` is what a cell sorts by and what results.csv
    holds, ``text`` what a reader sees (by default the value, a number with ``digits`` decimals)."""

    title: str  # {metric}: the selection metric; {tol}: the pointing game's tolerance; "" for results.csv only
    value: Callable[[dict], object]
    text: Callable[[dict], str] | None = None
    digits: int = 2
    csv: str | None = None  # its column in results.csv, if it has one
    shown: tuple[str, ...] = (REPORT,)
    only_if_any: bool = False  # left out of a table where no row has a value (the multi-label scores)

    def cell(self, row: dict) -> Cell:
        value = self.value(row)
        if self.text is not None:
            return Cell(self.text(row), value)
        return Cell(value if isinstance(value, str) else num(value, self.digits), value)


def item(key: str) -> Callable[[dict], object]:
    return lambda row: row.get(key)


def median(key: str) -> Callable[[dict], object]:
    return lambda row: median_of(row, key)


def spread(key: str, digits: int) -> Callable[[dict], str]:
    """Median (interquartile range) of a measured cost."""
    def text(row: dict) -> str:
        value = row.get(key)
        return f"{value['median']:.{digits}f} ({value['q1']:.{digits}f}–{value['q3']:.{digits}f})" if value else "–"
    return text


def ci_of(row: dict) -> dict:
    return (row.get("paired") or {}).get("ci") or {}


def peak_memory(row: dict):
    return row.get("memory_bytes", {}).get("peak")


def seed_p_values(row: dict) -> list[float]:
    return [s["p"] for s in ((row.get("paired") or {}).get("per_seed") or {}).values()]


def seed_ci_of(row: dict) -> dict:
    return row.get("seed_ci") or {}


def interval(ci: dict) -> str:
    return f"[{ci['low']:+.2f}, {ci['high']:+.2f}]" if ci else "–"


def family_p_text(row: dict) -> str:
    if row.get("p") is None:
        return "–"
    return p_value(row["p"]) + (" (McNemar)" if row["p_test"] == "McNemar" else " (t)")


CONFIGURATION_COLUMNS = (
    Column("configuration", item("configuration"),
           lambda r: r["configuration"] + (" (baseline)" if r["baseline"] else ""), csv="configuration",
           shown=(REPORT, TERMINAL)),
    Column("n", item("n"), lambda r: f"{r['n']}/{r['seeds_planned']}", csv="n", shown=(REPORT, TERMINAL)),
    Column("", item("metric"), csv="metric", shown=()),
    Column("best val {metric} (%)", item("val_mean"), lambda r: pm(r.get("val_mean"), r.get("val_std")),
           csv="best_val", shown=(TERMINAL,)),
    Column("test {metric} (%)", item("test_mean"), lambda r: pm(r.get("test_mean"), r.get("test_std")), csv="test",
           shown=(REPORT, TERMINAL)),
    Column("", item("test_std"), csv="test_std", shown=()),
    Column("final epoch test {metric} (%)", item("test_final_mean"),
           lambda r: pm(r.get("test_final_mean"), r.get("test_final_std")), csv="test_final"),
    Column("", item("test_final_std"), csv="test_final_std", shown=()),
    Column("test CF1 (%)", item("test_CF1"), only_if_any=True),
    Column("test OF1 (%)", item("test_OF1"), only_if_any=True),
    Column("Δ (pp)", item("delta"), lambda r: "–" if r.get("delta") is None else f"{r['delta']:+.2f}", csv="delta",
           shown=(REPORT, TERMINAL)),
    Column("95% CI of Δ, test images", lambda r: ci_of(r).get("low"), lambda r: interval(ci_of(r)), csv="ci_low",
           shown=(REPORT, TERMINAL)),
    Column("", lambda r: ci_of(r).get("high"), csv="ci_high", shown=()),
    Column("verdict, test images", verdict),
    Column("95% CI of Δ, seeds", lambda r: seed_ci_of(r).get("low"), lambda r: interval(seed_ci_of(r)),
           csv="seed_ci_low", shown=(REPORT, TERMINAL)),
    Column("", lambda r: seed_ci_of(r).get("high"), csv="seed_ci_high", shown=()),
    Column("p", item("p"), family_p_text, csv="p"),
    Column("", item("p_test"), csv="p_test", shown=()),
    Column("Holm p", item("holm_p"), lambda r: "–" if r.get("holm_p") is None else p_value(r["holm_p"]),
           csv="holm_p"),
    Column("Holm verdict (5%)", lambda r: "baseline" if r["baseline"] else r.get("holm", "–"), csv="holm",
           shown=(REPORT, TERMINAL)),
    Column("McNemar p per seed", lambda r: min(seed_p_values(r), default=None),
           lambda r: ", ".join(p_value(p) for p in seed_p_values(r)) or "–"),
    Column("resolvable (pp)", lambda r: (r.get("paired") or {}).get("resolvable")),
    Column("MDE, seeds (pp)", item("mde"), csv="mde"),
    Column("params", item("params"), digits=0, csv="params", shown=(REPORT, TERMINAL)),
    Column("MMACs", item("macs"), lambda r: num(r["macs"] / 1e6 if "macs" in r else None), csv="macs",
           shown=(REPORT, TERMINAL)),
    Column("latency b1 (ms)", median("latency_ms_b1"), spread("latency_ms_b1", 2), csv="latency_ms_b1"),
    Column("latency b32 (ms)", median("latency_ms_b32"), spread("latency_ms_b32", 1), csv="latency_ms_b32"),
    Column("train step ×", median("train_step_ratio"), csv="train_step_ratio", shown=(REPORT, TERMINAL)),
    Column("compile speed-up ×", median("compile_speedup"), csv="compile_speedup", shown=(REPORT, TERMINAL),
           only_if_any=True),
    Column("compile (s)", item("compile_time_s"), digits=1, csv="compile_time_s", only_if_any=True),
    Column("epoch (s)", item("epoch_time_s"), digits=1, csv="epoch_time_s", shown=(REPORT, TERMINAL)),
    Column("", item("train_time_s"), csv="train_time_s", shown=()),
    Column("img/s", item("images_per_s"), digits=0, csv="images_per_s", shown=(TERMINAL,)),
    Column("train memory (MB)", peak_memory, lambda r: num(peak_memory(r) / 2**20 if peak_memory(r) else None, 0),
           csv="memory_bytes"),
    Column("", item("threads"), csv="threads", shown=()),
)

RUN_COLUMNS = (
    Column("part", item("part"), csv="part"),
    Column("", item("configuration"), csv="configuration", shown=()),
    Column("run", item("cell"), csv="cell"),
    Column("", item("seed"), csv="seed", shown=()),
    Column("status", item("status"), lambda r: f"failed: {r['error']}" if r["status"] == "failed" else r["status"],
           csv="status"),
    Column("", item("metric"), csv="metric", shown=()),
    Column("best val (%)", item("best_val"), csv="best_val"),
    Column("test (%)", item("test"), csv="test"),
    Column("final epoch test (%)", item("test_final"), csv="test_final"),
    Column("", item("params"), csv="params", shown=()),
    Column("", item("macs"), csv="macs", shown=()),
    Column("epochs", item("epochs"), digits=0),
    Column("", item("epoch_time_s"), csv="epoch_time_s", shown=()),
    Column("train time (s)", item("train_time_s"), digits=0, csv="train_time_s"),
    Column("img/s", item("images_per_s"), digits=0, csv="images_per_s"),
    Column("threads", item("threads"), digits=0, csv="threads"),
    Column("command", item("command"), csv="command"),
)

MAP_NAMES = {"gradcam": "Grad-CAM", "attention": "own map", "integrated_gradients": "IG", "occlusion": "occlusion"}

# rows of localization_records: one per (configuration, map), then the reference maps; a score is
# the mean over the localisation seeds, "± std" beside it with two or more
LOCALIZATION_COLUMNS = (
    Column("configuration", item("order"), item("label")),
    Column("map", item("map"), lambda r: MAP_NAMES.get(r["map"], r["map"]) or "–"),
    Column("n", item("n"), digits=0),
    Column("test {metric} (%)", item("test"), lambda r: pm(r.get("test"), r.get("test_std"))),
    Column("accuracy vs baseline", item("accuracy_delta"), lambda r: r.get("accuracy_note") or "–"),
    *(Column(title, lambda r, key=key: r["scores"].get(key),
             lambda r, key=key: pm(r["scores"].get(key), r["score_std"].get(key), 2 if key in RATIOS else 1),
             digits=2 if key in RATIOS else 1)
      for key, title in SCORE_COLUMNS),
)

# rows of sanity_records: one per (configuration, map)
SANITY_COLUMNS = (
    Column("configuration", item("configuration")),
    Column("map", item("map"), lambda r: MAP_NAMES.get(r["map"], r["map"])),
    Column("seeds", item("seeds"), digits=0),
    Column("Spearman, all weights re-drawn", item("spearman")),
    Column("SSIM, all weights re-drawn", item("ssim")),
    Column("Spearman, permuted labels", item("permuted_spearman")),
    Column("SSIM, permuted labels", item("permuted_ssim")),
    Column("verdict", lambda r: r["fails"] or r["fails_permuted"], lambda r: sanity_verdict(r)),
)


def metric_of(rows) -> str:
    return next((r["metric"] for r in rows if "metric" in r), "acc")


def shown_columns(columns, rows: list[dict], rendering: str) -> list[Column]:
    """The columns ``rendering`` (REPORT or TERMINAL) shows for these rows."""
    return [c for c in columns
            if rendering in c.shown and not (c.only_if_any and all(c.value(r) is None for r in rows))]


def localization_records(data: dict) -> list[dict]:
    """The rows of the localisation table; a reference map sorts after the configurations."""
    records = [{"order": r["configuration"], "label": r["configuration"] + (" (baseline)" if r["baseline"] else ""),
                "map": name, "n": r["n"], "test": r.get("test"), "test_std": r.get("test_std"),
                **accuracy_comparison(r), "scores": scores["mean"], "score_std": scores["std"]}
               for r in data["localization"] for name, scores in r.get("maps", {}).items()]
    reference = data["explain"]["reference"] or {}
    return records + [{"order": "~" + name, "label": f"reference: {name}" + ("" if name == RANDOMIZED_MODEL else " map"),
                       "map": "gradcam" if name == RANDOMIZED_MODEL else "", "n": None, "test": None,
                       "scores": scores, "score_std": {}} for name, scores in reference.items()]


def accuracy_comparison(row: dict) -> dict:
    """The test-accuracy difference to the baseline's localisation runs (accuracy_delta, pp) and
    what it means for the map scores beside it (accuracy_note): "unequal" when the test images'
    95% bootstrap CI of the difference excludes 0, i.e. the accuracies differ by more than the
    test set resolves and the maps are compared at unequal quality."""
    if row["baseline"]:
        return {"accuracy_delta": 0.0, "accuracy_note": "baseline"}
    ci = (row.get("paired") or {}).get("ci")
    if not ci:
        return {"accuracy_delta": None, "accuracy_note": "–"}
    unequal = ci["low"] > 0 or ci["high"] < 0
    return {"accuracy_delta": ci["mean"], "accuracy_note": f"{ci['mean']:+.2f} {interval(ci)}"
                                                           + (": UNEQUAL" if unequal else ": equal within noise")}


def sanity_verdict(row: dict) -> str:
    failures = (["FAILS: barely changes when the weights are re-drawn"] if row["fails"] else []) + \
        (["FAILS: resembles the permuted-label model's map"] if row["fails_permuted"] else [])
    return "; ".join(failures) or "passes"


def sanity_records(data: dict) -> list[dict]:
    return [{"configuration": r["configuration"], "map": name, **checks}
            for r in data["localization"] for name, checks in r.get("sanity", {}).items()]


# ---- the document -----------------------------------------------------------------------------

class Row(NamedTuple):
    cells: list[Cell]
    baseline: bool


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    id: str
    header: list[str]
    rows: list[Row]


@dataclass
class Paragraph:
    kind: ClassVar[str] = "paragraph"
    text: str


@dataclass
class Figure:
    id: str
    alt: str
    path: str  # the image file, relative to the report (what the Markdown links)
    svg: str = ""  # inline SVG markup (the HTML shows it) ...
    data_uri: str = ""  # ... or the image itself as a data URI


@dataclass
class Figures:
    kind: ClassVar[str] = "figures"
    figures: list[Figure]
    id: str = ""
    caption: str = ""


@dataclass
class Failures:
    kind: ClassVar[str] = "failures"
    items: list[str]


@dataclass
class KeyValues:
    kind: ClassVar[str] = "key_values"
    id: str
    pairs: list[tuple[str, str]]


@dataclass
class Section:
    title: str
    blocks: list


@dataclass
class Document:
    title: str
    lead: str
    sections: list[Section]
    warning: str = ""  # what a reader must know first (``Study.note``), shown above the lead


def table(table_id: str, columns, rows: list[dict], **headings: str) -> Table:
    """A report table of ``rows`` in the columns shown in the report; ``headings`` fill the titles'
    placeholders. A row with ``baseline: True`` is marked."""
    columns = shown_columns(columns, rows, REPORT)
    return Table(table_id, [c.title.format(**headings) for c in columns],
                 [Row([c.cell(r) for c in columns], bool(r.get("baseline"))) for r in rows])


def design_note(study, screen: list[tuple[str, float]] | None) -> str:
    recipe = ", ".join(f"{k}={v}" for k, v in study.recipe.items())
    said = (f"Grid: model {study.model} × attention {[a or 'none' for a in study.attn]} × head "
            f"{[h or 'own' for h in study.head]}, seeds {study.seed}; recipe: {recipe}. The checkpoint of "
            "each run is chosen on its validation split; the test split is evaluated once.")
    if study.confirm is not None:
        top = [name for name, _ in screen or [] if name not in study.confirm][:study.confirm_top]
        said += (f" Screening plus confirmation: seed {study.seed[0]} trains every configuration (the screen); "
                 f"seeds {study.seed[1:]}" + (" and the localisation part" if study.localization else "") +
                 f" train {', '.join(study.confirm)} and the {study.confirm_top} best other(s) of the screen by "
                 "validation score (test results play no part in the choice): "
                 + (", ".join(top) if screen is not None else "not yet chosen (the screen is not finished)") + ".")
    return said


def statistics_note(study) -> str:
    k = max(1, len(study.configurations()) - 1)
    return ("n: finished seeds of those planned; mean ± sample std over seeds. Test: the checkpoint chosen on "
            "validation; final epoch: the last epoch's weights on the same test images, never selected on ('–' "
            "for runs older than that record). Δ: mean over common seeds of the paired difference to the "
            "baseline, in percentage points. 95% CI of Δ, test images: paired bootstrap over test images of the "
            "per-image correctness difference averaged over seeds (2,000 resamples; mAP difference for "
            "multi-label data, 500): the test set's sampling noise only; its verdict is 'better'/'worse' when "
            "it excludes 0. 95% CI of Δ, seeds: the paired t interval over seeds, mean ± t(0.975, n−1)·s/√n "
            "of the per-seed differences ('–' below 2 seeds): seed-to-seed and test-set noise together. p: one "
            "per configuration, the paired t test over seeds (t) when it has 2 or more, else the single seed's "
            f"McNemar test; Holm p: Holm's step-down adjustment over the (up to) {k} configurations compared "
            "with the baseline, and its verdict at a family-wise error rate of 5%. McNemar p per seed: exact "
            "two-sided test on the same test images, uncorrected. Resolvable: the difference a McNemar test "
            "detects with 80% power at α = 0.05 given the discordant images observed (2.8·√(b+c)/N, mean over "
            "seeds). MDE, seeds: the difference the seeds run detect with 80% power at α = 0.05 (two-sided), "
            "2.8·σ·√(2/k) with k common seeds and σ the seed-to-seed std of the test metric pooled over all "
            "configurations (a normal approximation: with few seeds the t test needs a larger difference).")


def resolution_note(data: dict) -> str:
    """What the test set and the seeds can resolve, and which differences survive Holm, in words."""
    noise, rows, study = data["noise"], data["configurations"], data["study"]
    said = []
    if noise["binomial_se"] is not None:
        resolvable = [r["paired"]["resolvable"] for r in rows if r.get("paired")]
        said.append(f"The test set has {noise['images']:,} images: one run's accuracy at the baseline's "
                    f"{noise['baseline_test']:.2f}% has a binomial standard error of {noise['binomial_se']:.2f} pp, "
                    f"and paired comparisons on these images resolve differences of {min(resolvable):.2f}–"
                    f"{max(resolvable):.2f} pp (resolvable column); smaller ones are test-set noise.")
    if noise["sigma"] is not None:
        k = len(study.seed)
        said.append(f"Across seeds the test {metric_of(rows)} varies with a pooled std of {noise['sigma']:.2f} pp "
                    f"({noise['df']} degrees of freedom): with {k} seed(s) per "
                    f"{'confirmed ' if study.confirm is not None else ''}configuration the smallest difference "
                    f"detected with 80% power is {POWER_FACTOR * noise['sigma'] * math.sqrt(2 / k):.2f} pp; smaller "
                    "published gains cannot be confirmed or ruled out here.")
    else:
        said.append("With one seed per configuration the seed-to-seed variation is not measured: a difference "
                    "resolved on the test images may not hold for another seed.")
    family = [r for r in rows if r.get("holm_p") is not None]
    if family:
        survivors = [f"{r['configuration']} ({r['delta']:+.2f} pp, Holm p {p_value(r['holm_p'])})"
                     for r in family if r["holm_p"] < FAMILY_ALPHA]
        lost = [r["configuration"] for r in family if r["holm_p"] >= FAMILY_ALPHA and verdict(r) in ("better", "worse")]
        said.append(f"Holm's correction over {len(family)} comparison(s) at family-wise 5% (its first and "
                    f"strictest step is the Bonferroni level 0.05/{len(family)} = {FAMILY_ALPHA / len(family):.4f}): "
                    + (f"surviving: {', '.join(survivors)}." if survivors else "no difference survives.")
                    + (f" Resolved on the test images but not surviving Holm: {', '.join(lost)}." if lost else ""))
    return " ".join(said)


def positive_control_note(control: dict, baseline: str) -> str:
    name, row, ci = control["configuration"], control["row"], control["interval"]
    if control["appeared"] is None:
        return (f"Positive control: {name} is expected to beat {baseline}, but has no finished comparison with it "
                "yet; until it has, no null result of this study should be read.")
    measured = f"Δ {row['delta']:+.2f} pp, {control['basis']} {interval(ci)}"
    if control["appeared"]:
        return (f"Positive control: {name} beats {baseline} as expected ({measured}): the study can show a gain "
                "of that size.")
    return (f"Positive control FAILED: {name} was expected to beat {baseline} and did not ({measured}). The "
            "study did not reproduce a known gain, so no null result in it should be read: a module "
            "'not resolved' here may still help under a recipe that shows the control's gain.")


def costs_note(costs: dict) -> str:
    return (f"Costs measured in one process on {costs['device']} with {costs['threads']} thread(s), "
            f"configurations interleaved over {costs['rounds']} rounds (torch {costs['torch']}): "
            f"latency = median (interquartile range) of {costs['rounds'] * costs['repeats']} timed calls "
            f"per batch size after warm-up; train step × = median over rounds of the per-round ratio of "
            f"the training-step time (batch {costs['batch_size']}, forward + backward + SGD step) to the "
            f"baseline's; train memory = saved activations + weights, gradients and momentum at batch "
            f"{costs['batch_size']}. MACs of one {'×'.join(map(str, costs['input']))} input: "
            f"{MACS_CONVENTION}. Epoch (s): median wall time of a training epoch in the runs themselves."
            + (" Compile speed-up × = median over rounds of the per-round ratio of the eager training step's "
               "time to that of the same model through torch.compile; compile (s) = the compiled model's first "
               "training step, which compiles, timed apart." if costs.get("compile") else ""))


def localization_note(settings: dict, seeds: int, randomized: bool) -> str:
    return (f"Each configuration retrained on {settings['data']} ({seeds} seed(s); scores are means over them, "
            f"± std with two or more) and explained on the first {settings['images']} {settings['split']} images "
            f"({settings['pairs']} image-class pairs, the ground-truth classes): Grad-CAM at the {settings['layer']} "
            "and the module's own spatial map where it has one. Pointing game with a "
            f"{settings['tolerance']:g}-pixel tolerance and without, energy in box (raw, as lift over the box's area "
            "share where a uniform map scores 1.0×, and after min-max scaling of each map), relevance rank; over "
            f"the first {settings['faithfulness_images']} images, deletion (to black) / insertion (from a Gaussian "
            f"blur, kernel 11, σ = 5 px) AUC in {settings['steps']} steps and ROAD (10–90% of the pixels removed, "
            "most or least relevant first, filled by noisy linear imputation) AUC of the class probability. "
            "Reference rows: a random map (chance), a centred Gaussian, a Sobel edge map, the box itself (upper "
            "bound)" + (", and Grad-CAM of the baseline with every weight re-drawn and BatchNorm statistics "
                        "re-estimated (randomized model): a map must beat that floor to say anything about what the "
                        "model learned" if randomized else " (scores explained before the sanity checks: no "
                        "randomized-model row)") + ". "
            "Accuracy vs baseline: the test-accuracy difference to the baseline's localisation runs with its 95% "
            "bootstrap CI over test images; UNEQUAL where it excludes 0.")


def equal_quality_note(data: dict) -> str:
    """Which configurations' maps are compared at unequal accuracy, in words."""
    unequal = [f"{r['configuration']} ({accuracy_comparison(r)['accuracy_note'].split(':')[0]} pp)"
               for r in data["localization"] if not r["baseline"] and "UNEQUAL" in accuracy_comparison(r)["accuracy_note"]]
    if not unequal:
        return ("Equal quality: no configuration's test accuracy differs from the baseline's by more than the test "
                "set resolves, so the map scores are compared at equal accuracy.")
    return ("Unequal quality: the test accuracy of " + ", ".join(unequal) + " differs from the baseline's by more "
            "than the test set resolves (95% CI excludes 0); differences in their map scores are confounded with "
            "accuracy and do not show an effect of the module alone.")


def sanity_note(threshold: float) -> str:
    return ("Sanity checks (Adebayo et al. 2018) on the same image-class pairs: each map compared with the map of "
            "the same model whose weights are re-drawn block by block from the head down to the stem (BatchNorm "
            "statistics re-estimated on 512 training images after each block; shown: every weight re-drawn), and "
            "with the map of the same architecture trained on permuted labels where the study trained one "
            "(data_randomization). Spearman rank correlation of the pixels and SSIM of the min-max scaled maps, "
            f"means over pairs and seeds. A map FAILS when its Spearman with the fully re-drawn model's map, or "
            f"with the permuted-label model's, exceeds {threshold:g}: it barely depends on what the model learned "
            "(or on the labels), and its localisation scores say little about the model.")


GALLERY_CAPTION = ("Top row: the images with their object boxes (green); below, each configuration's Grad-CAM and, "
                   "where it has one, its own spatial attention map (min-max scaled per map; a white cross marks "
                   "the maximum).")


def results_section(data: dict, svgs: dict[str, str]) -> Section:
    rows = data["configurations"]
    blocks = [table("results", CONFIGURATION_COLUMNS, rows, metric=metric_of(rows))]
    if data["positive_control"] is not None:
        blocks.append(Paragraph(positive_control_note(data["positive_control"], data["study"].baseline_name)))
    blocks += [Paragraph(resolution_note(data)), Paragraph(statistics_note(data["study"]))]
    if data["cost_settings"]:
        blocks.append(Paragraph(costs_note(data["cost_settings"])))
    if svgs:
        blocks.append(Figures([Figure(f"plot-{name}", name.replace("-", " "), f"{PLOTS}/{name}.png", svg=svg)
                               for name, svg in svgs.items()], id="plots"))
    return Section("Accuracy and cost", blocks)


def localization_section(data: dict) -> Section | None:
    if data["explain"] is None:  # no localisation part, or none of its cells explained
        return None
    settings = data["explain"]["settings"]
    metric = metric_of(r for r in data["runs"] if r["part"] == LOCALIZATION)
    return Section("Does it look at the object?", [
        table("localization", LOCALIZATION_COLUMNS, localization_records(data), metric=metric,
              tol=f"{settings['tolerance']:g}"),
        Paragraph(equal_quality_note(data)),
        Paragraph(localization_note(settings, data["study"].localization_seeds,
                                    RANDOMIZED_MODEL in (data["explain"]["reference"] or {})))])


def sanity_section(data: dict) -> Section | None:
    records = sanity_records(data)
    if not records:
        return None
    return Section("Do the maps depend on what the model learned?", [
        table("sanity", SANITY_COLUMNS, records), Paragraph(sanity_note(records[0]["threshold"]))])


def gallery_section(gallery: Path | None) -> Section | None:
    if gallery is None:
        return None
    encoded = base64.b64encode(gallery.read_bytes()).decode()
    figure = Figure("gallery", "explanation gallery", f"{PLOTS}/{GALLERY}", data_uri=f"data:image/png;base64,{encoded}")
    return Section("The same test images, every configuration", [Figures([figure], caption=GALLERY_CAPTION)])


def failures_section(data: dict) -> Section | None:
    failed = [r for r in data["runs"] if r["status"] == "failed"]
    if not failed:
        return None
    return Section("Failed runs", [Failures([f"{r['part']}/{r['cell']}: {r['error']} (log: {r['folder']}/{TRAIN_LOG})"
                                             for r in failed])])


def environment_section(data: dict) -> Section:
    env = data["environment"]
    costs = data["cost_settings"] or {}
    threads = sorted({r["threads"] for r in data["runs"] if r.get("threads")})
    return Section("Environment", [KeyValues("environment", [
        ("command", env.get("command", "–")), ("commit", env.get("commit", "–")),
        ("attnvision", env.get("attnvision", "–")), ("torch", env.get("torch", "–")),
        ("python", env.get("python", "–")), ("device", env.get("device", "–")), ("cpu", env.get("cpu", "–")),
        ("threads per run", ", ".join(map(str, threads)) or "–"),
        ("threads for costs", str(costs.get("threads", "–"))), ("jobs at once", str(env.get("jobs", "–"))),
        ("started", env.get("date", "–")), ("report built", env.get("report_date", "–")),
        ("rebuild a row", "attnvision train --config <run folder>/config.yaml (see the runs table)")])])


def document(data: dict, svgs: dict[str, str], gallery: Path | None) -> Document:
    """The report, once: what both report.html and report.md show, in their order."""
    sections = [results_section(data, svgs), localization_section(data), sanity_section(data), gallery_section(gallery),
                failures_section(data), Section("Runs", [table("runs", RUN_COLUMNS, data["runs"])]),
                environment_section(data)]
    return Document(f"Attention study: {data['study'].recipe.get('data', 'fashion-mnist')}",
                    design_note(data["study"], data.get("screen")), [s for s in sections if s is not None], data["study"].note or "")


# ---- rendering --------------------------------------------------------------------------------

TEMPLATES = "templates"  # the package folder of the templates, the style sheet and the script


def sort_attribute(value) -> str:
    """A cell's data-sort value for report.js: empty for a missing value."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def cell_class(cell: Cell) -> str:
    """A verdict or a failure stands out; text is left-aligned, numbers right-aligned."""
    if cell.text in ("better", "worse"):
        return cell.text
    if cell.text.startswith("failed"):
        return "failed text"
    return "text" if isinstance(cell.sort, str) else ""


def markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def package_text(name: str) -> str:
    return (resources.files(__package__) / TEMPLATES / name).read_text(encoding="utf-8")


def render(report: Document, name: str) -> str:
    """The report file ``name`` (report.html or report.md) from its template ``name``.j2."""
    # autoescaping for the HTML template only: Markdown shows text as written (its table cells escape "|")
    env = jinja2.Environment(loader=jinja2.PackageLoader(__package__, TEMPLATES),
                             autoescape=jinja2.select_autoescape(("html.j2",)), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(sort_attribute=sort_attribute, cell_class=cell_class, md_cell=markdown_cell)
    return env.get_template(f"{name}.j2").render(document=report, style=package_text("report.css"),
                                                 script=package_text("report.js"))


# ---- plots ------------------------------------------------------------------------------------

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower cost x, higher score y),
    in order of cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def write_plots(data: dict, folder: Path) -> dict[str, str]:
    """accuracy-vs-latency, accuracy-vs-params (Pareto front marked) and learning curves, as PNG
    and SVG; returns {name: svg text}."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r for r in data["configurations"] if r.get("test_mean") is not None]
    metric = rows[0]["metric"] if rows else "acc"
    svgs = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=120)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        fig.savefig(folder / f"{name}.svg")
        svgs[name] = buffer.getvalue()[buffer.getvalue().index("<svg"):]
        plt.close(fig)

    for name, key, label in (("accuracy-vs-latency", "latency_ms_b1", "inference latency, batch 1 (ms, median)"),
                             ("accuracy-vs-params", "params", "parameters")):
        usable = [r for r in rows if (median_of(r, key) if key.startswith("latency") else r.get(key)) is not None]
        if not usable:
            continue
        xs = [median_of(r, key) if key.startswith("latency") else r[key] for r in usable]
        ys = [r["test_mean"] for r in usable]
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.errorbar(xs, ys, yerr=[r["test_std"] or 0 for r in usable], fmt="o", capsize=3, color="tab:blue")
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:red", label="Pareto front")
        for x, y, r in zip(xs, ys, usable):
            ax.annotate(r["configuration"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric} (%), mean ± std over seeds")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, name)
    if data["curves"]:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for name, c in data["curves"].items():
            left.plot(c["epoch"], c["val"], marker="o", label=name)
            right.plot(c["epoch"], c["train_loss"], marker="o", label=name)
        left.set(xlabel="epoch", ylabel=f"validation {metric} (%), mean over seeds")
        right.set(xlabel="epoch", ylabel="training loss, mean over seeds")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        left.legend(fontsize=8)
        save(fig, "learning-curves")
    return svgs


# ---- writers ----------------------------------------------------------------------------------

def csv_values(columns, row: dict) -> dict:
    return {c.csv: c.value(row) for c in columns if c.csv}


def write_csv(data: dict, path: Path) -> None:
    """One row per run, then one per configuration, each level in its table's columns."""
    fields = ["level"] + list(dict.fromkeys(c.csv for c in (*RUN_COLUMNS, *CONFIGURATION_COLUMNS) if c.csv))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({"level": "run", **csv_values(RUN_COLUMNS, r)} for r in data["runs"])
        writer.writerows({"level": "configuration", "part": MAIN, **csv_values(CONFIGURATION_COLUMNS, r)}
                         for r in data["configurations"])


def summary_table(data: dict) -> rich.table.Table:
    """The terminal summary: one row per configuration, in the columns shown on the terminal."""
    rows = data["configurations"]
    columns = shown_columns(CONFIGURATION_COLUMNS, rows, TERMINAL)
    summary = rich.table.Table(title=f"{', '.join(data['study'].model)} on "
                                     f"{data['study'].recipe.get('data', 'fashion-mnist')}")
    for column in columns:
        summary.add_column(column.title.format(metric=metric_of(rows)),
                           justify="left" if column is columns[0] else "right")
    for r in rows:
        summary.add_row(*(column.cell(r).text for column in columns))
    return summary


def write_report(data: dict, gallery: Path | None = None) -> Path:
    """Write every report file into the study folder; returns the path of report.html."""
    out = data["out"]
    svgs = write_plots(data, out / PLOTS)
    write_csv(data, out / RESULTS_CSV)
    report = document(data, svgs, gallery)
    for name in (REPORT_MD, REPORT_HTML):
        (out / name).write_text(render(report, name), encoding="utf-8")
    return out / REPORT_HTML
