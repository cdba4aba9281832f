"""What a study trains: one dataset and recipe, a grid of configurations (models × attention
modules × heads) and seeds, and optionally a localisation part on data with object boxes; and
its cells, each a run folder with what every phase asks of it. The study folder's names are
spelled in ``layout``.

The localisation part retrains every configuration (the first ``localization_seeds`` seeds) on
data with boxes (by default single-item Fashion-MNIST scenes) when the study's own data has none,
since maps can only be scored against boxes; with box data it would explain the main cells
instead, but keeping the parts separate keeps the main data's recipe free to be anything. With
``data_randomization`` each configuration is trained once more (first seed) on permuted labels,
the reference of the sanity checks' data randomisation test (Adebayo et al. 2018).
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..checkpoint import DamagedFileError, read_json
from ..attention import attn_class, attn_label, list_attn
from ..config import TrainConfig, merge_options, read_recipe, read_yaml_mapping
from ..run_folder import BEST, CONFIG, METRICS, holds_run
from .layout import EXPLAIN, FAILED, LOCALIZATION, MAIN, PERMUTED, TRAIN_LOG

GRID_AXES = ("model", "attn", "head", "seed")  # TrainConfig fields that take lists in a study


def recipe_options(name: str) -> dict:
    """A packaged recipe (``config.read_recipe``) as a study's recipe: its options less the grid
    axes (the recipe's model is the study's model axis)."""
    return {k: v for k, v in read_recipe(name).items() if k not in GRID_AXES}


MODULES = [None, "se", "eca", "cbam", "bam", "eca_cbam"]  # the attention modules the presets compare

# Composed gates of the modules study (gate.py): ECA with the parameter-free SimAM; GCT's
# normalised channel gate in CBAM's place; CBAM with FcaNet's DCT descriptor instead of avg+max.
COMPOSED_GATES = ["gate:channel=eca,spatial=simam", "gate:channel=gct,spatial=cbam",
                  "gate:channel=se,pool=dct,spatial=cbam"]


def channel_spatial_modules() -> list[str]:
    """Every registered module that gates channels or positions inside a ResNet (kind channel,
    spatial or channel+spatial, placement block or stage), less the composer's default (CBAM)."""
    return [name for name in list_attn() if name != "gate" and attn_class(name).kind != "self-attention"
            and attn_class(name).placement in ("block", "stage")]

# cifar: the published comparison (SimAM, ICML 2021: ResNet-56 with SE/CBAM/ECA/…, mean ± std of 5
# runs), for a GPU machine. Recipe of ZjjConan/SimAM:main_cifar.py: SGD momentum 0.9 (Nesterov here,
# as every run of ours), lr 0.1, batch 128, weight decay 5e-4, 164 epochs with the LR ÷10 after
# epochs 81 and 122 (50% / 75%), pad-4 random crop + horizontal flip, no warm-up. Deviations: the
# checkpoint is selected on 5,000 validation images carved from the training set (so 45,000
# train), not on the test set; the test set is evaluated once. SE on ResNet-56 / CIFAR-100 is the
# positive control (+1.94 pp, osmr/imgclsmob's model store): the report says whether it appeared.
# One model per study, since every configuration is compared with one baseline; ResNet-20 is
# `--model resnet20` (published SE gain +1.10 pp). No localisation part: its question is accuracy.
# GPU time is an ESTIMATE, not measured on a GPU. Basis: ResNet-56 costs 125.8 MMACs per image
# (count_macs), so a training step of 128 images ≈ 3 × 2 × 125.8e6 × 128 ≈ 97 GFLOP; assuming a
# data-centre GPU sustains 5-10 TFLOP/s on these narrow (16-64 channel) fp32 convolutions, a step
# takes 10-20 ms, an epoch (352 steps, data already on the device) 4-8 s with validation, a run of
# 164 epochs 11-22 min, the 30 runs (6 modules × 5 seeds) 5.5-11 GPU-hours one at a time. Measured
# on CPU for scale (2 shared AMD EPYC cores, load ≈ 8, torch 2.13, `profile.train_step_time`,
# batch 128, channels-last): 10.6-14.6 s per step, i.e. about 8 CPU-days per run: not a CPU study.
CIFAR_STUDY = {
    "recipe": {"data": "cifar100", "epochs": 164, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
               "weight_decay": 5e-4, "schedule": "step", "milestones": [81, 122], "step_gamma": 0.1,
               "warmup_epochs": 0, "crop_pad": 4, "hflip": True},
    "model": ["resnet56"],
    "attn": MODULES,
    "seed": [0, 1, 2, 3, 4],
    "localization": None,
    "positive_control": "se",
}

