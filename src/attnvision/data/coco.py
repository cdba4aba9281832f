"""MS-COCO 2014 multi-label classification (Lin et al., "Microsoft COCO: Common Objects in
Context", ECCV 2014): 80 object categories; with unannotated images dropped, train2014 has
82,081 images and val2014 40,137 (the counts CSRA, ASL, ML-Decoder and ML-GCN report).

Layout (the official ``train2014.zip``, ``val2014.zip`` and ``annotations_trainval2014.zip``)::

    <root>/annotations/instances_train2014.json   {"images", "annotations", "categories"}
    <root>/annotations/instances_val2014.json
    <root>/train2014/COCO_train2014_<id>.jpg        (any file_name the JSON gives, inside train2014/)
    <root>/val2014/COCO_val2014_<id>.jpg

``<root>`` is searched as ``<dir>``, ``<dir>/coco`` and ``<dir>/coco2014`` for ``data_dir`` alone
when given, else for each of ``$ATTNVISION_DATA`` and ``<cache>/coco2014``. Nothing is downloaded
(19 GB).

Labels: class c is positive in an image with at least one instance of category c (crowd
instances included, as in CSRA's and ASL's label files), else negative; there is no "ignored".
Class indices are contiguous, ordered by sorted category id (CSRA, ASL, Query2Label; ML-GCN
sorts by name, a different order). Images without any instance are dropped unless
``keep_empty=True`` (Query2Label keeps them: 40,504 test images instead of 40,137).

Splits: train / val carved (seeded) from train2014, test = val2014 (what every paper reports
on; it is only evaluated, never used for selection). Images are squished to ``img_size``²
(``images.load_images``) and normalised with ImageNet statistics. Memory: 3·img_size² bytes an
image, 12 GB for train2014 at 224 and 49 GB at the papers' 448: ``stream`` (``images.image_split``)
keeps the files instead, decoded by the loader's workers as batches are drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import DatasetBundle, FileSplit, Split, split_train_val
from .download import cache_root, inside, search_dirs
from .images import IMAGENET_MEAN, IMAGENET_STD, image_split, resolve_stream

HOW_TO_GET = (
    "Download train2014.zip, val2014.zip and annotations_trainval2014.zip from https://cocodataset.org/"
    "#download, extract them in one folder and pass data_dir=that folder (--data-dir) or set ATTNVISION_DATA."
)


def annotation_file(root: Path, part: str) -> Path:
    return root / "annotations" / f"instances_{part}.json"


def find_coco2014(data_dir: str | Path | None) -> Path:
    """The first candidate folder holding both instances_{train,val}2014.json."""
    roots = search_dirs(data_dir, cache_root() / "coco2014")
    candidates = [d for r in roots for d in (r, r / "coco", r / "coco2014")]
    for d in candidates:
        if all(annotation_file(d, part).is_file() for part in ("train2014", "val2014")):
            return d
    raise FileNotFoundError(
        "COCO 2014 not found: no annotations/instances_{train,val}2014.json in any of "
        + ", ".join(map(str, candidates)) + f". Expected layout: <root>/annotations/, <root>/train2014/, "
        f"<root>/val2014/. {HOW_TO_GET}"
    )


# sorted (category id, name); (image id, file_name); (image id, category id) per instance
Instances = tuple[list[tuple[int, str]], list[tuple[int, str]], list[tuple[int, int]]]


def read_instances(path: Path) -> Instances:
    """Categories, images and instances of one instances_*.json file."""
    try:
        data = json.loads(path.read_text())
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        images = [(int(i["id"]), str(i["file_name"])) for i in data["images"]]
        instances = [(int(a["image_id"]), int(a["category_id"])) for a in data["annotations"]]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); replace it with the official file") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a COCO instances file: missing or malformed {e} "
                         "(expected 'images' with id/file_name, 'annotations' with image_id/category_id, "
                         "'categories' with id/name); replace it with the official file") from None
    return categories, images, instances


def read_coco_split(root: Path, part: str, img_size: int, keep_empty: bool, parsed: Instances,
                    stream: bool = False) -> Split | FileSplit:
    """Images uint8 (N, 3, img_size, img_size) (or their files, with ``stream``) and targets
    float32 (N, 80) of train2014 or val2014, from ``parsed`` = ``read_instances`` of its annotation file."""
    path = annotation_file(root, part)
    categories, images, instances = parsed
    images = sorted(images)
    row = {image_id: i for i, (image_id, _) in enumerate(images)}
    col = {cat_id: j for j, (cat_id, _) in enumerate(categories)}
    for image_id, cat_id in instances:
        if image_id not in row or cat_id not in col:
            what = f"image id {image_id}" if image_id not in row else f"category id {cat_id}"
            raise ValueError(f"{path}: an annotation refers to {what}, which the file does not define; "
                             "replace it with the official file")
    targets = torch.zeros(len(images), len(categories))
    if instances:
        rows, cols = zip(*((row[i], col[c]) for i, c in instances))
        targets[list(rows), list(cols)] = 1.0
    keep = torch.arange(len(images)) if keep_empty else targets.any(1).nonzero().flatten()
    if len(keep) == 0:
        raise ValueError(f"{path} has no annotated images; replace it with the official file")
    files = [inside(root / part, name, str(path)) for _, name in images]  # every name checked, kept or not
    return image_split([files[i] for i in keep.tolist()], targets[keep], img_size, stream=stream)


def load_coco2014(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0, img_size: int = 224,
                  keep_empty: bool = False, stream: bool | None = None) -> DatasetBundle:
    """Train (82081 − ``val_size``) / val (``val_size``, seeded, from train2014) / test (val2014,
    40137); uint8 (N, 3, img_size, img_size), float32 targets (N, 80) in {0, 1}. ``stream``:
    keep the image files (None: when the decoded images would not fit, ``images.resolve_stream``)."""
    root = find_coco2014(data_dir)
    parsed = {part: read_instances(annotation_file(root, part)) for part in ("train2014", "val2014")}
    categories = parsed["train2014"][0]
    if parsed["val2014"][0] != categories:
        raise ValueError(f"{annotation_file(root, 'train2014')} and {annotation_file(root, 'val2014')} define "
                         "different categories; use the official files of one release")
    stream = resolve_stream(stream, sum(len(images) for _, images, _ in parsed.values()), img_size)
    train, val = split_train_val(read_coco_split(root, "train2014", img_size, keep_empty, parsed["train2014"], stream),
                                 val_size, seed)
    test = read_coco_split(root, "val2014", img_size, keep_empty, parsed["val2014"], stream)
    return DatasetBundle("coco2014", train, val, test, [name for _, name in categories],
                         IMAGENET_MEAN, IMAGENET_STD, task="multilabel")
