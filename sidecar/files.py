"""File operations that more than one part of the sidecar's state needs."""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(path: Path, data: bytes) -> None:
    """Write data to path through a temporary file renamed over it, so a reader sees
    the old content or all of the new, never part. Not fsynced: after a crash of the
    machine either may be there."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries durable: files created, renamed or deleted in it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