PRESETS = {
    # make demo: ≤ 10 min on 2 CPU cores, every part of the report present. Batch 32: on 2 cores it
    # trains faster per image than 128 and its 4× more steps learn more in 2 epochs (one probe each:
    # Fashion-MNIST 76.6% vs 72.4% test accuracy, scenes 54.6% vs 20.8%; batch 128: the none-s0 runs
    # of this preset before; batch 32: `attnvision train --train-subset 4000 --val-size 2000 --epochs 2
    # --batch-size 32 --threads 1`, and `--data fashion-mnist-scenes-single --val-size 500
    # --data-kw '{"n_train": 2000, "n_test": 500}'` with the same epochs, batch and threads)
    "quick": {
        "recipe": {"data": "fashion-mnist", "epochs": 2, "train_subset": 4000, "val_size": 2000, "batch_size": 32},
        "attn": MODULES,
        "seed": [0],
        "localization": {"data": "fashion-mnist-scenes-single", "epochs": 2, "val_size": 500,
                         "data_kw": {"n_train": 2000, "n_test": 500}},
        "explain_images": 50,  # the sanity checks cost 11 map passes each; 100 images took the demo past 10 min
        "faithfulness_images": 16,
        "note": "A demonstration recipe (2 epochs on 4,000 images, about 77% test accuracy; the localisation "
                "models about 55%): every part of the report is shown, but its numbers are far from converged "
                "(94.5% after 30 epochs) and say nothing about the modules. Conclusions need `--preset "
                "converged`.",
    },
    # conclusions that hold (docs/recipe-search.md): the measured 20-epoch recipe on all 55,000
    # Fashion-MNIST images (within 0.3 pp of the 30-epoch reference), 3 seeds; the localisation part on
    # single items with clutter (the 16-epoch scenes recipe), 3 seeds, sanity checks with each
    # configuration's permuted-label twin. About 20 h on 2 CPU cores (main 9 h, localisation 7 h,
    # permuted twins 2 h, explanations 2 h: from the recipes' measured epoch times), so a GPU or a night
    "converged": {
        "recipe": recipe_options("fashion-mnist-converged"),
        "attn": MODULES,
        "seed": [0, 1, 2],
        "localization": recipe_options("scenes-converged"),
        "localization_seeds": 3,
        "data_randomization": True,
        "explain_images": 1000,
        "faithfulness_images": 128,
    },
    # the full-length recipe of docs/results.md, 5 seeds: for a GPU machine
    "full": {
        "recipe": {"data": "fashion-mnist", "epochs": 15},
        "attn": MODULES,
        "seed": [0, 1, 2, 3, 4],
        "localization": {"data": "fashion-mnist-scenes-single", "epochs": 15},
        "explain_images": 2000,
    },
    # issue 17: every channel/spatial module and three composed gates, screened on seed 0 and
    # confirmed on seeds 1-2 for the baseline, the papers' four and the screen's best two. Recipe: the
    # converged one (linear-to-zero, label smoothing, flip TTA) on 15,000 training images for 10 epochs.
    # Budget (2 jobs × 1 thread on 2 CPU cores; measured 230-300 img/s per job for resnet20 with
    # a gate, 55 img/s on 64-px scenes): screen 25 runs + confirmation 14 runs ≈ 5.9M images ≈ 3.5 h;
    # localisation (7 confirmed configurations, 8 epochs on 4,000 cluttered scenes, 2,000 for
    # validation) 0.6 h, its
    # permuted-label twins 0.6 h, explanations and costs ≈ 0.5 h: about 5-6 h, resumable.
    "modules": {
        "recipe": {**recipe_options("fashion-mnist-converged"), "train_subset": 15000, "epochs": 10},
        "attn": [None, *channel_spatial_modules(), *COMPOSED_GATES],
        "seed": [0, 1, 2],
        "confirm": ["none", "se", "eca", "cbam", "bam"],
        "confirm_top": 2,
        "localization": {**recipe_options("scenes-converged"), "epochs": 8,
                         "data_kw": {**recipe_options("scenes-converged")["data_kw"], "n_train": 6000}},
        "data_randomization": True,
        "explain_images": 500,
        "faithfulness_images": 64,
        "note": "Screening plus confirmation on a shortened converged recipe (15,000 images, 10 epochs): "
                "every module is trained once; only the baseline, SE, ECA, CBAM, BAM and the screen's two best "
                "get three seeds and the localisation part. A module's screen result alone is one seed: "
                "read it as a ranking, not a conclusion.",
    },
    "cifar": CIFAR_STUDY,
    # the same on CIFAR-10, without a positive control: SE's published CIFAR-10 gain on ResNet-56
    # (+0.39 pp) is below what 5 seeds detect, so its absence would say nothing
    "cifar10": {**CIFAR_STUDY, "recipe": {**CIFAR_STUDY["recipe"], "data": "cifar10"}, "positive_control": None},
}


