"""attnvision checkpoints: atomic writes and loads that report bad files clearly.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "attnvision-checkpoint", "version": 1, "config": {...}, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "epoch": completed epochs, "best": {...},
     "history": [...], "rng": torch RNG state, "dataset": {...}}

Only tensors, numbers, strings, lists and dicts: it loads with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

FORMAT = "attnvision-checkpoint"
VERSION = 1


class DiskFullError(OSError):
    """A write ran out of space; the message names the file, the space needed and what was kept."""


class DamagedFileError(ValueError):
    """A file that is there but does not parse (cut short by a crash mid-write, edited by hand);
    the message names it."""


def _atomic_write(path: str | Path, write) -> None:
    """Write ``path`` atomically and durably: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced, renamed over ``path`` (``os.replace``), and then the folder is fsynced so the
    rename itself survives a power cut. A crash mid-write never leaves a half file at ``path``; a
    full disk raises DiskFullError and leaves the previous ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except Exception as e:
        if not _out_of_space(e):
            raise
        raise DiskFullError(_disk_full_message(path, Path(tmp))) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _out_of_space(e: BaseException | None) -> bool:
    """Whether ``e`` or an exception it was raised while handling is ENOSPC / EDQUOT (torch.save's
    zip writer answers a full disk with a RuntimeError of its own, raised while handling the OSError)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__context__
    return False


def _disk_full_message(path: Path, tmp: Path) -> str:
    written = tmp.stat().st_size if tmp.exists() else 0
    previous = path.stat().st_size if path.exists() else 0
    free = shutil.disk_usage(path.parent).free
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    return (f"disk full while writing {path}: it needs at least {max(written, previous) / 1e6:.1f} MB and "
            f"{free / 1e6:.1f} MB are free on that file system; {kept}. Free space there (old run folders, "
            "caches) or write to another folder, then run again (a run resumes with --resume).")


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (see ``_atomic_write``)."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (see ``_atomic_write``)."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a binary file atomically (see ``_atomic_write``)."""
    _atomic_write(path, lambda f: f.write(data))


def read_json(path: str | Path):
    """The parsed JSON file at ``path``; None when there is no such file; DamagedFileError naming
    the file when it does not parse."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedFileError(f"{path} is damaged (not valid JSON: {e})") from None


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
