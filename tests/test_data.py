"""Dataset readers (Fashion-MNIST incl. download, CIFAR-10/100, image folders), split_train_val and
BatchLoader, on tiny fixture files written in the official formats. No test touches the network."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_fashion_mnist, write_idx
from PIL import Image

import attnvision.data.fashion_mnist as fm
from attnvision.data import DatasetBundle, Split, BatchLoader, list_datasets, load_dataset, split_train_val
from attnvision.data.cifar import CIFAR10, CIFAR100, CifarFormat
from attnvision.data.download import fetch
from attnvision.data.augment import Augmentation, random_crop, random_hflip


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    """No $ATTNVISION_DATA, no Debian folder, an empty cache: returns the cache root."""
    monkeypatch.delenv("ATTNVISION_DATA", raising=False)
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path / "cache"


def test_registry_names():
    assert {"fashion-mnist", "cifar10", "cifar100", "image-folder"} <= set(list_datasets())
    with pytest.raises(ValueError, match="valid names: .*cifar10"):
        load_dataset("cifar-10")


# ---------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def test_read_idx_gz_and_plain(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    write_idx(tmp_path / "images.gz", images)
    (tmp_path / "images").write_bytes(idx_bytes(images))
    (tmp_path / "labels").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "images.gz"), images)
    np.testing.assert_array_equal(fm.read_idx(str(tmp_path / "images")), images)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "labels"), labels)


@pytest.mark.parametrize("name, mutate, message", [
    ("plain", lambda b: b"\x08\x00" + b[2:], "bad magic"),
    ("plain", lambda b: b[:2] + b"\x0d" + b[3:], "bad magic"),  # float32 IDX: not uint8
    ("plain", lambda b: b[:2], "bad magic"),
    ("plain", lambda b: b[:10], "truncated inside its header"),
    ("plain", lambda b: b[:-5], r"truncated: header says \(3, 5, 4\), found 55"),
    ("x.gz", lambda b: gzip.compress(b)[:-20], "cannot read IDX"),  # gzip stream cut short
    ("x.gz", lambda b: b, "cannot read IDX"),  # named .gz but not gzipped
    ("x.gz", lambda b: gzip.compress(b[:-1]), "truncated"),
])
def test_read_idx_rejects_bad_files(tmp_path, name, mutate, message):
    good = idx_bytes(np.zeros((3, 5, 4), dtype=np.uint8))
    (tmp_path / name).write_bytes(mutate(good))
    with pytest.raises(ValueError, match=message) as e:
        fm.read_idx(tmp_path / name)
    assert str(tmp_path / name) in str(e.value)


# ---------------------------------------------------------------- Fashion-MNIST: search and download


def total(bundle: DatasetBundle) -> int:
    return len(bundle.train) + len(bundle.val)


def test_fashion_mnist_search_order(isolated, tmp_path, monkeypatch):
    tiny_fashion_mnist(tmp_path / "arg", n_train=30, n_test=10)
    tiny_fashion_mnist(tmp_path / "env" / "fashion-mnist", n_train=40, n_test=10)
    tiny_fashion_mnist(tmp_path / "debian", n_train=50, n_test=10)
    tiny_fashion_mnist(isolated / "fashion-mnist", n_train=60, n_test=10)
    assert total(fm.load_fashion_mnist(val_size=5)) == 60  # only the cache
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian")
    assert total(fm.load_fashion_mnist(val_size=5)) == 50  # Debian before the cache
    monkeypatch.setenv("ATTNVISION_DATA", str(tmp_path / "env"))  # found in its fashion-mnist/ subfolder
    assert total(fm.load_fashion_mnist(val_size=5)) == 40
    bundle = load_dataset("fashion-mnist", data_dir=tmp_path / "arg", val_size=5, seed=1)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (25, 5, 10)
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.images.shape[1:] == (1, 28, 28)
    assert bundle.num_classes == 10 and bundle.in_chans == 1 and bundle.img_size == (28, 28)


def test_fashion_mnist_rejects_mismatched_labels(tmp_path):
    root = tiny_fashion_mnist(tmp_path / "fm", n_train=30, n_test=10)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images.*\(10, 28, 28\).*t10k-labels.*\(9,\)"):
        fm.load_fashion_mnist(root, val_size=5)


def mirror(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """Tiny files behind a file:// URL standing in for the official server; returns their MD5s."""
    served = tiny_fashion_mnist(tmp_path / "mirror", n_train=30, n_test=10)
    monkeypatch.setattr(fm, "BASE_URL", served.as_uri() + "/")
    return {k: hashlib.md5((served / f).read_bytes()).hexdigest() for k, f in fm.FILES.items()}


