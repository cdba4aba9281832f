"""PASCAL VOC 2007 classification (Everingham et al., "The PASCAL Visual Object Classes (VOC)
Challenge", IJCV 88(2), 2010): 20 classes, trainval 5,011 / test 4,952 images, multi-label.

Layout (what the official tars ``VOCtrainval_06-Nov-2007.tar`` and ``VOCtest_06-Nov-2007.tar``
both extract into)::

    VOCdevkit/VOC2007/Annotations/<id>.xml        <object><name>, <difficult> per object
    VOCdevkit/VOC2007/ImageSets/Main/trainval.txt  one image id per line (test.txt: the test tar)
    VOCdevkit/VOC2007/JPEGImages/<id>.jpg

The VOC2007 folder is searched as ``<dir>``, ``<dir>/VOC2007`` and ``<dir>/VOCdevkit/VOC2007``
for ``data_dir`` alone when given, else for each of ``$ATTNVISION_DATA`` and ``<cache>/voc2007``;
trainval and test may sit in different ones. Nothing is downloaded (the tars are 0.9 GB).

Labels (the rule behind VOC's own ``<class>_<set>.txt`` files and CSRA's ``prepare_voc.py``):
class c is positive (1) in an image with at least one non-difficult object of class c, absent
(0) without any, and "difficult-only" when all its objects are marked difficult. Difficult-only
entries follow a policy: ``"negative"`` (0), ``"ignore"`` (-1, left out of loss and metrics)
or ``"positive"`` (1). Defaults: ``difficult="negative"`` for the training split (CSRA maps
trainval's 0 → negative; ML-GCN's ``"positive"`` is the alternative) and
``difficult_eval="ignore"`` for validation and test (VOC's evaluation and CSRA's test ignore
difficult objects).

Splits: train / val carved (seeded) from trainval, test = the official test set, never used
for selection. Images are squished to ``img_size``² (``images.load_images``; CSRA trains at
448, 224 is the default here to keep 5k images in memory at 0.75 GB) and normalised with
ImageNet statistics (what torchvision's pretrained weights expect; CSRA's code feeds [0, 1]).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import torch

from .base import DatasetBundle, FileSplit, Split, split_train_val
from .download import cache_root, inside, search_dirs
from .images import IMAGENET_MEAN, IMAGENET_STD, image_split, resolve_stream

CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
           "train", "tvmonitor"]
POLICIES = {"negative": 0.0, "ignore": -1.0, "positive": 1.0}
HOW_TO_GET = (
    "Download VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar (http://host.robots.ox.ac.uk/"
    "pascal/VOC/voc2007/), extract both in one folder (they create VOCdevkit/VOC2007) and pass "
    "data_dir=that folder (--data-dir) or set ATTNVISION_DATA."
)


def find_voc2007(data_dir: str | Path | None, image_set: str) -> Path:
    """The first candidate VOC2007 folder holding ``ImageSets/Main/<image_set>.txt``."""
    roots = search_dirs(data_dir, cache_root() / "voc2007")
    candidates = [d for r in roots for d in (r, r / "VOC2007", r / "VOCdevkit" / "VOC2007")]
    for d in candidates:
        if (d / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
            return d
    raise FileNotFoundError(
        f"VOC2007 {image_set} set not found: no ImageSets/Main/{image_set}.txt in any of "
        + ", ".join(map(str, candidates)) + f". Expected layout: VOCdevkit/VOC2007/{{Annotations,ImageSets/Main,"
        f"JPEGImages}}. {HOW_TO_GET}"
    )


def parse_annotation(path: Path) -> list[tuple[str, bool]]:
    """(class name, difficult) of every <object> in one VOC XML file."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file {path} is missing; re-extract the VOC tars") from None
    except ET.ParseError as e:
        raise ValueError(f"annotation file {path} is not valid XML ({e}); replace it with the official one") from None
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise ValueError(f"annotation file {path}: <difficult> must be 0 or 1, got '{difficult}'")
        objects.append((name, difficult == "1"))
    return objects


def read_ids(root: Path, image_set: str) -> list[str]:
    """The image ids ``ImageSets/Main/<image_set>.txt`` lists."""
    return [line.split()[0] for line in (root / "ImageSets" / "Main" / f"{image_set}.txt").read_text().splitlines()
            if line.strip()]


def read_voc_split(root: Path, image_set: str, img_size: int, stream: bool = False) -> Split | FileSplit:
    """Images (N, 3, img_size, img_size) (or their files, with ``stream``) and raw targets (N, 20):
    1 positive, 0 absent, -1 difficult-only (the "ignore" policy; ``apply_difficult`` maps it)."""
    list_file = root / "ImageSets" / "Main" / f"{image_set}.txt"
    ids = read_ids(root, image_set)
    if not ids:
        raise ValueError(f"{list_file} lists no images; replace it with the official file")
    index = {name: i for i, name in enumerate(CLASSES)}
    targets = torch.zeros(len(ids), len(CLASSES))
    for row, image_id in enumerate(ids):
        path = inside(root / "Annotations", f"{image_id}.xml", str(list_file))
        for name, difficult in parse_annotation(path):
            if name not in index:
                raise ValueError(f"annotation file {path}: unknown class '{name}'; "
                                 f"VOC2007 classes are {', '.join(CLASSES)}")
            c = index[name]
            if not difficult:
                targets[row, c] = 1.0
            elif targets[row, c] == 0:
                targets[row, c] = -1.0
    return image_split([inside(root / "JPEGImages", f"{i}.jpg", str(list_file)) for i in ids], targets, img_size,
                       stream=stream)


def apply_difficult(split: Split | FileSplit, policy: str) -> Split | FileSplit:
    """``split`` with its difficult-only entries (-1) set by ``policy``."""
    return replace(split, targets=torch.where(split.targets == -1, POLICIES[policy], split.targets))


def load_voc2007(data_dir: str | Path | None = None, val_size: int = 500, seed: int = 0, img_size: int = 224,
                 difficult: str = "negative", difficult_eval: str = "ignore", stream: bool | None = None) -> DatasetBundle:
    """Train (5011 − ``val_size``) / val (``val_size``, seeded, from trainval) / test (4952);
    uint8 (N, 3, img_size, img_size), float32 targets (N, 20) in {1, 0, -1}. ``stream``: keep the
    image files (None: when the decoded images would not fit, ``images.resolve_stream``).

    difficult: policy for difficult-only classes in the training split; difficult_eval: in the
    validation and test splits. Each one of "negative", "ignore", "positive".
    """
    for arg, policy in (("difficult", difficult), ("difficult_eval", difficult_eval)):
        if policy not in POLICIES:
            raise ValueError(f"{arg} must be one of {', '.join(POLICIES)}, got '{policy}'")
    roots = {s: find_voc2007(data_dir, s) for s in ("trainval", "test")}  # both found before any decoding
    stream = resolve_stream(stream, sum(len(read_ids(root, s)) for s, root in roots.items()), img_size)
    trainval = read_voc_split(roots["trainval"], "trainval", img_size, stream)
    test = read_voc_split(roots["test"], "test", img_size, stream)
    train, val = split_train_val(trainval, val_size, seed)
    return DatasetBundle("voc2007", apply_difficult(train, difficult), apply_difficult(val, difficult_eval),
                         apply_difficult(test, difficult_eval), CLASSES, IMAGENET_MEAN, IMAGENET_STD, task="multilabel")
