"""Fashion-MNIST (Xiao et al., "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms", arXiv:1708.07747, 2017): 60k train / 10k test 28×28 grey images, 10 classes.

Files are the four official IDX files (``train-images-idx3-ubyte.gz`` …), searched in
``data_dir`` alone when given (also as ``<data_dir>/fashion-mnist``); otherwise in
``$ATTNVISION_DATA`` (also its ``fashion-mnist/``), Debian's ``dataset-fashion-mnist`` package
(/usr/share/datasets/fashion-mnist), then the cache (``$ATTNVISION_CACHE`` or
``~/.cache/attnvision``, folder ``fashion-mnist``). When none has them, the missing files are
downloaded from the official mirror into the cache and MD5-checked (never with ``data_dir``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from .base import DatasetBundle, Split, split_train_val
from .download import cache_root, fetch, search_dirs

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# Official checksums of the gzipped files (README of zalandoresearch/fashion-mnist).
MD5 = {
    "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
    "test_images": "bef4ecab320f06d8554ea6380940ec79",
    "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
}
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = (0.2860,), (0.3530,)
HOW_TO_INSTALL = (
    "Install Debian's package (`apt-get install dataset-fashion-mnist`), or put the four official "
    "*-idx*-ubyte.gz files in a folder and pass --data-dir DIR (or set ATTNVISION_DATA)."
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in .gz): magic 0x0000 | dtype 0x08 (uint8) |
    ndim, then ndim big-endian int32 dims, then the data. Returns uint8 of shape ``dims``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # missing file, bad gzip header, gzip stream cut short
        raise ValueError(f"cannot read IDX file {path}: {e}; delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (bad magic number); delete it and fetch it again")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated inside its header; delete it and fetch it again")
    dims = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {body.size} values; "
                         "delete it and fetch it again")
    return body.reshape(dims)


def find_dir(data_dir: str | Path | None) -> Path:
    """The first folder holding all four files; otherwise (without ``data_dir``) download them
    into the cache."""
    cache = cache_root() / "fashion-mnist"
    candidates = [q for p in search_dirs(data_dir) for q in (p, p / "fashion-mnist")]
    if data_dir is None:
        candidates += [DEBIAN_DIR, cache]
    for d in candidates:
        if all((d / f).is_file() for f in FILES.values()):
            return d
    if data_dir is not None:
        raise FileNotFoundError(f"Fashion-MNIST not found in data_dir (looked in: {', '.join(map(str, candidates))}): "
                                f"it must hold {', '.join(FILES.values())}. {HOW_TO_INSTALL}")
    try:
        for key, name in FILES.items():
            if not (cache / name).is_file():  # a fetch that failed halfway keeps the files it got
                fetch(BASE_URL + name, cache / name, MD5[key])
    except (ConnectionError, ValueError) as e:
        raise FileNotFoundError(
            "Fashion-MNIST not found (looked in: " + ", ".join(map(str, candidates)) + ") and the "
            f"download failed: {e}. {HOW_TO_INSTALL}"
        ) from None
    return cache


def read_splits(root: Path) -> dict[str, Split]:
    """The official train and test splits in ``root``: uint8 (N, 1, 28, 28) images, int64 labels."""
    arrays = {k: read_idx(root / f) for k, f in FILES.items()}
    splits = {}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1] or (labels >= len(CLASSES)).any():
            raise ValueError(f"{root}: {FILES[part + '_images']} {images.shape} and {FILES[part + '_labels']} "
                             f"{labels.shape} are not N 28x28 images with N labels in 0..9; "
                             "replace them with the official Fashion-MNIST files")
        splits[part] = Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return splits


def load_fashion_mnist(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0) -> DatasetBundle:
    """Train (60000 − ``val_size``) / val (``val_size``, seeded) / test (10000); uint8 (N, 1, 28, 28)."""
    splits = read_splits(find_dir(data_dir))
    train, val = split_train_val(splits["train"], val_size, seed)
    return DatasetBundle("fashion-mnist", train, val, splits["test"], CLASSES, MEAN, STD)
