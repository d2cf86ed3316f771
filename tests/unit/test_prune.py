"""images/base/prune.py: what leaves a virtualenv, and the lock connector builds install from."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

PRUNE = Path(__file__).resolve().parents[2] / "images" / "base" / "prune.py"


@pytest.fixture(scope="module")
def prune():
    spec = importlib.util.spec_from_file_location("factory_prune", PRUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_venv(root: Path, files: dict[str, str]) -> Path:
    site = root / "lib" / "python3.11" / "site-packages"
    for relative, text in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    return site


def dist(name: str, version: str, paths: list[str]) -> dict[str, str]:
    record = "".join(f"{p},sha256=x,1\n" for p in paths) + f"{name}-{version}.dist-info/RECORD,,\n"
    return {f"{name}-{version}.dist-info/METADATA": f"Name: {name}\n", f"{name}-{version}.dist-info/RECORD": record}


def test_pip_and_unimported_test_suites_go_imported_tests_packages_stay(prune, tmp_path):
    site = make_venv(tmp_path, {
        **dist("pip", "26.3", ["pip/__init__.py"]), "pip/__init__.py": "",
        **dist("setuptools", "80.10.2", ["setuptools/__init__.py", "pkg_resources/__init__.py"]),
        "setuptools/__init__.py": "", "pkg_resources/__init__.py": "",
        "numpy/__init__.py": "", "numpy/core/tests/test_a.py": "import numpy\n",
        "metadata/schema/tests/__init__.py": "", "metadata/schema/tests/basic.py": "X = 1\n",
        "metadata/schema/table.py": "from ..schema.tests import basic\n",
        "pytz/__init__.py": "def f():\n    try:\n        from pkg_resources import resource_stream\n    except ImportError:\n        pass\n",
        "lib/libfoo.a": "!<arch>",
    })
    prune.prune_venv(tmp_path, tmp_path / "removed.txt")
    assert (tmp_path / "removed.txt").read_text() == "pip\nsetuptools\n"
    assert not (site / "pip").exists() and not (site / "pip-26.3.dist-info").exists()
    assert not (site / "pkg_resources").exists()
    assert not (site / "numpy/core/tests").exists() and (site / "numpy/__init__.py").exists()
    assert (site / "metadata/schema/tests/basic.py").exists()
    assert not (site / "lib/libfoo.a").exists()


def test_setuptools_stays_when_a_module_imports_pkg_resources_at_module_level(prune, tmp_path):
    site = make_venv(tmp_path, {
        **dist("setuptools", "80.10.2", ["setuptools/__init__.py"]), "setuptools/__init__.py": "",
        "oldlib/__init__.py": "import pkg_resources\n",
        "numpy/distutils/core.py": "from setuptools import setup\n",
    })
    assert prune.needs_setuptools(site) == ["oldlib/__init__.py"]
    prune.prune_venv(tmp_path, tmp_path / "removed.txt")
    assert (tmp_path / "removed.txt").read_text() == ""
    assert (site / "setuptools/__init__.py").exists()


def test_a_connector_layer_checks_only_the_distributions_its_sync_installed(prune, tmp_path):
    site = make_venv(tmp_path, {**dist("parentlib", "1.0", ["parentlib/__init__.py"]),
                                "parentlib/__init__.py": "import pkg_resources\n"})
    marker = tmp_path / "marker"

    def tick(after: Path) -> None:
        """Wait for an inode change time later than after's (file systems keep a coarse clock)."""
        probe = tmp_path / "probe"
        while probe.write_text("") == 0 and probe.stat().st_ctime_ns <= after.stat().st_ctime_ns:
            time.sleep(0.002)

    tick(site / "parentlib-1.0.dist-info")
    marker.touch()
    tick(marker)
    make_venv(tmp_path, {**dist("newlib", "2.0", ["newlib/__init__.py", "newlib/tests/test_x.py", "newlib/y.py"]),
                         "newlib/__init__.py": "", "newlib/y.py": "from pkg_resources import resource_string\n",
                         "newlib/tests/test_x.py": "import pkg_resources\n"})
    assert sorted(prune.needs_setuptools(site)) == ["newlib/y.py", "parentlib/__init__.py"]
    assert prune.needs_setuptools(site, marker.stat().st_ctime_ns) == ["newlib/y.py"]
    assert prune.main(["needs-setuptools", str(tmp_path), "--installed-since", str(marker)]) == 0
    (site / "newlib/y.py").write_text("def f():\n    import pkg_resources\n")
    assert prune.main(["needs-setuptools", str(tmp_path), "--installed-since", str(marker)]) == 1


