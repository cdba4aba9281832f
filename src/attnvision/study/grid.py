"""What a study trains: one dataset and recipe, a grid of configurations (models × attention
modules × heads) and seeds, and optionally a localisation part on data with object boxes.

A study folder holds

    study.yaml                       the resolved grid (``compare --grid study.yaml`` re-runs it)
    runs/<configuration>-s<seed>/    one run folder per cell, ``train``'s layout, plus train.log
                                     (and failed.json while the cell has failed)
    localization/<configuration>-s<seed>/   the localisation part's cells, plus explain/
    costs.json                       cost measurements per configuration
    report.html, report.md, results.csv, plots/

The localisation part retrains every configuration (first seed only) on data with boxes (by
default single-item Fashion-MNIST scenes) when the study's own data has none, since maps can
only be scored against boxes; with box data it would explain the main cells instead, but keeping
the parts separate keeps the main data's recipe free to be anything.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..config import TrainConfig, merge_options, read_yaml_mapping

GRID_AXES = ("model", "attn", "head", "seed")  # TrainConfig fields that take lists in a study

PRESETS = {
    # make demo: ≤ 10 min on 2 CPU cores, every part of the report present. Batch 32: on 2 cores it
    # trains faster per image than 128 and its 4× more steps learn more in 2 epochs (one probe each:
    # Fashion-MNIST 76.6% vs 72.4% test accuracy, scenes 54.6% vs 20.8%; batch 128: the none-s0 runs
    # of this preset before; batch 32: `attnvision train --train-subset 4000 --val-size 2000 --epochs 2
    # --batch-size 32 --threads 1`, and `--data fashion-mnist-scenes-single --val-size 500
    # --data-kw '{"n_train": 2000, "n_test": 500}'` with the same epochs, batch and threads)
    "quick": {
        "recipe": {"data": "fashion-mnist", "epochs": 2, "train_subset": 4000, "val_size": 2000, "batch_size": 32},
        "attn": [None, "se", "eca", "cbam", "bam", "eca_cbam"],
        "seed": [0],
        "localization": {"data": "fashion-mnist-scenes-single", "epochs": 2, "val_size": 500,
                         "data_kw": {"n_train": 2000, "n_test": 500}},
        "explain_images": 200,
        "faithfulness_images": 32,
    },
    # the full-length recipe of docs/results.md, 5 seeds: for a GPU machine
    "full": {
        "recipe": {"data": "fashion-mnist", "epochs": 15},
        "attn": [None, "se", "eca", "cbam", "bam", "eca_cbam"],
        "seed": [0, 1, 2, 3, 4],
        "localization": {"data": "fashion-mnist-scenes-single", "epochs": 15},
        "explain_images": 2000,
    },
}


@dataclass
class Cell:
    """One training run of the study."""

    name: str  # "<configuration>-s<seed>"
    configuration: str
    part: str  # "runs" (the main grid) or "localization"
    config: TrainConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.out)


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
    explain_images: int = 500  # test images explained and scored per localisation cell
    faithfulness_images: int = 128  # of those, the first N also get deletion/insertion (the costly score)

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
        for name in ("explain_images", "faithfulness_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
        names = [name for name, _ in self.configurations()]
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"{source}: baseline '{self.baseline}' is not a configuration; valid: {', '.join(names)}")
        for cell in self.cells(Path("study")):
            cell.config.validate()

    def configurations(self) -> list[tuple[str, dict]]:
        """(name, {"model", "attn", "head"}) per configuration, named by the axes that vary."""
        out = []
        for model in self.model:
            for attn in self.attn:
                for head in self.head:
                    parts = ([model] if len(self.model) > 1 else []) + [attn or "none"] + \
                            ([head or "own-head"] if len(self.head) > 1 else [])
                    out.append(("-".join(parts), {"model": model, "attn": attn, "head": head}))
        return out

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.configurations()[0][0]

    def cells(self, out: Path) -> list[Cell]:
        """Every run, seed-major (all configurations of seed 0 first, so that a study cut short
        still compares every configuration)."""
        cells = []
        parts = [("runs", self.seed, {})] + ([("localization", self.seed[:1], self.localization)]
                                             if self.localization is not None else [])
        for part, seeds, overrides in parts:
            for seed in seeds:
                for name, axes in self.configurations():
                    config = TrainConfig.from_dict({**self.recipe, **overrides, **axes, "seed": seed,
                                                    "out": str(out / part / f"{name}-s{seed}")})
                    cells.append(Cell(f"{name}-s{seed}", name, part, config))
        return cells


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
