"""Shared fixtures: a tiny, learnable dataset in the official Fashion-MNIST file format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (the MNIST/Fashion-MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def tiny_fashion_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Fake Fashion-MNIST files: class k is a bright horizontal bar at rows 2k..2k+3 plus noise,
    so a small network learns it in an epoch or two."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4:2 * k + 8, 4:24] = 230
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> Path:
    return tiny_fashion_mnist(tmp_path_factory.mktemp("fashion-mnist"))