def test_fashion_mnist_downloads_into_cache(isolated, tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "MD5", mirror(tmp_path, monkeypatch))
    bundle = fm.load_fashion_mnist(val_size=5)
    assert total(bundle) == 30 and len(bundle.test) == 10
    assert sorted(p.name for p in (isolated / "fashion-mnist").iterdir()) == sorted(fm.FILES.values())
    fetched = (isolated / "fashion-mnist" / fm.FILES["train_images"]).stat().st_mtime_ns
    monkeypatch.setattr(fm, "BASE_URL", (tmp_path / "gone").as_uri() + "/")  # offline now: cache suffices
    assert total(fm.load_fashion_mnist(val_size=5)) == 30
    assert (isolated / "fashion-mnist" / fm.FILES["train_images"]).stat().st_mtime_ns == fetched


def test_fashion_mnist_md5_mismatch_saves_nothing(isolated, tmp_path, monkeypatch):
    mirror(tmp_path, monkeypatch)  # the tiny files do not have the official checksums
    with pytest.raises(FileNotFoundError, match=r"(?s)MD5 .*expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d.*"
                                                r"apt-get install dataset-fashion-mnist"):
        fm.load_fashion_mnist()
    assert list((isolated / "fashion-mnist").iterdir()) == []  # no file, no temporary left behind


def test_fashion_mnist_unreachable_url(isolated, tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "BASE_URL", (tmp_path / "offline").as_uri() + "/")
    with pytest.raises(FileNotFoundError) as e:
        fm.load_fashion_mnist()
    message = str(e.value)
    for part in ("not found", str(isolated), "cannot download", "train-images-idx3-ubyte.gz",
                 "apt-get install dataset-fashion-mnist", "--data-dir"):
        assert part in message


@pytest.mark.parametrize("name", ["fashion-mnist", "fashion-mnist-scenes", "cifar10", "voc2007", "coco2014",
                                  "image-list"])
def test_a_named_data_folder_must_exist_and_hold_the_data(isolated, tmp_path, monkeypatch, name):
    """Never a silent fall back to the system or cache copy when the named folder is mistyped."""
    tiny_fashion_mnist(isolated / "fashion-mnist", n_train=30, n_test=10)  # a copy that must not be used
    write_cifar(isolated, CIFAR10, per_batch=1)
    with pytest.raises(FileNotFoundError, match=r"data_dir \(--data-dir\) .*typo does not exist"):
        load_dataset(name, data_dir=tmp_path / "typo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_dataset(name, data_dir=tmp_path / "empty")
    monkeypatch.setenv("ATTNVISION_DATA", str(tmp_path / "unset-typo"))
    with pytest.raises(FileNotFoundError, match=r"\$ATTNVISION_DATA .*unset-typo does not exist"):
        load_dataset(name)


def test_fashion_mnist_retry_fetches_only_missing_files(isolated, tmp_path, monkeypatch):
    md5 = mirror(tmp_path, monkeypatch)
    monkeypatch.setattr(fm, "MD5", md5)
    calls = []

    def flaky(url: str, dest: Path, checksum: str) -> Path:
        calls.append(dest.name)
        if len(calls) == 3:
            raise ConnectionError("network is unreachable")
        return fetch(url, dest, checksum)

    monkeypatch.setattr(fm, "fetch", flaky)
    with pytest.raises(FileNotFoundError, match="network is unreachable"):
        fm.load_fashion_mnist(val_size=5)
    assert len(list((isolated / "fashion-mnist").iterdir())) == 2
    calls.clear()
    assert total(fm.load_fashion_mnist(val_size=5)) == 30
    assert calls == list(fm.FILES.values())[2:]


def test_fetch_is_atomic(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"new contents")
    dest = tmp_path / "out" / "file.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old contents")
    with pytest.raises(ValueError, match="MD5"):
        fetch(source.as_uri(), dest, "0" * 32)
    assert dest.read_bytes() == b"old contents" and list(dest.parent.iterdir()) == [dest]
    with pytest.raises(ConnectionError, match="cannot download"):
        fetch((tmp_path / "missing").as_uri(), dest, "0" * 32)
    assert list(dest.parent.iterdir()) == [dest]
    fetch(source.as_uri(), dest, hashlib.md5(b"new contents").hexdigest())
    assert dest.read_bytes() == b"new contents" and list(dest.parent.iterdir()) == [dest]


