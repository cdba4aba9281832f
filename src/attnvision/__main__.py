"""``python -m attnvision``: the same commands as ``attnvision``."""

from .cli import main

main()
