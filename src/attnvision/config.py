"""What a run is: ``TrainConfig``, every option of a run with its help and valid values, and the
YAML files that hold them.

``TrainConfig``'s fields are the single source of truth for options: ``attnvision train`` and
``attnvision compare`` generate their flags from them, config files and study grids are checked
against them, and every checkpoint stores them. This module imports nothing of the trainer.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from .data.augment import RECIPES as AUGMENT_RECIPES

@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option: ``low`` ≤ value ≤ ``high`` (> ``low`` with
    ``above``), finite, and an integer where ``kind`` is int (a float option also takes an int)."""

    kind: type
    low: float | None = None
    high: float | None = None
    above: bool = False

    def problem(self, value) -> str | None:
        """What is wrong with ``value``, or None."""
        want = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            want += f" in {'(' if self.above else '['}{self.low}, {self.high}]"
        elif self.low is not None:
            want += f" {'>' if self.above else '≥'} {self.low}"
        kinds = (int,) if self.kind is int else (int, float)
        if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
                or (self.low is not None and (value <= self.low if self.above else value < self.low))
                or (self.high is not None and value > self.high)):
            return f"must be {want}, got {value!r}"
        return None


def option(default=None, valid: Range | tuple | None = None, help: str = "", factory=None):
    """A TrainConfig field with its help text and valid values (a Range or a tuple of choices)
    beside it: the help of the ``train`` and ``compare`` flags, and the rule ``TrainConfig.validate``
    applies to CLI flags, config files and resumed runs alike. ``factory`` makes a mutable default."""
    if isinstance(valid, tuple):  # the choices are listed from ``valid``, never by hand
        help = f"{help}; one of: {', '.join(str(v) for v in valid if v is not None)}"
    metadata = {"help": help, **({"valid": valid} if valid is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


POSITIVE_INT = Range(int, 1)
SCHEDULES = ("cosine", "linear", "step", "onecycle")
SEED = Range(int, 0, 2**32 - 1)  # Lightning's seed_everything replaces seeds outside this with 0


@dataclass
class TrainConfig:
    """Everything that defines a run. Saved in the run folder and in every checkpoint. Each field's
    help is that of its ``attnvision train`` flag (``--data-dir`` for ``data_dir``)."""

    data: str = option("fashion-mnist", help="dataset name (see `attnvision list`)")
    data_dir: str | None = option(None, help="folder with the dataset files (default: $ATTNVISION_DATA, system paths)")
    data_kw: dict = option(factory=dict, help='dataset options as JSON, e.g. \'{"canvas_size": 64}\'')
    stream: bool | None = option(None, help="decode the images in --workers processes as batches are drawn instead of "
                                 "holding the decoded dataset in memory (default: stream when the decoded images would "
                                 "take more than half the available memory); datasets of image files only (coco2014, "
                                 "voc2007, image-list, image-folder). The same samples either way")
    workers: int = option(2, Range(int, 0), "processes that decode a streamed dataset's images (0: the training process)")
    task: str | None = option(None, (None, "single", "multilabel"), "the data's task, checked against the dataset")
    val_size: int | None = option(None, POSITIVE_INT, "validation images carved from the training set "
                                  "(default: the dataset's, 5000 for Fashion-MNIST)")
    split_seed: int = option(0, SEED, "seed of the train/validation split, fixed across run seeds so that all "
                             "runs share one validation split")
    train_subset: int | None = option(None, POSITIVE_INT, "train on the first N training images only (short recipes)")
    permute_labels: bool = option(False, help="train on the training images' labels permuted at random (seeded by "
                                  "split-seed; validation and test labels stay true): a model that can only memorise, "
                                  "the reference of the data randomisation sanity check (Adebayo et al. 2018)")
    model: str = option("resnet20", help="model name")
    attn: str | None = option(None, help="attention module inside the backbone (none if omitted); options "
                              "after a colon, e.g. 'gate:channel=eca,spatial=cbam,order=parallel'")
    head: str | None = option(None, help="classification head (default: the model's own, e.g. gap)")
    weights: str | None = option(None, help="torchvision-format weight file (e.g. ImageNet-pretrained resnet101) "
                                 "loaded into the backbone before the first epoch; its classifier (fc.*) is left out "
                                 "and the head starts from its own initialisation")
    model_kw: dict = option(factory=dict, help='more model options as JSON, e.g. \'{"layers": [2, 2, 2], "shortcut": "A"}\'')
    epochs: int = option(15, POSITIVE_INT, "training epochs")
    batch_size: int = option(128, POSITIVE_INT, "images per step (per process)")
    optimizer: str = option("sgd", ("sgd", "adamw"), "optimizer (sgd: with Nesterov momentum)")
    lr: float = option(0.1, Range(float, 0, above=True), "peak learning rate")
    head_lr: float | None = option(None, Range(float, 0, above=True),
                                   "separate learning rate for the head (CSRA: 0.1 head, 0.01 backbone)")
    momentum: float = option(0.9, Range(float, 0, 1, above=True), "SGD's Nesterov momentum")
    weight_decay: float = option(5e-4, Range(float, 0), "weight decay, not applied to biases and normalisation parameters")
    warmup_epochs: float = option(1.0, Range(float, 0), "linear learning-rate warm-up, in epochs")
    schedule: str = option("cosine", SCHEDULES, "learning-rate schedule after warm-up (cosine: to 0; linear: "
                           "to 0, Li et al. 2020's budgeted-training choice; step: × step-gamma every step-epochs; "
                           "onecycle: Smith & Topin 2019, its own warm-up over the first 30% of steps, then cosine "
                           "to lr/25e4, with --warmup-epochs 0)")
    step_epochs: int = option(4, POSITIVE_INT, "step schedule: epochs between decays")
    step_gamma: float = option(0.1, Range(float, 0, 1, above=True), "step schedule: factor per decay")
    milestones: list[int] = option(factory=list, help="step schedule: the epochs after which the LR is multiplied "
                                   "by step-gamma, increasing, each below --epochs (e.g. 81,122: ÷10 at 50% and "
                                   "75% of 164 epochs, the CIFAR ResNet recipe); empty: every step-epochs")
    loss: str | None = option(None, (None, "ce", "bce", "asl"), "loss (default: ce for single-label data, bce for "
                              "multi-label data; asl: asymmetric loss)")
    label_smoothing: float = option(0.0, Range(float, 0, 1), "label smoothing of the cross-entropy")
    grad_clip: float | None = option(None, Range(float, 0, above=True),
                                     "clip the gradients' global L2 norm to this value before each step")
    ema_decay: float | None = option(None, Range(float, 0, 1, above=True),
                                     "keep an exponential moving average of the weights with this decay per step "
                                     "(e.g. 0.999) and evaluate, select and test it instead of the raw weights")
    augment: str = option("basic", AUGMENT_RECIPES, "training augmentation recipe, batched on the device (basic: the "
                          "options below only; csra: random resized crop, area 70-100%, CSRA's; q2l: Cutout 1/2 and "
                          "RandAugment N=2 M=9, ASL's and Query2Label's); crop-pad, hflip and erase-prob apply after it")
    crop_pad: int = option(2, Range(int, 0), "random-crop padding in pixels (0: no crop)")
    hflip: bool = option(True, help="random horizontal flips")
    erase_prob: float = option(0.0, Range(float, 0, 1), "Random Erasing (Zhong et al. 2020): probability that an "
                               "image gets a rectangle of random pixels, 2-40% of its area (the paper: 0.5)")
    mixup_prob: float = option(0.0, Range(float, 0, 1), "probability that a batch is mixed by mixup (Zhang et al. "
                               "2018): images and targets blended with a shuffled copy of the batch")
    mixup_alpha: float = option(0.2, Range(float, 0, above=True), "mixup's Beta(α, α) parameter")
    cutmix_prob: float = option(0.0, Range(float, 0, 1), "probability that a batch is mixed by CutMix (Yun et al. "
                                "2019): a box pasted from a shuffled copy, targets by its area; mixup-prob + "
                                "cutmix-prob ≤ 1")
    cutmix_alpha: float = option(1.0, Range(float, 0, above=True), "CutMix's Beta(α, α) parameter")
    tta_hflip: bool = option(False, help="evaluate (validation and test) on the mean logits of each image and its "
                             "mirror image")
    seed: int = option(0, SEED, "seed of initialisation, augmentation and batch order")
    channels_last: bool = option(True, help="channels-last memory format")
    compile: bool = option(False, help="compile the model's training steps with torch.compile (Inductor); where "
                           "compilation fails, say so and train eagerly. Each process's first step, which "
                           "compiles, is timed apart: metrics.json's compile_time_s, left out of epoch times and img/s")
    # results depend on the thread count (reductions split differently), so a run records it
    threads: int | None = option(None, POSITIVE_INT, "CPU threads of this process (default: torch's, one per core)")
    accelerator: str = option("auto", help="cpu, gpu, auto")
    devices: int = option(1, POSITIVE_INT, "devices (GPUs or CPU processes) per node")
    num_nodes: int = option(1, POSITIVE_INT, "nodes")
    strategy: str = option("auto", help="auto, ddp, …")
    # "-true" modes would also need inputs cast to the weights' dtype
    precision: str = option("32-true", ("32-true", "bf16-mixed", "16-mixed"), "numeric precision of training")
    out: str = option("runs/default", help="run folder")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)

    def validate(self) -> None:
        """Fail fast, before any data is loaded, on values, names and choices that cannot work."""
        from .attention import create_attn
        from .backbones import MODELS
        from .data import DATASETS
        from .heads import HEADS

        for f in fields(self):
            valid, value = f.metadata.get("valid"), getattr(self, f.name)
            if isinstance(valid, tuple) and value not in valid:
                raise ValueError(f"unknown {f.name} '{value}'; valid: {', '.join(v for v in valid if v)}")
            if isinstance(valid, Range) and not (value is None and f.default is None):
                problem = valid.problem(value)
                if problem:
                    raise ValueError(f"{f.name} {problem}")
        if self.mixup_prob + self.cutmix_prob > 1:
            raise ValueError(f"mixup_prob {self.mixup_prob} + cutmix_prob {self.cutmix_prob} exceed 1: a batch is "
                             "mixed by one of them at most, so their probabilities must sum to at most 1")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise ValueError(f"schedule onecycle warms up by itself (the first 30% of steps), so warmup_epochs "
                             f"{self.warmup_epochs} would be a second warm-up: pass --warmup-epochs 0")
        self.check_milestones()
        DATASETS.get(self.data)
        MODELS.get(self.model)
        if self.attn:
            create_attn(self.attn, 64)  # an unknown name, part or option raises here, naming the valid ones
        if self.head:
            HEADS.get(self.head)

    def check_milestones(self) -> None:
        if not self.milestones:
            return
        if self.schedule != "step":
            raise ValueError(f"milestones {self.milestones} need --schedule step (the schedule is {self.schedule})")
        if (not isinstance(self.milestones, list) or any(isinstance(m, bool) or not isinstance(m, int)
                                                         for m in self.milestones)
                or sorted(set(self.milestones)) != self.milestones or not 1 <= self.milestones[0]
                or self.milestones[-1] >= self.epochs):
            raise ValueError(f"milestones must be increasing epochs in [1, epochs {self.epochs}), e.g. [81, 122] for "
                             f"164 epochs; got {self.milestones!r}")


RECIPES = "recipes"  # the package folder of the packaged recipes, one <name>.yaml each


def recipe_names() -> list[str]:
    """The packaged recipes (``attnvision list``): measured recipes with their evidence in the header."""
    folder = resources.files("attnvision") / RECIPES
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))


