"""Loading torchvision-format weight files into attnvision models."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def load_weights(model: nn.Module, path: str | Path) -> dict:
    raise NotImplementedError("being written")
