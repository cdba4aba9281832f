"""A multi-label dataset given as lists of image files and their label names (any images).

Two list files, one for training and one for testing, each either

- CSV (``.csv``) with a header row naming the columns ``path`` and ``labels`` (other columns
  are ignored), e.g. ``img/001.jpg,person;dog``. Labels are separated by ``;`` when any row of
  the file contains a ``;`` (so names may contain spaces: ``potted plant;dog``), otherwise by
  whitespace (``person dog``). An empty ``labels`` field is an image with no positive label.
- JSON (``.json``): a list of ``{"path": "img/001.jpg", "labels": ["person", "dog"]}``.

Relative paths are relative to the folder of the list file. Without ``train_file`` /
``test_file``, ``train.csv`` (or ``train.json``) and ``test.csv`` (``test.json``) are looked for
in ``data_dir`` (or, without it, ``$ATTNVISION_DATA``).

Classes: ``class_names`` if given (a label outside it is an error), else the sorted union of
the names in both files. Targets are 1 for listed labels and 0 otherwise (no "ignored").
Splits: train / val carved (seeded) from the training list, ``val_size`` images (default: a
tenth), test = the test list. Images are squished to ``img_size``² (``images.load_images``)
and normalised with ImageNet statistics.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import torch

from .base import DatasetBundle, split_train_val
from .download import search_dirs
from .images import IMAGENET_MEAN, IMAGENET_STD, image_split, resolve_stream

Entry = tuple[Path, list[str], str]  # image path, label names, where it was read (for errors)


def read_image_list(path: str | Path) -> list[Entry]:
    """The (image path, label names, location) entries of one CSV or JSON list file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image list {path} does not exist")
    if path.suffix == ".csv":
        entries = _read_csv(path)
    elif path.suffix == ".json":
        entries = _read_json(path)
    else:
        raise ValueError(f"image list {path} must be a .csv (columns path,labels) or a .json file")
    if not entries:
        raise ValueError(f"image list {path} has no entries")
    return [(p if p.is_absolute() else path.parent / p, labels, where) for p, labels, where in entries]


def _read_csv(path: Path) -> list[Entry]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "labels"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the first row must be a header naming the columns 'path' and 'labels', "
                             f"got {reader.fieldnames}")
        rows = [(row["path"], row["labels"] or "", f"{path}:{reader.line_num}") for row in reader]
    separator = ";" if any(";" in labels for _, labels, _ in rows) else None  # None: any whitespace
    entries = []
    for image, labels, where in rows:
        if not image:
            raise ValueError(f"{where}: empty path")
        entries.append((Path(image), [n.strip() for n in labels.split(separator) if n.strip()], where))
    return entries


def _read_json(path: Path) -> list[Entry]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of {{\"path\": ..., \"labels\": [...]}} objects")
    entries = []
    for i, item in enumerate(data):
        where = f"{path} entry {i}"
        if (not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]
                or not isinstance(item.get("labels"), list) or not all(isinstance(n, str) for n in item["labels"])):
            raise ValueError(f"{where}: expected {{\"path\": \"<file>\", \"labels\": [\"<name>\", ...]}}, got {item!r}")
        entries.append((Path(item["path"]), [n.strip() for n in item["labels"]], where))
    return entries


def find_list(data_dir: str | Path | None, split: str) -> Path:
    """``<dir>/<split>.csv`` or ``.json`` in ``data_dir`` (or, without it, ``$ATTNVISION_DATA``)."""
    candidates = [d / f"{split}.{ext}" for d in search_dirs(data_dir) for ext in ("csv", "json")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = f" (looked for {', '.join(map(str, candidates))})" if candidates else ""
    raise FileNotFoundError(f"no {split} list found{looked}: pass {split}_file=PATH to a .csv list (columns "
                            f"path,labels) or a .json list, or a data_dir holding {split}.csv or {split}.json")


def multi_hot(entries: list[Entry], index: dict[str, int]) -> torch.Tensor:
    """float32 (N, C) targets: 1 where an entry lists the class."""
    targets = torch.zeros(len(entries), len(index))
    for row, (_, labels, where) in enumerate(entries):
        for name in labels:
            if name not in index:
                raise ValueError(f"{where}: label '{name}' is not among the class names ({', '.join(index)})")
            targets[row, index[name]] = 1.0
    return targets


def load_image_list(data_dir: str | Path | None = None, val_size: int | None = None, seed: int = 0,
                    train_file: str | Path | None = None, test_file: str | Path | None = None,
                    img_size: int = 224, class_names: Sequence[str] | None = None,
                    stream: bool | None = None) -> DatasetBundle:
    """Train (rest) / val (``val_size``, default len(train) // 10, seeded) / test (the test list);
    uint8 (N, 3, img_size, img_size), float32 targets (N, C) in {0, 1}. ``stream``: keep the
    image files (None: when the decoded images would not fit, ``images.resolve_stream``)."""
    train_entries = read_image_list(train_file or find_list(data_dir, "train"))
    test_entries = read_image_list(test_file or find_list(data_dir, "test"))
    if class_names is None:
        class_names = sorted({n for _, labels, _ in train_entries + test_entries for n in labels})
    class_names = list(class_names)
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be non-empty and unique, got {class_names}")
    index = {name: i for i, name in enumerate(class_names)}
    targets = [multi_hot(entries, index) for entries in (train_entries, test_entries)]  # check before decoding
    stream = resolve_stream(stream, len(train_entries) + len(test_entries), img_size)
    train_all, test = (image_split([p for p, _, _ in entries], t, img_size, stream=stream)
                       for entries, t in zip((train_entries, test_entries), targets))
    train, val = split_train_val(train_all, max(1, len(train_all) // 10) if val_size is None else val_size, seed)
    return DatasetBundle("image-list", train, val, test, class_names, IMAGENET_MEAN, IMAGENET_STD,
                         task="multilabel")
