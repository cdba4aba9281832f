"""Datasets and their registry. Every reader returns a :class:`DatasetBundle` held in memory."""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry
from .base import DatasetBundle, Split, split_train_val
from .cifar import load_cifar10, load_cifar100
from .coco import load_coco2014
from .fashion_mnist import load_fashion_mnist
from .image_folder import load_image_folder
from .image_list import load_image_list
from .loader import TensorLoader
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


def load_dataset(name: str, data_dir: str | Path | None = None, val_size: int | None = None, seed: int = 0,
                 **kw) -> DatasetBundle:
    """Load a registered dataset with a seeded validation split of ``val_size`` training samples
    (None: the dataset's own default, e.g. 5,000 for Fashion-MNIST, 500 for VOC2007)."""
    if val_size is not None:
        kw["val_size"] = val_size
    return DATASETS.get(name)(data_dir=data_dir, seed=seed, **kw)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "DatasetBundle", "Split", "TensorLoader", "list_datasets", "load_dataset", "split_train_val"]
