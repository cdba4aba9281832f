"""Batches of a split, from memory or streamed from image files, with batched augmentation.

One epoch is a seeded permutation cut into batches. A ``Split`` (in memory) is indexed batch by
batch: per-sample Python transforms through worker processes would cost more than the model on
2 CPU cores. A ``FileSplit`` (streamed) hands the same batches of indices to a
``torch.utils.data.DataLoader`` whose ``workers`` processes decode and squish the files
(``images.decode_image``) into uint8 batches, a few batches ahead (``PREFETCH`` per worker), so
memory holds a bounded number of images however large the dataset. Either way the uint8 batch
is then augmented as a whole (``augment.Augmentation``) on the device, in the main process.

Determinism: the order and augmentation of epoch ``e`` depend only on (seed, e, rank), so a run
resumed at an epoch boundary sees exactly the batches an uninterrupted run would, and a streamed
split gives the same samples as the same images held in memory (the decoders are the same).
Resume is at epoch boundaries: the trainer checkpoints once per epoch.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import Augmentation
from .base import FileSplit, Split
from .images import decode_batch
from .shards import ShardBatches, ShardSplit, shard_assignment, steps_per_rank

PREFETCH = 2  # batches each streaming worker decodes ahead


class DecodedBatches(torch.utils.data.Dataset):
    """A ``FileSplit`` as a map-style dataset over batches: ``[indices]`` decodes those files into
    (uint8 (B, C, H, W), targets (B, ...)). Runs in the DataLoader's worker processes."""

    def __init__(self, split: FileSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.split
        return decode_batch([s.files[i] for i in indices], s.mode, s.size), s.targets[indices]


class BatchLoader:
    """Iterates (images, targets) batches of a :class:`Split`, a :class:`FileSplit` or a
    :class:`ShardSplit` (``shards``: its own order and split over ranks and workers).

    images come out as float32 (B, C, H, W), scaled to [0, 1] and normalised by mean/std;
    targets as stored. ``augment`` is applied to training batches (None: none). With
    ``world_size > 1`` each rank takes an equal, disjoint share of the epoch's permutation in whole
    batches (the remainder is dropped when training, which also keeps ranks in step). ``workers``:
    decoding processes of a streamed split (0: decode in this process).
    """

    def __init__(
        self,
        split: Split | FileSplit | ShardSplit,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        augment: Augmentation | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        workers: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.split = split
        if isinstance(split, Split):  # a streamed split's targets travel with its decoded batches
            self.images = split.images.to(self.device)
            self.targets = split.targets.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment
        self.workers = workers
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        """This rank's sample indices for the epoch. Training keeps whole batches only: a last batch
        of one image would break batch statistics (BatchNorm, BAM's BatchNorm1d)."""
        n = len(self.split)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
            per_rank = n // self.world_size // self.batch_size * self.batch_size
            return order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return torch.arange(self.rank, n, self.world_size)

    def __len__(self) -> int:
        if isinstance(self.split, ShardSplit) and self.train:
            return steps_per_rank(self.split, self.batch_size, self.seed, self.epoch, self.world_size,
                                  max(self.workers, 1))
        return -(-len(self._indices()) // self.batch_size)

    def uint8_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches before augmentation: uint8 (B, C, H, W) and targets, on the device."""
        if isinstance(self.split, ShardSplit):
            yield from self._shard_batches()
            return
        batches = self._indices().split(self.batch_size)
        if isinstance(self.split, Split):
            for batch in batches:
                batch = batch.to(self.device)
                yield self.images[batch], self.targets[batch]
            return
        yield from self._decoded(DecodedBatches(self.split), sampler=[b.tolist() for b in batches])

    def _decoded(self, batches: torch.utils.data.Dataset,
                 sampler: list | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The uint8 batches a dataset of batches decodes in ``workers`` processes (``PREFETCH`` each
        ahead), moved to the device."""
        loader = torch.utils.data.DataLoader(batches, sampler=sampler, batch_size=None, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda",
                                             **({"prefetch_factor": PREFETCH} if self.workers else {}))
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _shard_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps = len(self)  # training: the same on every rank, so ranks stay in step
        shards = (shard_assignment(self.split, self.seed, self.epoch, self.world_size, max(self.workers, 1))[self.rank]
                  if self.train else None)
        batches = ShardBatches(self.split, self.batch_size, (self.seed * 1_000_003 + self.epoch) * 64 + self.rank,
                               shards, self.rank, self.world_size)
        for step, batch in enumerate(self._decoded(batches)):
            if step == steps:
                return
            yield batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 64 + self.rank + 1)
        for x, y in self.uint8_batches():
            x = self.augment(x, g) if self.train and self.augment is not None else x.float()
            yield ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format), y


def first_images(split: Split | FileSplit | ShardSplit, count: int) -> Split:
    """The first ``count`` images of a split, in its order, held in memory: the few images an
    explanation, a report's gallery or an export check needs, whichever path the split streams from."""
    count = min(count, len(split))
    if isinstance(split, Split):
        return split.subset(torch.arange(count))
    if isinstance(split, FileSplit):
        return split.subset(torch.arange(count)).load()
    images, targets = [], []
    for x, y in BatchLoader(split, count, (0.0,), (1.0,), train=False).uint8_batches():
        images.append(x)
        targets.append(y)
        if sum(map(len, images)) >= count:
            break
    return Split(torch.cat(images)[:count], torch.cat(targets)[:count])