def read_config(value: str) -> dict:
    """The options of ``train --config``: a packaged recipe's name (``recipe_names``), or a YAML
    file's path (a name with a folder or a .yaml/.yml suffix is always a path)."""
    if "/" not in value and not value.endswith((".yaml", ".yml")):
        if value not in recipe_names():
            raise ValueError(f"--config {value} is neither a file (give a path ending in .yaml) nor a packaged recipe; "
                             f"recipes: {', '.join(recipe_names())}")
        return read_recipe(value)
    return read_yaml_mapping(value, "config file", "of option names to values, such as a run's config.yaml")


def read_recipe(name: str) -> dict:
    """A packaged recipe's options."""
    with resources.as_file(resources.files("attnvision") / RECIPES / f"{name}.yaml") as path:
        return read_yaml_mapping(path, "recipe", "of option names to values")


def read_yaml_mapping(path: str | Path, what: str, example: str) -> dict:
    """The mapping a YAML file holds (a run's config.yaml, a study's grid), or a ValueError naming
    the file and, with ``example``, what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path} must hold a mapping {example}")
    return value


def merge_options(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, nested dicts (``model_kw``, ``data_kw``) merged key
    by key: ``{"model_kw": {"head_kw": {"heads": 4}}}`` over a file's ``{"model_kw": {"width":
    "large", "head_kw": {"lam": 0.3}}}`` changes ``heads`` and keeps ``width`` and ``lam``. Neither
    argument is modified."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
