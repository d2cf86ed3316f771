"""Each image's SOURCE_DATE_EPOCH: one time per image, derived from its inputs, never from the build's clock.

It is the newest of the parent's epoch (a base's parent is the Python image: its `created`) and the time of
the newest commit that touched one of the image's input files. So the same inputs give the same epoch in
any clone, a commit that changes nothing of an image leaves its epoch (and its build cache) alone, and a
child is never older than its parent.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

from ..engine.docker_engine import Engine, EngineError
from ..model.catalog import ImageSpec
from ..model.plan import LABEL_EPOCH


def commit_time(root: Path, files: tuple[Path, ...]) -> int:
    """Seconds since 1970 of the newest commit touching `files`; 0 outside git or for files never committed."""
    relative = sorted({str(path.relative_to(root)) for path in files if path.is_relative_to(root)})
    if not relative:
        return 0
    try:
        stamp = subprocess.run(["git", "log", "-1", "--format=%ct", "--", *relative], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 0
    return int(stamp) if stamp.isdigit() else 0


def created_seconds(created: str) -> int:
    """An engine's RFC 3339 `Created` (nanoseconds and all) as whole seconds; 0 when unreadable."""
    try:
        return int(datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    except (TypeError, ValueError):
        return 0


def parent_epoch(engine: Engine, parent_id: str) -> int:
    """The parent's recorded epoch, else (the Python image) its creation time; 0 when the engine cannot say."""
    try:
        info = engine.inspect_raw(parent_id)
    except EngineError:  # an engine that does not know it: no lower bound
        return 0
    label = str(((info.get("Config") or {}).get("Labels") or {}).get(LABEL_EPOCH, ""))
    return int(label) if label.isdigit() else created_seconds(str(info.get("Created", "")))


def source_date_epoch(root: Path, spec: ImageSpec, engine: Engine, parent_id: str) -> int:
    return max(parent_epoch(engine, parent_id), commit_time(root, spec.input_files))
