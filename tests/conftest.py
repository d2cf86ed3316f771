"""Shared fixtures: a throwaway project tree for unit tests; the skip report for ./run_tests.sh."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A minimal copy of the repository layout with two frameworks and no connectors."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "images" / "base", tmp_path / "images" / "base")
    shutil.copytree(REPO / "images" / "sbom", tmp_path / "images" / "sbom")
    (tmp_path / "images" / "connectors").mkdir()
    shutil.copy(REPO / "images" / "connectors" / "Dockerfile", tmp_path / "images" / "connectors" / "Dockerfile")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "main.py").write_text("print('runtime')\n")
    return tmp_path


def pytest_configure(config):
    # A suite started with Ctrl-C ignored (nohup, a background job of a non-interactive shell) passes
    # that on to every `inv` it starts, and the interrupt tests would fail for it: take Ctrl-C as Python
    # does by default (a caught signal is reset to the default at exec, so the children get it too).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# --- skipped tests, for ./run_tests.sh (which fails a run that skipped any, unless --allow-skips) -------


def _report_skip(report) -> None:
    path = os.environ.get("FACTORY_SKIP_REPORT")
    if not path or not report.skipped or hasattr(report, "wasxfail"):  # xfail is not a skip
        return
    # A skip's longrepr is (file, line, "Skipped: reason"); the reason may span lines.
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = " ".join(reason.removeprefix("Skipped: ").split())
    with open(path, "a", encoding="utf-8") as sink:
        sink.write(f"{report.nodeid}\t{reason}\n")


def pytest_runtest_logreport(report):
    _report_skip(report)


def pytest_collectreport(report):
    _report_skip(report)  # a whole module skipped at import (pytest.importorskip)