def test_real_fashion_mnist():
    if not all((fm.DEBIAN_DIR / f).is_file() for f in fm.FILES.values()):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    bundle = fm.load_fashion_mnist(fm.DEBIAN_DIR, val_size=5000)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (55000, 5000, 10000)
    assert bundle.train.images.shape == (55000, 1, 28, 28) and bundle.train.images.dtype == torch.uint8
    train_counts = torch.bincount(bundle.train.targets, minlength=10)
    assert len(train_counts) == 10 and 5000 < train_counts.min() and train_counts.max() < 6000
    assert torch.bincount(bundle.test.targets).tolist() == [1000] * 10
    assert abs(bundle.train.images.float().mean().item() / 255 - fm.MEAN[0]) < 0.01


# ---------------------------------------------------------------- CIFAR


def cifar_image(k: int) -> np.ndarray:
    """(3072,) row in the official layout: R plane, G plane, B plane, each 32×32 row-major.
    R rises along the width, G along the height, B is k (identifies the image)."""
    y, x = np.mgrid[0:32, 0:32]
    planes = [x * 8, y * 8, np.full((32, 32), k)]
    return np.concatenate([p.ravel() for p in planes]).astype(np.uint8)


class Python2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2's cPickle wrote its str (SHORT_BINSTRING/BINSTRING),
    as in the official files; Python 3's own protocol 2 would route them through _codecs.encode."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    out = io.BytesIO()
    Python2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def write_cifar(root: Path, fmt: CifarFormat, per_batch: int = 4, tarball: bool = False) -> Path:
    """A tiny official-format CIFAR: Python-2 pickled dicts (keys are Python 2 str, read back as
    bytes with encoding="bytes"). Image k has blue value k and fine label k % classes; CIFAR-100's
    coarse labels deliberately differ. Returns the folder or tarball."""
    n_classes = 10 if fmt is CIFAR10 else 100
    members, k = {}, 0
    for name in (*fmt.train, fmt.test):
        ks = range(k, k + per_batch)
        k += per_batch
        batch = {b"batch_label": name.encode(), b"data": np.stack([cifar_image(i) for i in ks]),
                 b"filenames": [f"img_{i}.png".encode() for i in ks]}
        if fmt is CIFAR10:
            batch[b"labels"] = [i % n_classes for i in ks]
        else:
            batch[b"fine_labels"] = [i % n_classes for i in ks]
            batch[b"coarse_labels"] = [19 - i % 20 for i in ks]
        members[name] = batch
    if fmt is CIFAR10:
        members[fmt.meta] = {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                             b"label_names": [f"class{i}".encode() for i in range(10)]}
    else:
        members[fmt.meta] = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                             b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    root.mkdir(parents=True, exist_ok=True)
    if not tarball:
        for name, obj in members.items():
            (root / fmt.folder).mkdir(exist_ok=True)
            (root / fmt.folder / name).write_bytes(py2_pickle(obj))
        return root / fmt.folder
    with tarfile.open(root / fmt.tarball, "w:gz") as tar:
        for name, obj in members.items():
            raw = py2_pickle(obj)
            info = tarfile.TarInfo(f"{fmt.folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return root / fmt.tarball


@pytest.mark.parametrize("fmt", [CIFAR10, CIFAR100], ids=["cifar10", "cifar100"])
def test_cifar_folder_and_tarball(isolated, tmp_path, fmt):
    n_train = 4 * len(fmt.train)
    write_cifar(tmp_path / "folder", fmt)
    write_cifar(tmp_path / "tar", fmt, tarball=True)
    from_folder = load_dataset(fmt.name, data_dir=tmp_path / "folder", val_size=2, seed=3)
    from_tar = load_dataset(fmt.name, data_dir=tmp_path / "tar", val_size=2, seed=3)
    for a, b in ((from_folder.train, from_tar.train), (from_folder.val, from_tar.val), (from_folder.test, from_tar.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    bundle = from_tar
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (n_train - 2, 2, 4)
    assert bundle.train.images.dtype == torch.uint8 and bundle.img_size == (32, 32) and bundle.in_chans == 3
    prefix, n_classes = ("class", 10) if fmt is CIFAR10 else ("fine", 100)
    assert bundle.class_names == [f"{prefix}{i}" for i in range(n_classes)]
    assert (bundle.mean, bundle.std) == (fmt.mean, fmt.std)
    images = torch.cat([bundle.train.images, bundle.val.images, bundle.test.images])
    targets = torch.cat([bundle.train.targets, bundle.val.targets, bundle.test.targets])
    ids = images[:, 2, 0, 0].long()  # the blue value names the image
    assert sorted(ids.tolist()) == list(range(n_train + 4))
    assert torch.equal(targets, ids % n_classes)  # fine labels, not coarse ones
    assert torch.equal(bundle.test.images[:, 2, 0, 0], torch.arange(n_train, n_train + 4, dtype=torch.uint8))
    x = torch.arange(32, dtype=torch.uint8) * 8
    assert torch.equal(images[:, 0], x.expand(len(images), 32, 32))  # red varies along the width
    assert torch.equal(images[:, 1], x[:, None].expand(len(images), 32, 32))  # green along the height


def test_cifar_search_order(isolated, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"(?s)cifar10 not found.*cifar-10-python\.tar\.gz.*cifar-10-batches-py/"):
        load_dataset("cifar10", val_size=2)
    write_cifar(isolated, CIFAR10, per_batch=1, tarball=True)
    assert total(load_dataset("cifar10", val_size=2)) == 5  # the cache
    write_cifar(tmp_path / "env", CIFAR10, per_batch=2)
    monkeypatch.setenv("ATTNVISION_DATA", str(tmp_path / "env"))
    assert total(load_dataset("cifar10", val_size=2)) == 10
    folder = write_cifar(tmp_path / "arg", CIFAR10, per_batch=3)
    assert total(load_dataset("cifar10", data_dir=tmp_path / "arg", val_size=2)) == 15
    assert total(load_dataset("cifar10", data_dir=folder, val_size=2)) == 15  # the extracted folder itself
    tar = write_cifar(tmp_path / "tar", CIFAR10, per_batch=3, tarball=True)
    assert total(load_dataset("cifar10", data_dir=tar, val_size=2)) == 15  # the tarball itself


class Exploit:
    def __reduce__(self):
        return print, ("pwned",)


@pytest.mark.parametrize("damage, error, message", [
    (lambda d: (d / "data_batch_3").unlink(), FileNotFoundError, "lacks data_batch_3"),
    (lambda d: (d / "test_batch").write_bytes(b"\x80\x02garbage"), ValueError, "test_batch is not a CIFAR"),
    (lambda d: (d / "batches.meta").write_bytes(py2_pickle([1, 2])), ValueError, "holds a list"),
    (lambda d: (d / "data_batch_1").write_bytes(py2_pickle({b"data": Exploit()})),
     ValueError, "refusing to load __builtin__.print"),  # protocol 2 uses the Python 2 module name
    (lambda d: (d / "batches.meta").write_bytes(py2_pickle({b"names": []})), ValueError, "no b'label_names'"),
    (lambda d: (d / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8)})),
     ValueError, "no b'labels'"),
    (lambda d: (d / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})),
     ValueError, r"\(N, 3072\).*\(2, 1024\)"),
    (lambda d: (d / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})),
     ValueError, r"labels must lie in \[0, 10\), found 0..10"),
], ids=["missing-batch", "garbage", "not-a-dict", "code-injection", "no-names", "no-labels", "bad-shape", "bad-label"])
def test_cifar_bad_folder(isolated, tmp_path, capsys, damage, error, message):
    damage(write_cifar(tmp_path, CIFAR10, per_batch=2))
    with pytest.raises(error, match=message):
        load_dataset("cifar10", data_dir=tmp_path, val_size=2)
    assert "pwned" not in capsys.readouterr().out


