"""`inv bundle` and `inv unbundle`: the workflows (workflows/bundle.py) with their progress shown."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..settings import Settings
from ..workflows import bundle as bundle_mod
from .console_progress import ConsoleProgress
from .push_command import show_run


def bundle(settings: Settings, names: list[str] | None, output: Path, *, console: Console, **options) -> int:
    return bundle_mod.bundle(settings, names, output, progress=ConsoleProgress(console), **options)


def unbundle(settings: Settings, path: Path, *, console: Console, **options) -> int:
    mirror = bundle_mod.unbundle(settings, path, progress=ConsoleProgress(console), **options)
    return show_run(mirror, console) if mirror is not None else 0
