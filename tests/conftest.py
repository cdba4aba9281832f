"""Shared fixtures: a tiny, learnable dataset in the official Fashion-MNIST file format, and a run
killed right after its first epoch."""

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


@pytest.fixture
def interrupted_after_first_epoch(monkeypatch):
    """``run(cfg)``: train ``cfg`` but kill it right after epoch 1's checkpoint and log were written."""
    import attnvision.train as train_mod
    from attnvision.checkpoint import load_checkpoint

    def run(cfg) -> None:
        real_write_log = train_mod._write_log

        def crash_after_first_epoch(path, history):
            real_write_log(path, history)
            if len(history) == 1:
                raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr(train_mod, "_write_log", crash_after_first_epoch)
            with pytest.raises(KeyboardInterrupt):
                train_mod.train(cfg, progress=False)
        assert load_checkpoint(Path(cfg.out) / "last.pt")["epoch"] == 1

    return run