def test_cifar_bad_tarball(isolated, tmp_path):
    (tmp_path / CIFAR100.tarball).write_bytes(b"not a tarball at all")
    with pytest.raises(ValueError, match="cannot read .*cifar-100-python.tar.gz as a .tar.gz"):
        load_dataset("cifar100", data_dir=tmp_path, val_size=2)
    with tarfile.open(tmp_path / CIFAR100.tarball, "w:gz") as tar:  # a valid archive with the wrong contents
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = 0
        tar.addfile(info, io.BytesIO())
    with pytest.raises(FileNotFoundError, match="lacks test, meta"):
        load_dataset("cifar100", data_dir=tmp_path, val_size=2)


# ---------------------------------------------------------------- image folders

COLOURS = {"ant": (200, 30, 10), "bee": (20, 180, 60), "cat": (5, 40, 250), "dog": (90, 90, 90)}


def write_images(root: Path, counts: dict[str, int], size=(9, 6), ext=".png") -> None:
    """Solid-colour images (width, height = size) so that the label is readable from the pixels."""
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, COLOURS[name]).save(root / name / f"{i}{ext}")


def image_root(tmp_path: Path, with_val: bool = False) -> Path:
    root = tmp_path / "images"
    write_images(root / "train", {"ant": 3, "bee": 4, "cat": 3})
    Image.new("RGB", (13, 17), COLOURS["cat"]).save(root / "train" / "cat" / "big.png")  # resized like the rest
    (root / "train" / "ant" / "notes.txt").write_text("ignored")
    write_images(root / "test", {"ant": 2, "cat": 1}, ext=".bmp")  # test may lack a class (bee)
    if with_val:
        write_images(root / "val", {"bee": 2})
    return root


