"""Fashion-MNIST scenes: a synthetic multi-label dataset with known object boxes, built from
Fashion-MNIST (Xiao et al. 2017, ``fashion_mnist.py``) so that it needs no download beyond it.

Each grey canvas of ``canvas_size``² pixels (64 to 112) holds k ~ U{items[0], …, items[1]} items
(default 1 to 4). Item j is
a Fashion-MNIST image drawn uniformly (with replacement) from the source split, resized
(bilinear, antialiased) from 28 px to s_j = round(28·u), u ~ U(0.75, 1.5), i.e. 21 to 42 px, and
placed at a uniform position entirely inside the canvas. Items are composed by pixel-wise max,

    canvas(y, x) = max_j item_j(y − y_j, x − x_j)    (0 outside an item),

so an overlapping item never erases another (Fashion-MNIST items are bright on black).
Target: multi-hot over the 10 Fashion-MNIST classes present (two items may share a class).

``fashion-mnist-scenes-single`` is the single-label variant for localisation studies of
single-label models: one item per canvas (``items = (1, 1)``, the same generator), target = that
item's class index, and its box kept likewise.
Clutter (``clutter`` = c > 0, default 0: off): c fragments per canvas, each a 14×14 crop at a
uniform position of a uniformly drawn source image of the same split (another item, or the same
class by chance), its brightness scaled to 40%, pasted at a uniform position anywhere in the
canvas by the same pixel-wise max. Fragments are dimmer than the items, carry other classes'
texture, and may reach into an item's box; the boxes stay the items' own (computed from the item
alone). They make the background hold object-like distractors, so that a model or map that
looks at the object is told apart from one that looks at any texture. The fragments are drawn
from the generator after everything else, so scenes and boxes are those of c = 0 plus the
fragments, and c = 0 builds exactly the scenes (and cache files) of before.

Boxes: ``extras["boxes"][split]`` is a list with one int64 (k, 5) tensor per image, rows
(x0, y0, x1, y1, class): the tightest box around the item's non-zero pixels after resizing, in
pixel coordinates with x1, y1 exclusive (the box covers canvas[y0:y1, x0:x1]).

Train scenes are built from the Fashion-MNIST training split and test scenes from its test
split, so no source image is shared; validation is carved (seeded by ``seed``) from the train
scenes. ``scene_seed`` fixes the scenes themselves, so that changing the validation seed does not
change the data. Mean and std are those of the train scenes.

Generation is vectorised: per-item work runs in one batch per item size (22 sizes), pasting by
``scatter_reduce`` with ``amax``. The result is cached in ``<cache>/fashion-mnist-scenes``
(``$ATTNVISION_CACHE`` or ``~/.cache/attnvision``) under a key of every parameter, the
generator version and a hash of the source files' contents, and written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import atomic_torch_save, read_torch_file
from .base import DatasetBundle, Split, channel_stats, split_train_val
from .download import cache_root
from .fashion_mnist import CLASSES, find_dir, read_splits

CANVAS_SIZES = (64, 112)  # smallest and largest canvas_size
ITEMS = (1, 4)  # default fewest and most items per canvas
MAX_ITEMS = 8
SCALES = (0.75, 1.5)  # item size range as a multiple of 28 px
VERSION = 1  # part of the cache key: bump it whenever generation changes
FRAGMENT = 14  # clutter: side of a fragment in pixels (a quarter of a 28-px item)
FRAGMENT_CONTRAST = 0.4  # clutter: a fragment's brightness relative to its source image
MAX_CLUTTER = 32  # most fragments per canvas


def compose_scenes(images: torch.Tensor, labels: torch.Tensor, n: int, canvas_size: int,
                   generator: torch.Generator, items: tuple[int, int] = ITEMS,
                   clutter: int = 0) -> dict[str, torch.Tensor]:
    """Build ``n`` scenes of ``items[0]`` to ``items[1]`` items each (and ``clutter`` fragments,
    ``paste_clutter``) from source items ``images`` uint8 (M, 28, 28) with ``labels`` (M,).

    Returns images uint8 (n, 1, S, S), targets float32 (n, 10), boxes int64 (K, 5) of all K items
    in scene order, counts int64 (n,) items per scene (so ``boxes.split(counts.tolist())``)."""
    counts = torch.randint(items[0], items[1] + 1, (n,), generator=generator)
    scene = torch.repeat_interleave(torch.arange(n), counts)  # (K,) the scene of every item
    k = len(scene)
    source = torch.randint(0, len(images), (k,), generator=generator)
    sizes = (28 * (SCALES[0] + (SCALES[1] - SCALES[0]) * torch.rand(k, generator=generator))).round().long()
    x0 = (torch.rand(k, generator=generator) * (canvas_size - sizes + 1)).long()
    y0 = (torch.rand(k, generator=generator) * (canvas_size - sizes + 1)).long()

    canvas = torch.zeros(n * canvas_size * canvas_size, dtype=torch.uint8)
    corner = (scene * canvas_size + y0) * canvas_size + x0  # (K,) flat canvas index of each item's top-left
    boxes = torch.empty(k, 5, dtype=torch.long)
    boxes[:, 4] = labels[source]
    for s in range(round(28 * SCALES[0]), round(28 * SCALES[1]) + 1):
        sel = (sizes == s).nonzero().flatten()
        if len(sel) == 0:
            continue
        # Bilinear weights are non-negative and sum to 1, so values stay in [0, 255]: +0.5 and
        # truncation round them without a clamp.
        item = F.interpolate(images[source[sel], None].float(), size=(s, s), mode="bilinear",
                             antialias=True, align_corners=False)[:, 0].add_(0.5).to(torch.uint8)
        ar = torch.arange(s)
        offset = ar[:, None] * canvas_size + ar  # (s, s) flat offsets of an s×s window
        flat = corner[sel, None, None] + offset  # (G, s, s)
        canvas.scatter_reduce_(0, flat.flatten(), item.flatten(), "amax")  # max: order-independent
        boxes[sel, :4] = tight_boxes(item) + torch.stack([x0[sel], y0[sel]] * 2, 1)
    if clutter:
        paste_clutter(canvas, images, n, canvas_size, clutter, generator)
    targets = torch.zeros(n, len(CLASSES))
    targets[scene, boxes[:, 4]] = 1.0
    return {"images": canvas.view(n, 1, canvas_size, canvas_size), "targets": targets,
            "boxes": boxes, "counts": counts}


def paste_clutter(canvas: torch.Tensor, images: torch.Tensor, n: int, canvas_size: int, clutter: int,
                  generator: torch.Generator) -> None:
    """Paste ``clutter`` fragments per scene into the flat uint8 ``canvas`` (n·S·S) by max, all in
    one batch: FRAGMENT² crops of random ``images`` at random offsets, scaled by FRAGMENT_CONTRAST
    (rounded), at uniform positions entirely inside the canvas."""
    k = n * clutter
    scene = torch.arange(n).repeat_interleave(clutter)
    source = torch.randint(0, len(images), (k,), generator=generator)
    crop_y, crop_x = torch.randint(0, images.shape[-1] - FRAGMENT + 1, (2, k), generator=generator)
    y0, x0 = torch.randint(0, canvas_size - FRAGMENT + 1, (2, k), generator=generator)
    ar = torch.arange(FRAGMENT)
    fragments = images[source[:, None, None], (crop_y[:, None] + ar)[:, :, None], (crop_x[:, None] + ar)[:, None, :]]
    fragments = fragments.float().mul_(FRAGMENT_CONTRAST).add_(0.5).to(torch.uint8)  # (k, F, F)
    corner = (scene * canvas_size + y0) * canvas_size + x0
    flat = corner[:, None, None] + ar[:, None] * canvas_size + ar
    canvas.scatter_reduce_(0, flat.flatten(), fragments.flatten(), "amax")


def tight_boxes(items: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) int64 (G, 4) around the non-zero pixels of uint8 items (G, s, s), x1 and
    y1 exclusive; a blank item gets its whole square."""
    s = items.shape[-1]
    rows, cols = items.amax(2) > 0, items.amax(1) > 0  # (G, s) each
    blank = ~rows.any(1)
    box = torch.stack([first_true(cols), first_true(rows),
                       s - first_true(cols.flip(1)), s - first_true(rows.flip(1))], 1)
    return torch.where(blank[:, None], torch.tensor([0, 0, s, s]), box)