def test_bytecode_is_written_for_the_distributions_the_sync_installed_only(prune, tmp_path):
    site = make_venv(tmp_path, {**dist("old", "1.0", ["old/__init__.py"]), "old/__init__.py": "X = 1\n"})
    marker = tmp_path / "marker"
    time.sleep(0.05)  # the old distribution's inode change time stays before the marker's
    marker.touch()
    time.sleep(0.05)
    make_venv(tmp_path, {**dist("new", "2.0", ["new/__init__.py", "new/tests/test_py2.py"]),
                         "new/__init__.py": "Y = 2\n", "new/tests/test_py2.py": "print 'python 2'\n"})
    assert prune.main(["compile", str(tmp_path), "--installed-since", str(marker)]) == 0
    assert [p.name for p in (site / "new/__pycache__").iterdir()] == [f"__init__.{sys.implementation.cache_tag}.pyc"]
    assert not (site / "old/__pycache__").exists()


def test_the_lock_without_the_removed_packages(prune, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# inputs: sha256:00\npip==26.3 \\\n    --hash=sha256:aa\n    --hash=sha256:ab\n"
                    "six==1.17.0 \\\n    --hash=sha256:bb\nSetuptools==80.10.2 \\\n    --hash=sha256:cc\n")
    removed = tmp_path / "removed.txt"
    removed.write_text("pip\nsetuptools\n")
    assert prune.filter_lock(lock, removed) == "# inputs: sha256:00\nsix==1.17.0 \\\n    --hash=sha256:bb\n"
    assert prune.filter_lock(lock, tmp_path / "missing.txt") == lock.read_text()


def test_build_tools_inside_runtime_packages_go_unless_imported_at_module_level(prune, tmp_path):
    site = make_venv(tmp_path, {
        "numpy/__init__.py": "", "numpy/f2py/__init__.py": "", "numpy/distutils/__init__.py": "",
        "numpy/testing/utils.py": "def rundocs():\n    from numpy.distutils.misc_util import exec_mod_from_location\n",
        "_openmetadata_testutils/__init__.py": "import pytest\n",
        "oldlib/build.py": "import numpy.distutils.misc_util\n",
    })
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "f2py").write_text("#!/opt/venv/bin/python\n")
    prune.prune_venv(tmp_path, tmp_path / "removed.txt")
    assert not (site / "numpy/f2py").exists() and not (tmp_path / "bin" / "f2py").exists()
    assert not (site / "_openmetadata_testutils").exists()
    assert (site / "numpy/distutils/__init__.py").exists()  # oldlib imports it at module level
    assert (site / "numpy/__init__.py").exists() and (site / "numpy/testing/utils.py").exists()


def fake_binutils(root: Path, log: Path) -> Path:
    """A root file system whose strip logs what it strips, fails on `foreign*.so`, and sees LD_LIBRARY_PATH."""
    strip = root / "usr" / "bin" / "strip"
    strip.parent.mkdir(parents=True)
    strip.write_text(f"""#!/bin/sh
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> {log}
[ "$1" = --version ] && exit 0
shift
status=0
for f; do case "$f" in *foreign*) status=1;; *) echo "stripped $f" >> {log};; esac; done
exit $status
""")
    strip.chmod(0o755)
    return root


def test_strip_leaves_vendored_libraries_and_names_files_it_cannot_read(prune, tmp_path, capsys):
    venv = tmp_path / "venv"
    site = make_venv(venv, {"numpy/core/_multiarray.so": "", "numpy.libs/libopenblas.so": "",
                            "foreign_arm64.so": "", "pkg/mod.py": ""})
    (site / "link.so").symlink_to(site / "numpy/core/_multiarray.so")
    log = tmp_path / "strip.log"
    prune.strip_debug(venv, fake_binutils(tmp_path / "binutils", log), batch=2)
    stripped = [line.split(" ", 1)[1] for line in log.read_text().splitlines() if line.startswith("stripped ")]
    assert sorted(set(stripped)) == [str(site / "numpy/core/_multiarray.so")]
    assert "LD_LIBRARY_PATH=" + str(tmp_path / "binutils" / "usr" / "lib") in log.read_text()
    out = capsys.readouterr().out
    assert f"not stripped: {site / 'foreign_arm64.so'}" in out
    assert "stripped debug sections of 1 extension modules" in out


def test_a_strip_that_cannot_run_fails_the_build(prune, tmp_path):
    venv = tmp_path / "venv"
    make_venv(venv, {"mod.so": ""})
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError):
        prune.strip_debug(venv, tmp_path / "empty")