def test_image_folder_rgb(tmp_path):
    bundle = load_dataset("image-folder", data_dir=image_root(tmp_path), val_size=3, img_size=(5, 7))
    assert bundle.class_names == ["ant", "bee", "cat"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 3, 3)
    assert bundle.train.images.shape == (8, 3, 5, 7) and bundle.train.images.dtype == torch.uint8
    assert bundle.test.targets.tolist() == [0, 0, 2]
    for split in (bundle.train, bundle.val, bundle.test):
        for image, label in zip(split.images, split.targets):
            colour = torch.tensor(COLOURS[bundle.class_names[label]], dtype=torch.uint8)
            assert torch.equal(image, colour[:, None, None].expand(3, 5, 7))
    pixels = bundle.train.images.double() / 255
    assert np.allclose(bundle.mean, pixels.mean((0, 2, 3)), atol=1e-9)
    assert np.allclose(bundle.std, pixels.std((0, 2, 3), correction=0), atol=1e-9)


def test_image_folder_grey_and_val_folder(tmp_path):
    bundle = load_dataset("image-folder", data_dir=image_root(tmp_path, with_val=True), val_size=9999,
                          img_size=4, in_chans=1)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (11, 2, 3)  # val_size unused
    assert bundle.val.targets.tolist() == [1, 1] and bundle.in_chans == 1 and bundle.img_size == (4, 4)
    grey = {name: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0)) for name, c in COLOURS.items()}
    for image, label in zip(bundle.train.images, bundle.train.targets):
        assert (image == grey[bundle.class_names[label]]).all()
    assert len(bundle.mean) == len(bundle.std) == 1


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def empty_folders(root: Path) -> None:
    for p in root.rglob("*.*"):
        p.unlink()


@pytest.mark.parametrize("break_it, error, message", [
    (lambda r: (r / "train" / "bee" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"), ValueError,
     r"cannot be used:\n  .*train/bee/1\.png: UnidentifiedImageError"),
    (lambda r: truncate(r / "test" / "ant" / "0.bmp"), ValueError,
     r"cannot be used:\n  .*test/ant/0\.bmp: OSError: image file is truncated"),
    (lambda r: (r / "train" / "dog").mkdir(), ValueError, r"class folder\(s\) dog hold no images"),
    (lambda r: write_images(r / "test", {"dog": 1}), ValueError, r"has class\(es\) dog with no folder in train/"),
    (lambda r: empty_folders(r / "test"), ValueError, r"ant, cat hold no images"),
    (lambda r: shutil.rmtree(r / "test") or (r / "test").mkdir(), ValueError, "has no class subfolders"),
    (lambda r: shutil.rmtree(r / "test"), FileNotFoundError, r"test not found; image-folder expects"),
], ids=["corrupt", "truncated", "empty-class", "test-only-class", "empty-test-classes", "no-classes", "no-test"])
def test_image_folder_errors(tmp_path, break_it, error, message):
    root = image_root(tmp_path)
    break_it(root)
    with pytest.raises(error, match=message):
        load_dataset("image-folder", data_dir=root, val_size=2)


@pytest.mark.parametrize("kw, message", [
    ({"data_dir": None}, "needs data_dir"),
    ({"img_size": (4, 0)}, "size must be"),
    ({"img_size": (4, 4, 4)}, "size must be"),
    ({"in_chans": 4}, "in_chans must be 1"),
])
def test_image_folder_bad_arguments(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("image-folder", **{"data_dir": image_root(tmp_path), "val_size": 2, **kw})


# ---------------------------------------------------------------- split_train_val and BatchLoader


def numbered(n: int, shape=(1, 2, 2)) -> Split:
    """Image i is filled with the value i; target i."""
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, *shape).clone(), torch.arange(n))


