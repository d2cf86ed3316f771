"""Shared fixtures: a throwaway project tree for unit tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal copy of the repository layout with two frameworks and no connectors."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "images" / "base", tmp_path / "images" / "base")
    (tmp_path / "images" / "connectors").mkdir()
    shutil.copy(REPO / "images" / "connectors" / "Dockerfile", tmp_path / "images" / "connectors" / "Dockerfile")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "main.py").write_text("print('runtime')\n")
    return tmp_path
