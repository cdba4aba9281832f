"""Decode image files into one uint8 tensor: the shared step of every reader of JPEG/PNG datasets.

``load_images(paths, size)`` opens each file with Pillow, converts it to ``mode`` ("RGB" or
"L"; palette, CMYK, grey and alpha images included, alpha dropped) and, when ``size`` is given,
resizes it to exactly that size without keeping the aspect ratio ("squish", as CSRA, ASL and
Query2Label do with ``transforms.Resize((s, s))``). The resampling is Pillow's bilinear filter,
which widens its support when shrinking (antialiased), the same call torchvision's ``Resize``
makes on a PIL image, so images match what those references feed their models. EXIF rotation
is not applied, as in those references. With ``size=None`` images keep their size, which must
then be the same for all.

Decoding runs on a thread pool: Pillow releases the GIL while it decodes and resamples.
All files are tried before anything is raised, so one error lists every missing
(FileNotFoundError) or unreadable (ValueError) file by path.

``image_split`` is what the readers call: it decodes into memory (a ``Split``) or, for data that
would not fit (``stream=None`` and more than ``STREAM_MEMORY_SHARE`` of the available memory) or
on request (``stream=True``), keeps the file list (a ``FileSplit``) for ``loader.BatchLoader``'s
worker processes to decode with ``decode_image`` as batches are drawn; the same pixels either way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import torch
from PIL import Image

from .base import MODES, FileSplit, Split

# ImageNet statistics on the [0, 1] scale: the normalisation torchvision's pretrained weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_LISTED = 10  # paths named in one error message
STREAM_MEMORY_SHARE = 0.5  # ``stream=None`` streams a dataset whose decoded images exceed this share of free memory


def decode_image(path: Path | BinaryIO, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One file (a path, or an open binary file such as a shard's bytes) → uint8 (H, W, C), resized
    to ``size`` (H, W) unless None. Raises what Pillow raises on a bad file."""
    with Image.open(path) as img:
        img = img.convert(mode)  # forces the full decode, so truncated files fail here
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(img).reshape(img.size[1], img.size[0], MODES[mode])


def decode_batch(sources: Sequence[Path | BinaryIO], mode: str, size: tuple[int, int]) -> torch.Tensor:
    """Files (paths or open binary files) → one uint8 (B, C, H, W) batch, each squished to ``size``:
    what a streaming worker hands the loader."""
    images = np.stack([decode_image(source, mode, size) for source in sources])  # (B, H, W, C)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _listing(failures: list[tuple[Path, str]]) -> str:
    lines = [f"  {path}: {reason}" for path, reason in failures[:MAX_LISTED]]
    if len(failures) > MAX_LISTED:
        lines.append(f"  … and {len(failures) - MAX_LISTED} more")
    return "\n".join(lines)


def load_images(
    paths: Sequence[str | Path],
    size: int | tuple[int, int] | None,
    mode: str = "RGB",
    num_workers: int | None = None,
) -> torch.Tensor:
    """Decode ``paths`` (in order) into uint8 (N, C, H, W), C = 3 for "RGB" and 1 for "L".

    size: an int gives square ``size``×``size`` images, (H, W) a rectangle, None the files' own
    (common) size. num_workers: decoding threads (default: the CPU count, at most 8).

    Raises FileNotFoundError naming every missing file, ValueError naming every file Pillow
    cannot decode (not an image, truncated) or, with ``size=None``, whose size differs from the
    first readable file's.
    """
    paths, size = _checked(paths, size, mode)
    resize = size
    if size is None:
        size = _header_size(paths)
    out = torch.empty(len(paths), MODES[mode], *size, dtype=torch.uint8)  # one copy in memory, filled in place
    failures: list[tuple[Path, str]] = []

    def work(i: int) -> None:
        try:
            array = decode_image(paths[i], mode, resize)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # Pillow raises all of these
            failures.append((paths[i], f"{type(e).__name__}: {e}"))
            return
        if array.shape[:2] != size:
            failures.append((paths[i], f"size {array.shape[0]}x{array.shape[1]}, expected {size[0]}x{size[1]}; "
                                       "pass an image size to resize all images"))
            return
        out[i].numpy()[:] = array.transpose(2, 0, 1)  # straight into the output, no extra tensor

    with ThreadPoolExecutor(num_workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(paths)), chunksize=64))
    if failures:
        failures.sort()
        raise ValueError(f"{len(failures)} of {len(paths)} image files cannot be used:\n{_listing(failures)}\n"
                         "Replace or delete these files (and their entries in the annotations).")
    return out


def _checked(paths: Sequence[str | Path], size: int | tuple[int, int] | None,
             mode: str) -> tuple[list[Path], tuple[int, int] | None]:
    """``paths`` as Paths and ``size`` as (H, W) or None, once every file is known to exist."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    size = size_hw(size)
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no image files to load (empty list)")
    missing = [(p, "no such file") for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} image files are missing:\n{_listing(missing)}\n"
                                "Check that the dataset was extracted completely and the paths are right.")
    return paths, size


def size_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """An image size as (H, W): an int is a square; None stays None (the files' own size)."""
    if size is None:
        return None
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size}")
    return size


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux's MemAvailable; else the physical total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_stream(stream: bool | None, count: int, size: int | tuple[int, int], mode: str = "RGB") -> bool:
    """Whether ``count`` images squished to ``size`` are streamed: ``stream`` when given, else
    whether their decoded bytes exceed ``STREAM_MEMORY_SHARE`` of the available memory."""
    if stream is not None:
        return stream
    h, w = size_hw(size)
    return count * MODES[mode] * h * w > STREAM_MEMORY_SHARE * available_memory()


def image_split(paths: Sequence[str | Path], targets: torch.Tensor, size: int | tuple[int, int] | None,
                mode: str = "RGB", stream: bool = False) -> Split | FileSplit:
    """The images at ``paths`` with their ``targets``: decoded into memory (``load_images``), or,
    with ``stream``, checked to exist and kept as files (``FileSplit``; ``size`` is then required,
    since a batch needs one size)."""
    if not stream:
        return Split(load_images(paths, size, mode), targets)
    if size is None:
        raise ValueError("streamed images need a common size to be batched: pass an image size (img_size)")
    paths, size = _checked(paths, size, mode)
    return FileSplit(paths, targets, size, mode)


def _header_size(paths: list[Path]) -> tuple[int, int]:
    """(H, W) of the first file whose header Pillow can read (an unreadable one is reported later)."""
    for path in paths:
        try:
            with Image.open(path) as img:
                return img.size[1], img.size[0]
        except (OSError, ValueError, SyntaxError):
            continue
    raise ValueError(f"none of the {len(paths)} image files can be read as an image, e.g. {paths[0]}")
