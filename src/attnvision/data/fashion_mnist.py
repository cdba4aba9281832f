"""Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test 28×28 grey images, 10 classes.

Files are the official IDX files (``train-images-idx3-ubyte.gz`` …), found in this order:
``data_dir`` argument, ``$ATTNVISION_DATA``, Debian's ``dataset-fashion-mnist`` package
(/usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from .base import DatasetBundle, Split, split_train_val

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = (0.2860,), (0.3530,)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 | dtype 0x08 (uint8) | ndim, then
    big-endian int32 dims, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file {path}: {e}; delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (bad magic number); delete it and fetch it again")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {body.size} values")
    return body.reshape(dims)


def find_dir(data_dir: str | Path | None) -> Path:
    import os

    candidates = [Path(p) for p in (data_dir, os.environ.get("ATTNVISION_DATA")) if p]
    candidates = [q for p in candidates for q in (p, p / "fashion-mnist")] + [DEBIAN_DIR]
    for d in candidates:
        if all((d / f).exists() for f in FILES.values()):
            return d
    raise FileNotFoundError(
        "Fashion-MNIST not found (looked in: " + ", ".join(map(str, candidates)) + "). "
        "Install Debian's package (`apt-get install dataset-fashion-mnist`), or put the four "
        "official *-idx*-ubyte.gz files in a folder and pass --data-dir DIR (or set ATTNVISION_DATA)."
    )


def load_fashion_mnist(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0) -> DatasetBundle:
    root = find_dir(data_dir)
    arrays = {k: read_idx(root / f) for k, f in FILES.items()}
    train = Split(torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
                  torch.from_numpy(arrays["train_labels"].astype(np.int64)))
    test = Split(torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
                 torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    train, val = split_train_val(train, val_size, seed)
    return DatasetBundle("fashion-mnist", train, val, test, CLASSES, MEAN, STD)
