"""Dataset containers shared by every dataset reader: a split held in memory (``Split``) or as
image files decoded as batches are drawn (``FileSplit``, the streaming path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .shards import ShardSplit

MODES = {"RGB": 3, "L": 1}  # Pillow modes images are converted to → channels


@dataclass
class Split:
    """One split held in memory.

    images:  uint8 (N, C, H, W)
    targets: int64 (N,) class indices (single-label), or float32 (N, num_classes) with values in
             {1, 0, -1 (ignored)} (multi-label).
    """

    images: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.targets[index])

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])


class DecodedOnDraw:
    """What a split decoded as batches are drawn knows of its images before decoding any: the
    ``mode`` (RGB or L) and ``size`` (H, W) they are converted and squished to."""

    mode: str
    size: tuple[int, int]

    @property
    def in_chans(self) -> int:
        return MODES[self.mode]

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.size)


@dataclass
class FileSplit(DecodedOnDraw):
    """One split as image files, decoded (``images.decode_image``) only when a batch is drawn, by
    ``loader.BatchLoader``'s worker processes: what memory holds grows with the number of files
    by a path and a target each, not by an image each.

    files:   image paths, one per sample
    targets: as in ``Split``
    size:    (H, W) every image is squished to when decoded
    mode:    "RGB" or "L"
    """

    files: list[Path]
    targets: torch.Tensor
    size: tuple[int, int]
    mode: str = "RGB"

    def __post_init__(self) -> None:
        if len(self.files) != len(self.targets):
            raise ValueError(f"{len(self.files)} image files but {len(self.targets)} targets")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, index: torch.Tensor) -> "FileSplit":
        return FileSplit([self.files[i] for i in index.tolist()], self.targets[index], self.size, self.mode)

    def load(self) -> Split:
        """The split decoded into memory (for the few images an explanation or export needs)."""
        from .images import load_images

        return Split(load_images(self.files, self.size, self.mode), self.targets)


@dataclass
class DatasetBundle:
    """Train / validation / test splits of one dataset plus what a model needs to know about it.

    The validation split is carved from the training data (seeded); the test split is only
    evaluated, never used to choose a checkpoint or hyper-parameter.
    """

    name: str
    train: Split | FileSplit | ShardSplit
    val: Split | FileSplit | ShardSplit
    test: Split | FileSplit | ShardSplit
    class_names: list[str]
    mean: tuple[float, ...]  # per-channel, on the [0, 1] scale
    std: tuple[float, ...]
    task: str = "single"  # "single" or "multilabel"
    extras: dict = field(default_factory=dict)  # e.g. boxes for explainability metrics

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return self.train.in_chans

    @property
    def img_size(self) -> tuple[int, int]:
        return self.train.img_size

    @property
    def streamed(self) -> bool:
        """Whether the images are decoded as batches are drawn (``FileSplit``, ``shards.ShardSplit``)."""
        return not isinstance(self.train, Split)


def split_train_val(train: Split | FileSplit, val_size: int, seed: int) -> tuple[Split | FileSplit, Split | FileSplit]:
    """Carve a fixed, seeded validation split of ``val_size`` samples out of ``train``."""
    if not 0 < val_size < len(train):
        raise ValueError(f"val_size must be in (0, {len(train)}) for {len(train)} training samples, got "
                         f"{val_size}: pass a smaller --val-size")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(perm[val_size:].sort().values), train.subset(perm[:val_size].sort().values)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the [0, 1] scale of uint8 (N, C, H, W).

    Exact, from a 256-bin histogram per channel, so no float copy of the images is made."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        p = torch.bincount(images[:, c].flatten(), minlength=256).double()
        p /= p.sum()
        mean = (p * levels).sum()
        means.append(mean.item())
        stds.append((p * (levels - mean) ** 2).sum().sqrt().item())
    return tuple(means), tuple(stds)
