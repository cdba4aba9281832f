"""attnvision checkpoints: atomic writes and loads that report bad files clearly.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "attnvision-checkpoint", "version": 1, "config": {...}, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "epoch": completed epochs, "best": {...},
     "history": [...], "rng": torch RNG state, "dataset": {...}}

Only tensors, numbers, strings, lists and dicts: it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "attnvision-checkpoint"
VERSION = 1


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically: a crash mid-write never leaves a half file there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write an attnvision checkpoint atomically."""
    atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)


def read_torch_file(path: str | Path, kind: str, map_location: str | torch.device = "cpu"):
    """``torch.load(weights_only=True)`` that reports a missing or unreadable file clearly.
    ``kind`` names what was expected ("checkpoint", "weight file") in the messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # garbage bytes surface as KeyError, EOFError, RuntimeError, UnpicklingError, …
        # torch's weights-only message opens with advice to disable it; keep only the actual cause
        cause = str(e).split("WeightsUnpickler error:")[-1]
        detail = [line.strip() for line in cause.splitlines() if line.strip()]
        reason = f"{type(e).__name__}: {detail[0] if detail else 'no details'}"
        raise ValueError(
            f"{path} is not a readable PyTorch {kind} (corrupt, truncated, another format, or holding "
            f"objects other than tensors and plain containers) [{reason}]"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load an attnvision checkpoint, raising a clear error for missing, corrupt or foreign files."""
    state = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not an attnvision checkpoint (found {keys}); for torchvision-format weight "
            "files use attnvision.load_weights(model, path)"
        )
    if state.get("version", 0) > VERSION:
        raise ValueError(f"{path} was written by a newer attnvision (format version {state['version']} > {VERSION})")
    return state
