"""Any labelled image collection laid out as one folder per class::

    root/train/<class>/<image>     root/test/<class>/<image>     root/val/<class>/<image> (optional)

Images (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm; other files are ignored)
are decoded by ``images.load_images``: converted to RGB (``in_chans=3``) or grey "L"
(``in_chans=1``), resized to ``img_size`` (int or (h, w)) with Pillow's bilinear filter, and held
as uint8 (N, C, h, w); every unreadable file is reported by path. Class names are the sorted
subfolder names of ``train/``; ``val/`` and ``test/`` may lack classes but may not add any. With
``val/`` present it is the validation split and ``val_size`` is unused; otherwise ``val_size``
training images are carved off (seeded). Mean and std are computed on the final training split
(after carving), per channel, on the [0, 1] scale.

Deviations from the usual ImageNet-style pipeline: images are squashed to ``img_size`` (aspect
ratio not kept, no crop), once, at load time; RGBA and palette transparency are dropped by the
RGB conversion rather than composited on a background.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import DatasetBundle, Split, channel_stats, split_train_val
from .images import load_images

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _list_classes(split_dir: Path) -> dict[str, list[Path]]:
    """class name → sorted image paths, for every class subfolder of ``split_dir``."""
    classes = {
        d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        for d in sorted(split_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")
    }
    if not classes:
        raise ValueError(f"{split_dir} has no class subfolders; put each class's images in {split_dir}/<class>/")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise ValueError(f"{split_dir}: class folder(s) {', '.join(empty)} hold no images "
                         f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folders")
    return classes


def _read_split(split_dir: Path, classes: dict[str, list[Path]], class_index: dict[str, int], mode: str,
                size: int | tuple[int, int]) -> Split:
    unknown = sorted(set(classes) - set(class_index))
    if unknown:
        raise ValueError(f"{split_dir} has class(es) {', '.join(unknown)} with no folder in train/; "
                         "every class needs training images")
    files = [(path, class_index[name]) for name, paths in classes.items() for path in paths]
    images = load_images([path for path, _ in files], size, mode)
    return Split(images, torch.tensor([label for _, label in files], dtype=torch.int64))


def load_image_folder(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0,
                      img_size: int | tuple[int, int] = 32, in_chans: int = 3) -> DatasetBundle:
    """Read ``data_dir``/{train,test[,val]}/<class>/ into memory; see the module docstring."""
    if data_dir is None:
        raise ValueError("image-folder needs data_dir: a folder with train/<class>/ and test/<class>/ subfolders")
    root = Path(data_dir).expanduser()
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
    mode = "L" if in_chans == 1 else "RGB"
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise FileNotFoundError(f"{root / part} not found; image-folder expects {root}/train/<class>/ "
                                    f"and {root}/test/<class>/ (and optionally {root}/val/<class>/)")
    train_classes = _list_classes(root / "train")
    class_names = list(train_classes)  # sorted by _list_classes
    class_index = {name: i for i, name in enumerate(class_names)}
    train = _read_split(root / "train", train_classes, class_index, mode, img_size)
    if (root / "val").is_dir():
        val = _read_split(root / "val", _list_classes(root / "val"), class_index, mode, img_size)
    else:
        train, val = split_train_val(train, val_size, seed)
    test = _read_split(root / "test", _list_classes(root / "test"), class_index, mode, img_size)
    mean, std = channel_stats(train.images)
    return DatasetBundle("image-folder", train, val, test, class_names, mean, std)
