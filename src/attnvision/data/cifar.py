"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
tech. report, University of Toronto, 2009): 50k train / 10k test 32×32 RGB images, 10 or 100
classes (CIFAR-100: the 100 fine labels).

Files: the official "python version", either the tarball (``cifar-10-python.tar.gz`` /
``cifar-100-python.tar.gz``, read without extracting) or its extracted folder
(``cifar-10-batches-py/`` with ``data_batch_1..5``, ``test_batch``, ``batches.meta``;
``cifar-100-python/`` with ``train``, ``test``, ``meta``). Each batch is a pickled dict with
``b'data'``: uint8 (N, 3072), one image per row as three row-major 32×32 planes R, G, B, and
``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100); the meta file names the classes.

Search order: ``data_dir`` alone when given, else ``$ATTNVISION_DATA`` then the cache
(``$ATTNVISION_CACHE`` or ``~/.cache/attnvision``); in each, the extracted folder, the folder
itself, then the tarball.
Nothing is downloaded.

The pickles are opened with an unpickler that only builds dicts, lists, bytes, numbers and
numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import DatasetBundle, Split, split_train_val
from .download import cache_root, search_dirs


@dataclass(frozen=True)
class CifarFormat:
    name: str
    tarball: str
    folder: str  # the folder inside the tarball
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarFormat("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                      b"labels", b"label_names", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100 = CifarFormat("cifar100", "cifar-100-python.tar.gz", "cifar-100-python", ("train",), "test", "meta",
                       b"fine_labels", b"fine_label_names", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))

# All the official pickles reference: numpy's array reconstruction (module renamed in numpy 2).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        # encoding="bytes": the files were pickled by Python 2, whose str keys become bytes.
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on garbage: UnpicklingError, EOFError, ValueError…
        raise ValueError(f"{where} is not a CIFAR python-version batch ({type(e).__name__}: {e}); "
                         "replace it with the official file") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} holds a {type(obj).__name__}, not a CIFAR batch dict; replace it with the official file")
    return obj


def _find(fmt: CifarFormat, data_dir: str | Path | None) -> Path:
    """The first extracted folder or tarball in the search order."""
    looked = []
    for base in search_dirs(data_dir, cache_root()):
        for candidate in (base / fmt.folder, base, base / fmt.tarball):
            if (candidate.is_dir() and (candidate / fmt.meta).is_file()) or candidate.is_file():
                return candidate
            looked.append(candidate)
    raise FileNotFoundError(
        f"{fmt.name} not found (looked in: {', '.join(map(str, looked))}). Download the official "
        f"python version ({fmt.tarball} from https://www.cs.toronto.edu/~kriz/cifar.html) and put the "
        f"tarball, or the {fmt.folder}/ folder extracted from it, in a folder passed as --data-dir DIR "
        "(or set ATTNVISION_DATA)."
    )


def _read_members(source: Path, fmt: CifarFormat) -> dict[str, dict]:
    """Unpickle every batch and the meta file, from the folder or in one pass over the tarball."""
    names = [*fmt.train, fmt.test, fmt.meta]
    if source.is_dir():
        raw = {n: (source / n).read_bytes() for n in names if (source / n).is_file()}
    else:
        wanted = {f"{fmt.folder}/{n}": n for n in names}
        try:
            with tarfile.open(source, "r:gz") as tar:
                raw = {wanted[m.name]: tar.extractfile(m).read() for m in tar if m.name in wanted and m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"cannot read {source} as a .tar.gz ({e}); download {fmt.tarball} again") from None
    missing = [n for n in names if n not in raw]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}; it must hold everything the official "
                                f"{fmt.tarball} holds (in {fmt.folder}/)")
    return {n: _unpickle(raw.pop(n), f"{source}: {n}") for n in names}  # pop: free each raw copy early


def _split(batches: list[dict], fmt: CifarFormat, where: str, num_classes: int) -> Split:
    try:
        data = np.concatenate([np.asarray(b[b"data"]) for b in batches])
        labels = np.concatenate([np.asarray(b[fmt.label_key], dtype=np.int64) for b in batches])
    except KeyError as e:
        raise ValueError(f"{where}: a batch has no {e.args[0]!r} entry; is it a {fmt.name} file?") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{where}: expected uint8 data (N, 3072) and N labels, got {data.dtype} {data.shape} "
                         f"and {len(labels)} labels; replace it with the official {fmt.tarball}")
    if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
        raise ValueError(f"{where}: labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    # Each row is the R, G and B planes one after another, each 32×32 row-major: a plain reshape.
    return Split(torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels))


def load_cifar(fmt: CifarFormat, data_dir: str | Path | None = None, val_size: int = 5000,
               seed: int = 0) -> DatasetBundle:
    """Train (50000 − ``val_size``) / val (``val_size``, seeded) / test (10000); uint8 (N, 3, 32, 32)."""
    source = _find(fmt, data_dir)
    members = _read_members(source, fmt)
    try:
        class_names = [n.decode() for n in members[fmt.meta][fmt.names_key]]
    except KeyError:
        raise ValueError(f"{source}: {fmt.meta} has no {fmt.names_key!r}; is it a {fmt.name} file?") from None
    train = _split([members[n] for n in fmt.train], fmt, f"{source} ({', '.join(fmt.train)})", len(class_names))
    test = _split([members[fmt.test]], fmt, f"{source} ({fmt.test})", len(class_names))
    train, val = split_train_val(train, val_size, seed)
    return DatasetBundle(fmt.name, train, val, test, class_names, fmt.mean, fmt.std)


def load_cifar10(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0) -> DatasetBundle:
    return load_cifar(CIFAR10, data_dir, val_size, seed)


def load_cifar100(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0) -> DatasetBundle:
    return load_cifar(CIFAR100, data_dir, val_size, seed)
