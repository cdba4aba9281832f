"""Any labelled image collection laid out as one folder per class::

    root/train/<class>/<image>     root/test/<class>/<image>     root/val/<class>/<image> (optional)

Images (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm; other files are ignored)
are decoded by ``images.load_images``: converted to RGB (``in_chans=3``) or grey "L"
(``in_chans=1``), resized to ``img_size`` (int or (h, w)) with Pillow's bilinear filter, and held
as uint8 (N, C, h, w), or kept as files with ``stream`` (``images.image_split``); every
unreadable file is reported by path. Class names are the sorted
subfolder names of ``train/``; ``val/`` and ``test/`` may lack classes but may not add any. With
``val/`` present it is the validation split and ``val_size`` is unused; otherwise ``val_size``
training images are carved off (seeded). Mean and std are computed on the final training split
(after carving), per channel, on the [0, 1] scale; when streaming, on a seeded sample of
``STATS_SAMPLE`` of its images (decoding them all would be a pass over the whole dataset).

Deviations from the usual ImageNet-style pipeline: images are squashed to ``img_size`` (aspect
ratio not kept, no crop), once, at load time; RGBA and palette transparency are dropped by the
RGB conversion rather than composited on a background.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import DatasetBundle, FileSplit, Split, channel_stats, split_train_val
from .images import image_split, load_images, resolve_stream

STATS_SAMPLE = 2000  # streamed training images decoded for the channel statistics
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
                size: int | tuple[int, int], stream: bool) -> Split | FileSplit:
    unknown = sorted(set(classes) - set(class_index))
    if unknown:
        raise ValueError(f"{split_dir} has class(es) {', '.join(unknown)} with no folder in train/; "
                         "every class needs training images")
    files = [(path, class_index[name]) for name, paths in classes.items() for path in paths]
    return image_split([path for path, _ in files], torch.tensor([label for _, label in files], dtype=torch.int64),
                       size, mode, stream)


def _stats(train: Split | FileSplit, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel mean and std of the training images (``STATS_SAMPLE`` of them, seeded, when streamed)."""
    if isinstance(train, Split):
        return channel_stats(train.images)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:STATS_SAMPLE].sort().values
    return channel_stats(load_images([train.files[i] for i in pick.tolist()], train.size, train.mode))


def load_image_folder(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0,
                      img_size: int | tuple[int, int] = 32, in_chans: int = 3,
                      stream: bool | None = None) -> DatasetBundle:
    """Read ``data_dir``/{train,test[,val]}/<class>/ into memory (or keep the files: ``stream``;
    None: when the decoded images would not fit, ``images.resolve_stream``); see the module docstring."""
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
    listed = {part: _list_classes(root / part) for part in ("train", "val", "test") if (root / part).is_dir()}
    class_names = list(listed["train"])  # sorted by _list_classes
    class_index = {name: i for i, name in enumerate(class_names)}
    stream = resolve_stream(stream, sum(len(f) for classes in listed.values() for f in classes.values()), img_size,
                            mode)
    train = _read_split(root / "train", listed["train"], class_index, mode, img_size, stream)
    if "val" in listed:
        val = _read_split(root / "val", listed["val"], class_index, mode, img_size, stream)
    else:
        train, val = split_train_val(train, val_size, seed)
    test = _read_split(root / "test", listed["test"], class_index, mode, img_size, stream)
    mean, std = _stats(train, seed)
    return DatasetBundle("image-folder", train, val, test, class_names, mean, std)
