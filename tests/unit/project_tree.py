"""Helpers that write connector directories into the `project` fixture's tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

from testkit import OM_VERSION


def add_connector(project: Path, name: str, fragment: str = "pymysql>=1.1\n", settings: str | None = None) -> Path:
    directory = project / "images" / "connectors" / name
    directory.mkdir(parents=True)
    (directory / "requirements.txt").write_text(fragment)
    if settings is not None:
        (directory / "connector.toml").write_text(textwrap.dedent(settings))
    return directory


def connector_lock(directory: Path, version: str = OM_VERSION) -> Path:
    """Where a connector's lock for a framework version lives (locks/<version>.lock), its folder made."""
    path = directory / "locks" / f"{version}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
