"""Batches from in-memory tensors with batched augmentation.

Why not ``torch.utils.data.DataLoader``: every dataset we train on fits in memory as a uint8
tensor, and per-sample Python transforms through worker processes cost more than the model on
2 CPU cores. Here one epoch is a seeded permutation, and augmentation is a handful of tensor ops
on the whole batch, on the device the data lives on.

Determinism: the order and augmentation of epoch ``e`` depend only on (seed, e, rank), so a run
resumed at an epoch boundary sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .base import Split


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by ``pad`` and crop back to its size at a random offset.
    x: (B, C, H, W), any dtype → same shape. One gather, no per-sample loop."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. x: (B, C, H, W)."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


ERASE_AREA = (0.02, 0.4)  # Random Erasing's s_l, s_h: the rectangle's share of the image area
ERASE_ASPECT = (0.3, 1 / 0.3)  # its r_1, 1/r_1: height / width


def random_erase(x: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Random Erasing (Zhong et al., AAAI 2020, Algorithm 1) on a batch x float (B, C, H, W) of
    pixel values in [0, 255]: with probability ``prob`` an image gets one rectangle of area
    S_e ~ U(0.02, 0.4)·H·W and aspect ratio r_e ~ U(0.3, 1/0.3) (height/width) at a uniform position,
    filled with uniform random values in [0, 255]. Deviation: the paper re-draws a rectangle that
    does not fit in the image; here its sides are clipped to the image's."""
    b, c, h, w = x.shape
    erase = torch.rand(b, generator=generator) < prob
    area = torch.empty(b).uniform_(*ERASE_AREA, generator=generator) * h * w
    aspect = torch.empty(b).uniform_(*ERASE_ASPECT, generator=generator)
    height = (area * aspect).sqrt().round().clamp(1, h)
    width = (area / aspect).sqrt().round().clamp(1, w)
    top = (torch.rand(b, generator=generator) * (h - height + 1)).floor()
    left = (torch.rand(b, generator=generator) * (w - width + 1)).floor()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= top[:, None]) & (rows < (top + height)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + width)[:, None]))[:, None, :] & erase[:, None, None])
    noise = torch.rand(b, c, h, w, generator=generator).to(x.device) * 255
    return torch.where(inside.to(x.device)[:, None], noise, x)


class TensorLoader:
    """Iterates (images, targets) batches of a :class:`Split`.

    images come out as float32 (B, C, H, W), scaled to [0, 1] and normalised by mean/std;
    targets as stored. With ``world_size > 1`` each rank takes an equal, disjoint share of the
    epoch's permutation in whole batches (the remainder is dropped when training, which also keeps
    ranks in step).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        crop_pad: int = 0,
        hflip: bool = False,
        erase_prob: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.targets = split.targets.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.crop_pad = crop_pad
        self.hflip = hflip
        self.erase_prob = erase_prob
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
        n = len(self.images)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
            per_rank = n // self.world_size // self.batch_size * self.batch_size
            return order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return torch.arange(self.rank, n, self.world_size)

    def __len__(self) -> int:
        return -(-len(self._indices()) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self._indices().to(self.device)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 64 + self.rank + 1)
        for start in range(0, len(index), self.batch_size):
            batch = index[start:start + self.batch_size]
            x = self.images[batch]
            if self.train and self.crop_pad:
                x = random_crop(x, self.crop_pad, g)
            if self.train and self.hflip:
                x = random_hflip(x, g)
            x = x.float()
            if self.train and self.erase_prob:
                x = random_erase(x, self.erase_prob, g)
            x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
            yield x, self.targets[batch]
