"""Datasets and their registry. Every reader returns a :class:`DatasetBundle` held in memory."""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry
from .base import DatasetBundle, Split, split_train_val
from .fashion_mnist import load_fashion_mnist
from .loader import TensorLoader

DATASETS: Registry = Registry("dataset")
DATASETS.add("fashion-mnist", load_fashion_mnist)


def load_dataset(name: str, data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0,
                 **kw) -> DatasetBundle:
    """Load a registered dataset with a seeded validation split of ``val_size`` training samples."""
    return DATASETS.get(name)(data_dir=data_dir, val_size=val_size, seed=seed, **kw)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["DATASETS", "DatasetBundle", "Split", "TensorLoader", "list_datasets", "load_dataset", "split_train_val"]
