"""Training augmentation of whole batches on the device they are on: the recipes of ``--augment``.

``Augmentation(recipe, ...)(x, generator)`` takes a uint8 batch (B, C, H, W) and returns float32
(B, C, H, W) pixel values in [0, 255]. Every random draw comes from ``generator`` (kornia's
operations draw from torch's global generator, so each kornia stage runs under
``torch.random.fork_rng`` seeded from ``generator``): the samples of a batch depend only on the
loader's (seed, epoch, rank) and the batch's place in the epoch, whichever path (in memory or
streamed) produced the uint8 batch, and a run resumed at an epoch boundary sees the same samples.

Recipes (a recipe's own stage first, then the options every recipe shares: ``crop_pad``
pad-and-crop, ``hflip`` mirror with probability 1/2, ``erase_prob`` Random Erasing):

- ``basic``: nothing more; today's fast recipe for small images (pad 2 + crop, flip).
- ``csra``: random resized crop, area scale U(0.7, 1) and aspect ratio in (3/4, 4/3) (log-uniform),
  resized back to the batch's size with bilinear interpolation (CSRA's ``main.py``: flip, then
  ``RandomResizedCrop(scale=(0.7, 1.0))``, then the squish resize). Deviation: the crop is drawn
  from the image already squished to the training size, not from the original; the area share is
  the same, the aspect ratio of the crop is measured on the squished image.
- ``q2l``: Cutout with factor 1/2, then RandAugment (ASL's and Query2Label's COCO recipe:
  ``Resize``, ``CutoutPIL(cutout_factor=0.5)``, ``RandAugment()``; no flip, so pass
  ``--no-hflip`` for theirs). Cutout (DeVries & Taylor 2017, as ASL implements it): one
  rectangle of ½H × ½W centred at a uniform pixel, clipped to the image, filled with one random
  colour, on every image. RandAugment (Cubuk et al. 2020): N = 2 operations drawn from kornia's
  default policy at magnitude M = 9 of 10 (kornia's m = 27 of 30), their ImageNet setting.
  Deviation: kornia's policy and magnitude mapping, not ASL's own RandAugment code.

Colour jitter is in no recipe: neither paper trains with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RECIPES = ("basic", "csra", "q2l")
CSRA_SCALE = (0.7, 1.0)  # random resized crop: share of the image area
CSRA_RATIO = (3 / 4, 4 / 3)  # and aspect ratio (width / height)
CUTOUT_FACTOR = 0.5  # Cutout's rectangle: this share of the height and of the width
RANDAUGMENT_N, RANDAUGMENT_M = 2, 27  # kornia's magnitude scale is 0–30: 27 is the paper's 9 of 10
ERASE_AREA = (0.02, 0.4)  # Random Erasing's s_l, s_h: the rectangle's share of the image area
ERASE_ASPECT = (0.3, 1 / 0.3)  # its r_1, 1/r_1: height / width


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


def box_mask(top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
             h: int, w: int) -> torch.Tensor:
    """bool (B, H, W): True inside each image's rectangle [top, top + height) × [left, left + width)."""
    rows, cols = torch.arange(h), torch.arange(w)
    return (((rows >= top[:, None]) & (rows < (top + height)[:, None]))[:, :, None]
            & ((cols >= left[:, None]) & (cols < (left + width)[:, None]))[:, None, :])


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
    inside = box_mask(top, left, height, width, h, w) & erase[:, None, None]
    noise = torch.rand(b, c, h, w, generator=generator).to(x.device) * 255
    return torch.where(inside.to(x.device)[:, None], noise, x)


def cutout(x: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Cutout as ASL's ``CutoutPIL``: on every image of x float (B, C, H, W) in [0, 255], a
    rectangle of round(factor·H) × round(factor·W) centred at a uniform pixel, clipped to the
    image, filled with one uniform random colour (integers 0–255 per channel)."""
    b, c, h, w = x.shape
    half_h, half_w = int(factor * h + 0.5) // 2, int(factor * w + 0.5) // 2
    cy = torch.randint(0, h, (b,), generator=generator)
    cx = torch.randint(0, w, (b,), generator=generator)
    top, left = (cy - half_h).clamp(0, h), (cx - half_w).clamp(0, w)
    inside = box_mask(top, left, (cy + half_h).clamp(0, h) - top, (cx + half_w).clamp(0, w) - left, h, w)
    colour = torch.randint(0, 256, (b, c, 1, 1), generator=generator).float().to(x.device)
    return torch.where(inside.to(x.device)[:, None], colour, x)


def seeded(stage, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Run a kornia ``stage`` on x with torch's global generator seeded from ``generator`` (and
    restored afterwards), so that its draws are a function of the loader's generator alone."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return stage(x)


class Augmentation:
    """A recipe's batched augmentation: uint8 (B, C, H, W) → float32 (B, C, H, W) in [0, 255]."""

    def __init__(self, recipe: str = "basic", crop_pad: int = 0, hflip: bool = False, erase_prob: float = 0.0,
                 size: tuple[int, int] | None = None) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown augmentation recipe '{recipe}'; valid: {', '.join(RECIPES)}")
        self.recipe, self.crop_pad, self.hflip, self.erase_prob = recipe, crop_pad, hflip, erase_prob
        self.stage = None
        if recipe == "csra":
            from kornia.augmentation import RandomResizedCrop

            if size is None:
                raise ValueError("the csra recipe's random resized crop needs the image size")
            self.stage = RandomResizedCrop(tuple(size), scale=CSRA_SCALE, ratio=CSRA_RATIO)
        elif recipe == "q2l":
            from kornia.augmentation.auto import RandAugment

            randaugment = RandAugment(n=RANDAUGMENT_N, m=RANDAUGMENT_M)
            self.stage = lambda x: randaugment(x / 255).clamp(0, 1) * 255

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.stage is not None:
            x = x.float()
            if self.recipe == "q2l":
                x = cutout(x, CUTOUT_FACTOR, generator)
            x = seeded(self.stage, x, generator)
        if self.crop_pad:  # on uint8 in the basic recipe: the cheap order of today's in-memory path
            x = random_crop(x, self.crop_pad, generator)
        if self.hflip:
            x = random_hflip(x, generator)
        x = x.float()
        if self.erase_prob:
            x = random_erase(x, self.erase_prob, generator)
        return x
