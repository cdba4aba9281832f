"""Where dataset files come from: the folders every reader searches, and a verified download.

Search order: a ``data_dir`` argument alone, when given (a folder the user names is never
silently replaced by another copy); otherwise ``$ATTNVISION_DATA``, then the reader's own system
folders and the cache (``$ATTNVISION_CACHE``, default ``~/.cache/attnvision``), the only place a
download writes to.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path


def cache_root() -> Path:
    """``$ATTNVISION_CACHE`` or ``~/.cache/attnvision``."""
    return Path(os.environ.get("ATTNVISION_CACHE") or Path.home() / ".cache" / "attnvision")


def search_dirs(data_dir: str | Path | None, *fallbacks: Path) -> list[Path]:
    """The folders a reader searches: ``[data_dir]`` when given, else ``$ATTNVISION_DATA`` (when
    set) followed by ``fallbacks`` (the reader's system folders and the cache). A named path that
    does not exist is an error."""
    if data_dir is not None:
        named, what = data_dir, "data_dir (--data-dir)"
    else:
        named, what = os.environ.get("ATTNVISION_DATA"), "$ATTNVISION_DATA"
    if not named:
        return list(fallbacks)
    path = Path(named).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; fix the path, or leave it out to use the "
                                "system and cache folders")
    return [path] if data_dir is not None else [path, *fallbacks]


def inside(root: Path, name: str, where: str) -> Path:
    """``root / name``, refused when ``name`` (read from an annotation file) leads outside ``root``
    with ``..`` or an absolute path. Checked on the normalised path, not the resolved one, so a
    dataset whose folders are symlinks to other disks still loads."""
    path = root / name
    if os.path.commonpath([os.path.normpath(path), os.path.normpath(root)]) != os.path.normpath(root):
        raise ValueError(f"{where}: '{name}' points outside {root}; annotation files may only name files "
                         "inside the dataset folder: replace it with the official file")
    return path


def fetch(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and check its MD5.

    The bytes go to a temporary file in ``dest``'s folder, which replaces ``dest`` (os.replace,
    atomic on one file system) only once the checksum matches, so an interrupted or corrupt
    download never leaves a file that a later search would take for the real one.

    Raises ConnectionError when the URL cannot be read, ValueError on a checksum mismatch.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts
                raise ConnectionError(f"cannot download {url}: {e}") from None
            with response:
                while chunk := _read(response, url):
                    out.write(chunk)  # a full disk raises its own OSError, not a ConnectionError
                    digest.update(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(f"{url} has MD5 {digest.hexdigest()}, expected {md5}: the download is "
                             "corrupt or the server's file changed; nothing was saved")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _read(response, url: str, size: int = 1 << 20) -> bytes:
    try:
        return response.read(size)
    except (OSError, http.client.HTTPException) as e:  # connection cut mid-file
        raise ConnectionError(f"download of {url} broke off: {e}") from None