@dataclass
class Cell:
    """One training run of the study: its config, and its folder's state and files as the phases
    ask for them (read from disk on every call: cells are built before they train)."""

    name: str  # "<configuration>-s<seed>"
    configuration: str
    part: str  # MAIN (the main grid), LOCALIZATION or PERMUTED (its permuted-label twin)
    config: TrainConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.out)

    @property
    def key(self) -> str:
        """"<part>/<name>": the cell's name in progress lines and results."""
        return f"{self.part}/{self.name}"

    @property
    def checkpoint(self) -> Path:
        return self.folder / BEST

    @property
    def log(self) -> Path:
        """The cell process's output."""
        return self.folder / TRAIN_LOG

    @property
    def explain_folder(self) -> Path:
        """The folder of ``attnvision explain``'s output (localisation cells)."""
        return self.folder / EXPLAIN

    @property
    def command(self) -> str:
        """The command a person types to rebuild the cell."""
        return "attnvision train --config " + shlex.quote(str(self.folder / CONFIG))

    @property
    def finished(self) -> bool:
        return (self.folder / METRICS).is_file()

    @property
    def metrics(self) -> dict | None:
        """The run's metrics.json (None until it has finished); a damaged one is an error naming it."""
        try:
            return read_json(self.folder / METRICS)
        except DamagedFileError as e:
            raise DamagedFileError(f"{e}: delete it and run `attnvision compare` again to rebuild it (the cell "
                                   "resumes from its last.pt, or retrains)") from None

    @property
    def error(self) -> str | None:
        """The error of a failed cell (None unless it has failed)."""
        failure = read_json(self.folder / FAILED)
        return None if failure is None else failure["error"]

    @property
    def state(self) -> str:
        """"finished", "interrupted" (last.pt, no metrics), "failed", or "new"; raises if the folder
        holds a run of other options."""
        started = holds_run(self.folder)
        if started and (self.folder / CONFIG).is_file():
            differences = config_differences(yaml.safe_load((self.folder / CONFIG).read_text()), asdict(self.config))
            if differences:
                raise ValueError(f"{self.folder} holds a run with other options ({', '.join(differences)}) than this "
                                 "study asks for: pick another --out, or delete that run folder to retrain it")
        if self.finished:
            return "finished"
        if (self.folder / FAILED).is_file():
            return "failed"
        return "interrupted" if started else "new"


def config_differences(recorded: dict, wanted: dict) -> list[str]:
    """'name: recorded → wanted' for every field that differs (fields a run predates count as default)."""
    defaults = asdict(TrainConfig())
    return [f"{k}: {recorded.get(k, defaults[k])!r} → {v!r}" for k, v in wanted.items()
            if recorded.get(k, defaults[k]) != v]


