"""Writing files so that an interrupted run never leaves half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write a temporary file beside `path`, then rename it over `path` (atomic on one filesystem).

    The temporary name is unique, so two writers of one file never write into each other's
    temporary file (the last rename wins, whole); the data is on disk before the rename, so
    a crash leaves the old file or the new one, never an empty one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content if isinstance(content, bytes) else content.encode()
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp's 0600 would hide the file
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def is_temporary(path: Path) -> bool:
    """Whether `path` is a temporary file write_atomically left behind (a killed run): never an input."""
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


def _sync_directory(directory: Path) -> None:
    # The rename itself is durable once the directory entry is on disk.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
