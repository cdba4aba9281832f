"""A run folder: the names of its files (the one place they are spelled), and owning one: create it
(with clear errors), lock it against a second run, clean up what a killed run left behind.

    config.yaml          the run's TrainConfig                    CONFIG
    log.csv              one row per finished epoch               LOG
    last.pt, best.pt     checkpoints: every epoch, best validation LAST, BEST
    metrics.json         written when the run has finished        METRICS
    test_predictions.pt  test logits (float16) and targets        PREDICTIONS
    tb/                  TensorBoard events                       TENSORBOARD
    .lock                held while a run lasts                   LOCK_NAME

The lock is ``<run>/.lock``, held with ``flock`` for as long as the run lasts and holding
"<pid> <host>" of its owner for the error message. The kernel drops a ``flock`` when its process
dies, however it dies, so a lock left by a killed run is simply taken over: no stale-lock guessing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

CONFIG = "config.yaml"
LOG = "log.csv"
LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.json"
PREDICTIONS = "test_predictions.pt"
TENSORBOARD = "tb"
LOCK_NAME = ".lock"


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds a started run (a checkpoint or final metrics)."""
    return (out / LAST).is_file() or (out / METRICS).is_file()


def make_run_folder(out: Path) -> None:
    """``mkdir -p out``, turning the usual failures into one-line reasons and fixes."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"run folder {out} is an existing file, not a folder: pick another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot create run folder {out}: a part of that path is a file, not a folder; "
                         "pick another --out") from None
    except OSError as e:
        raise ValueError(f"cannot create run folder {out}: {e.strerror}; pick an --out on a writable "
                         "file system") from None


class RunLock:
    """An exclusive lock on a run folder, released by ``release()`` or by the process's death."""

    def __init__(self, out: Path) -> None:
        path = out / LOCK_NAME
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"cannot write in run folder {out}: {e.strerror}; pick an --out on a writable "
                             "file system") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(self.fd, 200, 0).decode(errors="replace").split()
            os.close(self.fd)
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise ValueError(f"cannot lock run folder {out} ({path}): {e.strerror}") from None
            pid, host = (owner + ["?", "?"])[:2]
            raise ValueError(f"run folder {out} is in use by another run (process {pid} on host {host}, "
                             f"lock {path}): wait for it to finish, stop it, or pick another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        # the file stays: unlinking it would let a process that opened it just before lock a dead inode
        os.ftruncate(self.fd, 0)
        os.close(self.fd)


def remove_temp_files(out: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files atomic writes leave when killed mid-write; only call with
    the folder locked (a live writer's temporary file looks the same). Returns what was removed."""
    stale = sorted(out.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
