"""WebDataset tar shards of a dataset: written once (``attnvision shard``), streamed by
``loader.BatchLoader`` as a ``ShardSplit`` (``--data-dir`` the shards folder).

A shards folder::

    attnvision-shards.json     the manifest (``MANIFEST``): dataset, task, class names, mean/std, image
                               size and mode, the options the splits were made with, and per split its
                               shard files and their sample counts
    train-00000.tar, …         ``shard_size`` samples each, in the WebDataset layout: per sample
    val-00000.tar, …           ``<key>.<ext>`` the image (an image file's bytes as they were on disk,
    test-00000.tar, …          or squished to the training size with ``resize``; PNG for a dataset held
                               in memory) and ``<key>.json`` {"target": …}

Shards hold the splits as made at shard time (validation carved with the given split seed,
difficult-object policies applied); the images keep their own size and are squished to the
training size as they are decoded, by the same decoder as the file path (``images.decode_image``).
Any URL ``webdataset`` opens (``pipe:``, ``http(s)://``, …) works in place of the local files by
editing the manifest's shard names.

Streaming (``shard_batches``): in epoch e, rank r of w takes the shards of a seeded permutation
at positions r, r + w, …, and each of its DataLoader workers every ``workers``-th of those; a
worker shuffles its samples through a seeded buffer of ``SHUFFLE_BUFFER`` and yields whole
batches. So ranks read disjoint shards and, together, every shard each epoch; every rank runs the
same number of steps (the smallest rank's count of whole batches; the rest of the epoch is
dropped, as the in-memory path drops its remainder). The training order differs from the
in-memory path's (whole shards move, not samples); the augmentation is the same recipe.
Validation and test give every sample once, in the in-memory path's order (``ShardBatches``).
Resume is at epoch boundaries.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from ..checkpoint import atomic_write_text
from .base import DatasetBundle, DecodedOnDraw, FileSplit, Split

MANIFEST = "attnvision-shards.json"
SPLITS = ("train", "val", "test")
SHUFFLE_BUFFER = 1000  # samples a worker shuffles among
RESIZED_JPEG_QUALITY = 95  # ``shard --resize``: JPEG files squished to the training size are saved again at this


@dataclass
class ShardSplit(DecodedOnDraw):
    """One split as WebDataset shards: ``urls`` (paths or URLs) with ``counts`` samples each,
    squished to ``size`` (H, W) in ``mode`` when decoded; ``task`` gives the targets' dtype."""

    urls: list[str]
    counts: list[int]
    size: tuple[int, int]
    mode: str
    task: str

    def __len__(self) -> int:
        return sum(self.counts)

    def subset(self, index: torch.Tensor) -> "ShardSplit":
        raise ValueError("shards are read whole and in order: a subset of their samples (--train-subset) needs the "
                         "dataset's own files: pass --data-dir with them, or write shards of the subset "
                         "(attnvision shard --data-kw, --val-size)")


# ---------------------------------------------------------------- writing


def _samples(split: Split | FileSplit, resize: bool) -> Iterator[tuple[str, bytes]]:
    """(extension, image bytes) of each sample: a file's own bytes, or, with ``resize``, the image
    squished to the split's size and encoded again (JPEG at ``RESIZED_JPEG_QUALITY`` for JPEG
    files, PNG otherwise); PNG of an in-memory image."""
    from .images import decode_image

    for i in range(len(split)):
        if isinstance(split, FileSplit) and not resize:
            path = split.files[i]
            yield path.suffix.lower().lstrip(".") or "img", path.read_bytes()
            continue
        if isinstance(split, FileSplit):
            array = decode_image(split.files[i], split.mode, split.size)
            jpeg = split.files[i].suffix.lower() in (".jpg", ".jpeg")
        else:
            array, jpeg = split.images[i].permute(1, 2, 0).numpy(), False
        buffer = io.BytesIO()
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        image.save(buffer, format="JPEG", quality=RESIZED_JPEG_QUALITY) if jpeg else image.save(buffer, format="PNG")
        yield "jpg" if jpeg else "png", buffer.getvalue()


