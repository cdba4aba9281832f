"""Checks shared by every backbone."""

from __future__ import annotations

import torch


def check_input(x: torch.Tensor, in_chans: int) -> None:
    """Raise a clear error when ``x`` is not a (B, in_chans, H, W) batch."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"model expects input (B, {in_chans}, H, W) but got {tuple(x.shape)}: "
            f"build it with in_chans={x.shape[1] if x.ndim == 4 else '?'} or convert the images"
        )
