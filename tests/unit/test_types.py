"""mypy, with the project's own settings ([tool.mypy] in pyproject.toml: strict), catches a wrong type in a
model module: a copy of the package with one return value made wrong fails with exactly that error.

The copy lives in a temporary directory (the project's files and mypy cache are left alone) and mypy checks
one small module of it, so a cold run stays within a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = Path("ingestion_factory/model/lockfile.py")
RIGHT = "    return path.suffix == LOCK_SUFFIX\n"
WRONG = "    return path.suffix\n"  # a str where the signature promises a bool


def mypy(copy: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--cache-dir", str(copy / ".cache"),
         "--no-error-summary", *map(str, files)],
        cwd=copy, capture_output=True, text=True, timeout=120)


def test_mypy_with_the_project_settings_fails_on_a_wrong_type_in_a_model_module(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "ingestion_factory", tmp_path / "ingestion_factory",
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp_path / MODULE
    source = module.read_text()
    assert source.count(RIGHT) == 1, "the line this test breaks has changed: pick another one"
    module.write_text(source.replace(RIGHT, WRONG))
    line = source[:source.index(RIGHT)].count("\n") + 1

    checked = mypy(tmp_path, MODULE)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    errors = [text for text in checked.stdout.splitlines() if ": error: " in text]
    assert errors == [f'{MODULE}:{line}: error: Incompatible return value type (got "str", expected "bool")  '
                      "[return-value]"], checked.stdout  # that error alone: the rest of the module is clean
