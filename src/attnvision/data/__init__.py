"""Datasets and their registry. Every reader returns a :class:`DatasetBundle`: held in memory, or,
for the readers of image files that take ``stream``, as files decoded as batches are drawn."""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry
import inspect

from .augment import RECIPES, Augmentation
from .base import DatasetBundle, FileSplit, Split, split_train_val
from .cifar import load_cifar10, load_cifar100
from .coco import load_coco2014
from .fashion_mnist import load_fashion_mnist
from .image_folder import load_image_folder
from .image_list import load_image_list
from .loader import BatchLoader, first_images
from .shards import ShardSplit, holds_shards, load_shards
from .scenes import load_fashion_mnist_scenes, load_fashion_mnist_single_scenes
from .voc import load_voc2007

DATASETS: Registry = Registry("dataset")
DATASETS.add("fashion-mnist", load_fashion_mnist)
DATASETS.add("voc2007", load_voc2007)
DATASETS.add("coco2014", load_coco2014)
DATASETS.add("image-list", load_image_list)
DATASETS.add("fashion-mnist-scenes", load_fashion_mnist_scenes)
DATASETS.add("fashion-mnist-scenes-single", load_fashion_mnist_single_scenes)
DATASETS.add("cifar10", load_cifar10)
DATASETS.add("cifar100", load_cifar100)
DATASETS.add("image-folder", load_image_folder)


def streamable(name: str) -> bool:
    """Whether the dataset's reader can keep its image files rather than decode them (``stream``)."""
    return "stream" in inspect.signature(DATASETS.get(name)).parameters


def load_dataset(name: str, data_dir: str | Path | None = None, val_size: int | None = None, seed: int = 0,
                 stream: bool | None = None, **kw) -> DatasetBundle:
    """Load a registered dataset with a seeded validation split of ``val_size`` training samples
    (None: the dataset's own default, e.g. 5,000 for Fashion-MNIST, 500 for VOC2007). ``stream``:
    keep the image files and decode them as batches are drawn (None: when the decoded images would
    not fit in memory; only readers of image files stream). A ``data_dir`` holding shards
    (``shards.MANIFEST``, written by ``attnvision shard``) is streamed from them."""
    if val_size is not None:
        kw["val_size"] = val_size
    if holds_shards(data_dir):
        return load_shards(name, data_dir, seed, stream, **kw)
    if streamable(name):
        kw["stream"] = stream
    elif stream:
        raise ValueError(f"dataset '{name}' is always held in memory; streaming is for the datasets of image files: "
                         f"{', '.join(n for n in DATASETS.names() if streamable(n))}. Drop --stream")
    return DATASETS.get(name)(data_dir=data_dir, seed=seed, **kw)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "RECIPES", "Augmentation", "BatchLoader", "DatasetBundle", "FileSplit", "ShardSplit", "Split",
           "first_images", "list_datasets", "load_dataset", "split_train_val", "streamable"]