def first_true(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row of a bool (G, s) mask (0 for an all-False row)."""
    return mask.to(torch.uint8).argmax(1)


def read_sources(data_dir: str | Path | None) -> tuple[dict[str, torch.Tensor], str]:
    """Fashion-MNIST images (N, 28, 28) and labels of both splits, and a hash of their contents."""
    splits = read_splits(find_dir(data_dir))
    tensors = {}
    for part, split in splits.items():
        tensors[f"{part}_images"], tensors[f"{part}_labels"] = split.images[:, 0], split.targets
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(tensors):
        digest.update(tensors[key].numpy().tobytes())
    return tensors, digest.hexdigest()


def build_scenes(sources: dict[str, torch.Tensor], canvas_size: int, n_train: int, n_test: int,
                 scene_seed: int, items: tuple[int, int] = ITEMS, clutter: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Train and test scenes (``compose_scenes`` output per split) plus "stats": the train
    scenes' mean and std, tuples of one float."""
    out = {}
    for offset, (part, n) in enumerate((("train", n_train), ("test", n_test))):
        g = torch.Generator().manual_seed(2 * scene_seed + offset)  # distinct streams per split and seed
        out[part] = compose_scenes(sources[f"{part}_images"], sources[f"{part}_labels"], n, canvas_size, g, items,
                                   clutter)
    out["stats"] = dict(zip(("mean", "std"), channel_stats(out["train"]["images"])))
    return out


def cached_scenes(data_dir: str | Path | None, canvas_size: int, n_train: int, n_test: int,
                  scene_seed: int, items: tuple[int, int], clutter: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``build_scenes`` output, read from the cache when built before with the same key (clutter
    enters the key only when on, so scenes without it keep their cache files)."""
    sources, source_hash = read_sources(data_dir)
    params = {"version": VERSION, "canvas_size": canvas_size, "n_train": n_train, "n_test": n_test,
              "scene_seed": scene_seed, "items": list(items), "scales": SCALES, "source": source_hash}
    if clutter:
        params["clutter"] = [clutter, FRAGMENT, FRAGMENT_CONTRAST]
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_root() / "fashion-mnist-scenes" / f"scenes-{canvas_size}px-{key}.pt"
    if path.is_file():
        try:
            return read_torch_file(path, "scene cache")
        except ValueError:  # unreadable (e.g. a disk error or a cut write): rebuild over it
            pass
    scenes = build_scenes(sources, canvas_size, n_train, n_test, scene_seed, items, clutter)
    atomic_torch_save(scenes, path)
    return scenes


def load_fashion_mnist_scenes(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0,
                              canvas_size: int = 64, n_train: int = 60000, n_test: int = 10000,
                              scene_seed: int = 0, items: tuple[int, int] | list[int] = ITEMS,
                              clutter: int = 0) -> DatasetBundle:
    """Train (``n_train`` − ``val_size``) / val (``val_size``, seeded by ``seed``) / test
    (``n_test``) scenes of ``items[0]`` to ``items[1]`` items (and ``clutter`` fragments); uint8 (N, 1, canvas_size,
    canvas_size), float32 targets (N, 10) in {0, 1}; boxes in ``extras["boxes"]["train" | "val" |
    "test"]``. ``data_dir``: the Fashion-MNIST files."""
    if not CANVAS_SIZES[0] <= canvas_size <= CANVAS_SIZES[1]:
        raise ValueError(f"canvas_size must be in {CANVAS_SIZES[0]}..{CANVAS_SIZES[1]} (items are up to 42 px), "
                         f"got {canvas_size}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if (not isinstance(items, (list, tuple)) or len(items) != 2
            or not all(isinstance(v, int) for v in items) or not 1 <= items[0] <= items[1] <= MAX_ITEMS):
        raise ValueError(f"items must be [fewest, most] items per canvas with 1 <= fewest <= most <= {MAX_ITEMS}, "
                         f"e.g. [1, 4]; got {items}")
    if isinstance(clutter, bool) or not isinstance(clutter, int) or not 0 <= clutter <= MAX_CLUTTER:
        raise ValueError(f"clutter must be an integer in 0..{MAX_CLUTTER} (fragments per canvas; 0: none), "
                         f"got {clutter!r}")
    scenes = cached_scenes(data_dir, canvas_size, n_train, n_test, scene_seed, tuple(items), clutter)
    per_scene = {part: scenes[part]["boxes"].split(scenes[part]["counts"].tolist()) for part in ("train", "test")}
    # Split scene indices along with the images, so that targets and boxes follow the same permutation.
    train, val = split_train_val(Split(scenes["train"]["images"], torch.arange(n_train)), val_size, seed)
    boxes = {"train": [per_scene["train"][i] for i in train.targets.tolist()],
             "val": [per_scene["train"][i] for i in val.targets.tolist()],
             "test": list(per_scene["test"])}
    return DatasetBundle(
        "fashion-mnist-scenes",
        Split(train.images, scenes["train"]["targets"][train.targets]),
        Split(val.images, scenes["train"]["targets"][val.targets]),
        Split(scenes["test"]["images"], scenes["test"]["targets"]),
        CLASSES, scenes["stats"]["mean"], scenes["stats"]["std"], task="multilabel", extras={"boxes": boxes},
    )


def load_fashion_mnist_single_scenes(data_dir: str | Path | None = None, val_size: int = 5000, seed: int = 0,
                                     canvas_size: int = 64, n_train: int = 60000, n_test: int = 10000,
                                     scene_seed: int = 0, clutter: int = 0) -> DatasetBundle:
    """Single-label scenes: one item per canvas, int64 class targets (N,), its box in
    ``extras["boxes"][split]`` (one (1, 5) tensor per image), otherwise as ``load_fashion_mnist_scenes``."""
    bundle = load_fashion_mnist_scenes(data_dir, val_size, seed, canvas_size, n_train, n_test, scene_seed, (1, 1),
                                       clutter)
    for split in (bundle.train, bundle.val, bundle.test):
        split.targets = split.targets.argmax(1)  # the one class present
    bundle.name, bundle.task = "fashion-mnist-scenes-single", "single"
    return bundle