@dataclass
class Study:
    """The grid. ``recipe`` holds the TrainConfig fields shared by all cells; ``localization`` the
    fields that differ for the localisation part (None: no such part)."""

    recipe: dict = field(default_factory=dict)
    model: list = field(default_factory=lambda: ["resnet20"])
    attn: list = field(default_factory=lambda: [None])
    head: list = field(default_factory=lambda: [None])
    seed: list = field(default_factory=lambda: [0])
    localization: dict | None = None
    baseline: str | None = None  # a configuration name; None: the first configuration
    # a configuration expected to beat the baseline (a published gain): the report says whether it did,
    # and that no null result should be read when it did not
    positive_control: str | None = None
    explain_images: int = 500  # test images explained and scored per localisation cell
    faithfulness_images: int = 128  # of those, the first N also get deletion/insertion (the costly score)
    localization_seeds: int = 1  # the localisation part trains the first N of ``seed``
    # the sanity checks' data randomisation test: each configuration also trained on permuted labels
    # (localisation recipe, first seed), the reference its maps are compared with
    data_randomization: bool = False
    note: str | None = None  # what a reader must know about this study first (the report's header says it)
    # screening plus confirmation: the first seed trains every configuration (the screen); the other
    # seeds and the localisation part train only the configurations listed here plus the
    # ``confirm_top`` best others of the screen by validation score. None: every configuration, every seed
    confirm: list | None = None
    confirm_top: int = 1

    @classmethod
    def from_dict(cls, d: dict, source: str = "the grid") -> "Study":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
        study = cls(**d)
        study.check(source)
        return study

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self, source: str = "the grid") -> None:
        """Every cell's config is valid, names are unique, the baseline exists: before anything trains."""
        for axis in GRID_AXES:
            values = getattr(self, axis)
            if not isinstance(values, list) or not values:
                raise ValueError(f"{source}: {axis} must be a non-empty list, got {values!r}")
            if len(set(map(str, values))) != len(values):
                raise ValueError(f"{source}: {axis} lists a value twice: {values}")
        clash = set(self.recipe) & set(GRID_AXES)
        if clash:
            raise ValueError(f"{source}: {sorted(clash)} are grid axes, not recipe options: list them as axes")
        if "out" in self.recipe or (self.localization and "out" in self.localization):
            raise ValueError(f"{source}: 'out' is set by the study (its folder), not by the recipe")
        for name in ("explain_images", "faithfulness_images", "localization_seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
        if self.localization_seeds > len(self.seed):
            raise ValueError(f"{source}: localization_seeds {self.localization_seeds} is more than the "
                             f"{len(self.seed)} seed(s) of the study: list more seeds or lower it")
        if self.data_randomization and self.localization is None:
            raise ValueError(f"{source}: data_randomization retrains the localisation part on permuted labels; "
                             "this study has no localisation part")
        names = [name for name, _ in self.configurations()]
        if self.confirm is not None and (not isinstance(self.confirm, list) or set(self.confirm) - set(names)):
            raise ValueError(f"{source}: confirm must list configurations; unknown: "
                             f"{sorted(set(self.confirm or []) - set(names)) or self.confirm!r}; valid: {', '.join(names)}")
        if isinstance(self.confirm_top, bool) or not isinstance(self.confirm_top, int) or self.confirm_top < 0:
            raise ValueError(f"{source}: confirm_top must be a non-negative integer, got {self.confirm_top!r}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"{source}: baseline '{self.baseline}' is not a configuration; valid: {', '.join(names)}")
        if self.positive_control is not None and self.positive_control not in set(names) - {self.baseline_name}:
            raise ValueError(f"{source}: positive_control '{self.positive_control}' is not a configuration other than "
                             f"the baseline; valid: {', '.join(n for n in names if n != self.baseline_name)}")
        for cell in self.cells(Path("study")):
            cell.config.validate()

    def configurations(self) -> list[tuple[str, dict]]:
        """(name, {"model", "attn", "head"}) per configuration, named by the axes that vary."""
        out = []
        for model in self.model:
            for attn in self.attn:
                for head in self.head:
                    parts = ([model] if len(self.model) > 1 else []) + [attn_label(attn) if attn else "none"] + \
                            ([head or "own-head"] if len(self.head) > 1 else [])
                    out.append(("-".join(parts), {"model": model, "attn": attn, "head": head}))
        return out

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.configurations()[0][0]

    def cells(self, out: Path) -> list[Cell]:
        """Every run, seed-major (all configurations of seed 0 first, so that a study cut short
        still compares every configuration). With a screen (``confirm``), the runs beyond the screen
        are those of ``confirmed(out)``: the top of the screen joins once the whole screen is done."""
        cells = []
        parts = [(MAIN, self.seed, {})]
        if self.localization is not None:
            parts.append((LOCALIZATION, self.seed[:self.localization_seeds], self.localization))
            if self.data_randomization:
                parts.append((PERMUTED, self.seed[:1], {**self.localization, "permute_labels": True}))
        confirmed = None if self.confirm is None else self.confirmed(out)
        for part, seeds, overrides in parts:
            for seed in seeds:
                for name, axes in self.configurations():
                    screen = part == MAIN and seed == self.seed[0]
                    if confirmed is None or screen or name in confirmed:
                        cells.append(self.cell(out, part, name, axes, seed, overrides))
        return cells

    def cell(self, out: Path, part: str, name: str, axes: dict, seed: int, overrides: dict) -> Cell:
        config = TrainConfig.from_dict({**self.recipe, **overrides, **axes, "seed": seed,
                                        "out": str(out / part / f"{name}-s{seed}")})
        return Cell(f"{name}-s{seed}", name, part, config)

    def screen_ranking(self, out: Path) -> list[tuple[str, float]] | None:
        """(configuration, validation score) of the screen's finished runs, best first; None while a
        screen run has neither finished nor failed. Score: the run's selection metric at its selected
        epoch (higher is better; a loss is negated)."""
        ranking = []
        for name, axes in self.configurations():
            cell = self.cell(out, MAIN, name, axes, self.seed[0], {})
            if not cell.finished:
                if (cell.folder / FAILED).is_file():
                    continue
                return None
            metrics = cell.metrics
            metric = metrics["selection_metric"]
            score = metrics["best_val"][f"val_{metric}"]
            ranking.append((name, -score if metric == "loss" else score))
        return sorted(ranking, key=lambda item: -item[1])

    def confirmed(self, out: Path) -> list[str]:
        """The configurations trained beyond the screen: ``confirm``, then the ``confirm_top`` best
        others of the finished screen (none of them until the screen is done)."""
        ranking = self.screen_ranking(out) or []
        others = [name for name, _ in ranking if name not in self.confirm][:self.confirm_top]
        return [*self.confirm, *others]

    def first_seed(self, cells: list[Cell], part: str) -> dict[str, Cell]:
        """The cells of ``part`` with the first seed, by configuration: what costs and the gallery show."""
        return {cell.configuration: cell for cell in cells if cell.part == part and cell.config.seed == self.seed[0]}


def load_grid(path: str | Path) -> dict:
    """The mapping of a grid YAML file (keys of ``Study``)."""
    return read_yaml_mapping(path, "grid file", "such as 'attn: [null, se]', 'seed: [0, 1]', 'recipe: {epochs: 5}'")


def build_study(preset: str | None, grid: dict | None, axes: dict, recipe: dict, **settings) -> Study:
    """The study from a preset, then a grid file, then command-line axes, recipe options and
    settings, each overriding the one before (recipe options key by key, ``merge_options``).
    ``axes`` maps grid axes to lists."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; valid: {', '.join(PRESETS)}")
    d = copy.deepcopy(PRESETS[preset]) if preset else {}
    for layer in (grid or {}), {**axes, **settings}:
        d.update({k: v for k, v in layer.items() if k != "recipe"})
        d["recipe"] = merge_options(d.get("recipe", {}), layer.get("recipe") or {})
    d["recipe"] = merge_options(d.get("recipe", {}), recipe)
    return Study.from_dict(d, "the grid")