def test_split_train_val():
    data = numbered(20)
    train, val = split_train_val(data, 6, seed=0)
    assert (len(train), len(val)) == (14, 6)
    assert sorted(train.targets.tolist() + val.targets.tolist()) == list(range(20))
    assert torch.equal(train.images[:, 0, 0, 0].long(), train.targets)  # images stay with their targets
    assert torch.equal(split_train_val(data, 6, seed=0)[1].targets, val.targets)
    assert not torch.equal(split_train_val(data, 6, seed=1)[1].targets, val.targets)
    for bad in (0, 20):
        with pytest.raises(ValueError, match=r"val_size must be in \(0, 20\)"):
            split_train_val(data, bad, seed=0)


def test_random_crop_matches_hand_crop():
    x = torch.arange(2 * 2 * 3 * 4, dtype=torch.uint8).view(2, 2, 3, 4) + 1
    pad = 2
    out = random_crop(x, pad, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g), torch.randint(0, 2 * pad + 1, (2,), generator=g)
    for b in range(2):
        padded = torch.zeros(2, 3 + 2 * pad, 4 + 2 * pad, dtype=torch.uint8)
        padded[:, pad:pad + 3, pad:pad + 4] = x[b]
        assert torch.equal(out[b], padded[:, dy[b]:dy[b] + 3, dx[b]:dx[b] + 4])
    offsets = set()
    for seed in range(40):  # every offset in [0, 2·pad] is reachable, corners included
        g = torch.Generator().manual_seed(seed)
        offsets.update(torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist())
    assert offsets == set(range(2 * pad + 1))


def test_random_hflip_flips_the_drawn_images():
    x = torch.rand(16, 2, 3, 5)
    out = random_hflip(x, torch.Generator().manual_seed(3))
    chosen = torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5
    assert 0 < chosen.sum() < 16
    assert torch.equal(out[chosen], x[chosen].flip(3)) and torch.equal(out[~chosen], x[~chosen])


def test_loader_is_deterministic_per_epoch():
    data = Split(torch.randint(0, 256, (23, 3, 6, 5), dtype=torch.uint8), torch.arange(23))
    make = lambda: BatchLoader(data, 5, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), train=True,
                               augment=Augmentation(crop_pad=2, hflip=True), seed=7)
    a, b = make(), make()
    a.set_epoch(3)
    b.set_epoch(3)
    first, second = list(a), list(b)
    assert len(first) == len(a) == 4 and sum(len(t) for _, t in first) == 20  # whole batches only
    assert all(torch.equal(x1, x2) and torch.equal(t1, t2) for (x1, t1), (x2, t2) in zip(first, second))
    b.set_epoch(4)
    assert not torch.equal(torch.cat([t for _, t in list(b)]), torch.cat([t for _, t in first]))
    assert len(set(torch.cat([t for _, t in list(b)]).tolist())) == 20


@pytest.mark.parametrize("train", [True, False])
def test_loader_ranks_are_disjoint_and_cover_the_epoch(train):
    data = numbered(11)
    seen = []
    for rank in range(2):
        loader = BatchLoader(data, 4, (0.0,), (1.0,), train=train, seed=1, rank=rank, world_size=2)
        loader.set_epoch(2)
        targets = torch.cat([t for _, t in loader]).tolist()
        assert len(targets) == (4 if train else 6 - rank)
        seen.append(set(targets))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == (8 if train else 11)  # training keeps whole batches of 4 per rank


def test_loader_eval_is_ordered_normalised_and_unaugmented():
    images = torch.randint(0, 256, (3, 2, 4, 5), dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([0, 51, 255], dtype=torch.uint8)
    loader = BatchLoader(Split(images, torch.arange(3)), 2, mean=(0.2, 0.5), std=(0.5, 0.25), train=False,
                          augment=Augmentation(crop_pad=4, hflip=True))  # augmentation only applies when training
    out = list(loader)
    x, t = torch.cat([b[0] for b in out]), torch.cat([b[1] for b in out])
    assert [len(b[1]) for b in out] == [2, 1] and t.tolist() == [0, 1, 2] and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0, 0], torch.tensor([-0.4, 0.0, 1.6]), atol=1e-6)  # (v/255 − 0.2) / 0.5
    expected = (images.float() / 255 - torch.tensor([0.2, 0.5]).view(1, 2, 1, 1)) / torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)