def write_split(split: Split | FileSplit, out: Path, name: str, shard_size: int, resize: bool) -> dict:
    """Write ``split`` as ``<name>-NNNNN.tar`` shards of ``shard_size`` samples into ``out``
    (``resize``: see ``_samples``); returns its manifest entry {"shards": [file names], "counts":
    [samples each]}."""
    import webdataset as wds

    shards, counts, writer = [], [], None
    try:
        for i, ((ext, data), target) in enumerate(zip(_samples(split, resize), split.targets.tolist())):
            if i % shard_size == 0:
                if writer is not None:
                    writer.close()
                shards.append(f"{name}-{len(shards):05d}.tar")
                counts.append(0)
                writer = wds.TarWriter(str(out / shards[-1]))
            writer.write({"__key__": f"{i:09d}", ext: data, "json": {"target": target}})
            counts[-1] += 1
    finally:
        if writer is not None:
            writer.close()
    return {"shards": shards, "counts": counts}


def write_shards(bundle: DatasetBundle, out: str | Path, shard_size: int, options: dict, resize: bool = False) -> dict:
    """Write every split of ``bundle`` and, last, the manifest (so a folder with a manifest holds
    complete shards). ``options``: what the splits were made with (data options, val_size,
    split_seed), recorded so that reading them with other options is refused. ``resize``: store
    the images squished to the training size (smaller shards, a cheaper decode; one more JPEG
    generation for JPEG files) instead of the files' own bytes."""
    out = Path(out)
    if (out / MANIFEST).exists():
        raise ValueError(f"{out} holds shards already ({MANIFEST}); pick another --out or delete it")
    if shard_size < 1:
        raise ValueError(f"shard size must be a positive number of samples, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    split = bundle.train
    manifest = {
        "dataset": bundle.name, "task": bundle.task, "class_names": bundle.class_names, "mean": list(bundle.mean),
        "std": list(bundle.std), "img_size": list(split.img_size), "mode": "L" if split.in_chans == 1 else "RGB",
        "options": options, "resized": resize,
        "splits": {name: write_split(getattr(bundle, name), out, name, shard_size, resize) for name in SPLITS},
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------- reading


def holds_shards(data_dir: str | Path | None) -> bool:
    return data_dir is not None and (Path(data_dir) / MANIFEST).is_file()


def load_shards(name: str, data_dir: str | Path, seed: int, stream: bool | None, **options) -> DatasetBundle:
    """The dataset ``name`` from the shards folder ``data_dir``. ``img_size`` may differ from the
    one the shards were written with (images are squished as they are decoded); every other
    option, the validation size and the split ``seed`` must be those the splits were made with."""
    folder = Path(data_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        made_with = {**manifest["options"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{folder / MANIFEST} is not a shards manifest ({e}); write the shards again with "
                         "attnvision shard") from None
    if manifest["dataset"] != name:
        raise ValueError(f"{folder} holds shards of '{manifest['dataset']}', not '{name}': pass --data "
                         f"{manifest['dataset']} or the shards of {name}")
    if stream is False:
        raise ValueError(f"{folder} holds shards, which are always streamed: drop --no-stream")
    size = options.pop("img_size", manifest["img_size"])
    asked = {**options, "split_seed": seed}
    differ = {k: (v, made_with.get(k)) for k, v in asked.items() if v is not None and v != made_with.get(k)}
    if differ:
        listed = ", ".join(f"{k} {v!r} (shards: {w!r})" for k, (v, w) in differ.items())
        raise ValueError(f"{folder} was written with other options: {listed}; the splits are made when sharding, "
                         "so write shards with these options (attnvision shard) or drop them")
    size = (size, size) if isinstance(size, int) else tuple(size)
    splits = {part: ShardSplit([s if "://" in s or s.startswith("pipe:") else str(folder / s) for s in entry["shards"]],
                               entry["counts"], size, manifest["mode"], manifest["task"])
              for part, entry in manifest["splits"].items()}
    return DatasetBundle(name, splits["train"], splits["val"], splits["test"], manifest["class_names"],
                         tuple(manifest["mean"]), tuple(manifest["std"]), task=manifest["task"])


def shard_assignment(split: ShardSplit, seed: int, epoch: int, world_size: int, workers: int) -> list[list[list[int]]]:
    """[rank][worker] → the shard indices it trains on this epoch (see the module docstring)."""
    order = torch.randperm(len(split.urls), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    ranks = [order[r::world_size] for r in range(world_size)]
    return [[shards[w::workers] for w in range(workers)] for shards in ranks]


def steps_per_rank(split: ShardSplit, batch_size: int, seed: int, epoch: int, world_size: int, workers: int) -> int:
    """Training batches every rank runs this epoch: the fewest whole batches any rank's workers hold."""
    per_rank = [sum(sum(split.counts[i] for i in shards) // batch_size for shards in rank)
                for rank in shard_assignment(split, seed, epoch, world_size, workers)]
    if min(per_rank) == 0:
        raise ValueError(f"{len(split.urls)} shards of {max(split.counts)} samples leave a rank without a whole batch "
                         f"of {batch_size} with {world_size} rank(s) × {workers} worker(s): write smaller shards "
                         "(attnvision shard --shard-size), or use fewer workers")
    return min(per_rank)


class ShardBatches(torch.utils.data.IterableDataset):
    """One rank's uint8 batches of a ``ShardSplit`` for one epoch, decoded in DataLoader workers.

    Training (``shards``: the shards of each worker, ``shard_assignment``): each worker reads its
    own shards through a seeded shuffle buffer and yields whole batches. Evaluation (``shards``
    None): the samples of every shard in split order, rank r of w keeping samples r, r + w, … (the
    in-memory path's share) and worker k of n decoding batches k, k + n, … of them, which the
    DataLoader's round-robin over workers puts back in order: predictions come in the order of
    the in-memory path, at the cost of each worker reading (not decoding) every shard."""

    def __init__(self, split: ShardSplit, batch_size: int, seed: int, shards: list[list[int]] | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        self.split, self.batch_size, self.seed, self.shards = split, batch_size, seed, shards
        self.rank, self.world_size = rank, world_size

    def samples(self, shards: list[int]) -> Iterator[tuple[bytes, object]]:
        """(image bytes, target) of the shards, in order."""
        import webdataset as wds

        if not shards:
            return
        reader = wds.WebDataset([self.split.urls[i] for i in shards], shardshuffle=False, nodesplitter=None,
                                workersplitter=None, empty_check=False)  # the shards are split here already
        for sample in reader:
            image = next(v for k, v in sample.items() if not k.startswith("_") and k != "json")
            yield image, json.loads(sample["json"])["target"]

    def shuffled(self, items: Iterator, rng: random.Random) -> Iterator:
        """``items`` through a shuffle buffer of ``SHUFFLE_BUFFER``."""
        buffer = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= SHUFFLE_BUFFER:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def batch(self, items: list[tuple[bytes, object]]) -> tuple[torch.Tensor, torch.Tensor]:
        from .images import decode_batch

        targets = torch.tensor([t for _, t in items], dtype=torch.int64 if self.split.task == "single" else torch.float32)
        return decode_batch([io.BytesIO(data) for data, _ in items], self.split.mode, self.split.size), targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.shards is not None:
            items = self.shuffled(self.samples(self.shards[worker]), random.Random(self.seed * 64 + worker))
            chunk = []
            for item in items:
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    yield self.batch(chunk)
                    chunk = []
            return
        mine = (item for i, item in enumerate(self.samples(list(range(len(self.split.urls)))))
                if i % self.world_size == self.rank)
        chunk, number = [], 0
        for item in mine:
            chunk.append(item)
            if len(chunk) == self.batch_size:
                if number % workers == worker:
                    yield self.batch(chunk)
                chunk, number = [], number + 1
        if chunk and number % workers == worker:
            yield self.batch(chunk)
