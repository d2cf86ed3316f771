"""The connector Dockerfile's package lists, run by /bin/sh with apt-get and uv stubbed: safe even for a bare build."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "images" / "connectors" / "Dockerfile"


def _script(variable: str) -> str:
    """The shell of the RUN instruction that installs ${variable}, mounts left out (Docker joins `\\` lines)."""
    # Docker drops comment lines, also inside an instruction continued with `\`, before joining the lines.
    text = re.sub(r"(?m)^[ \t]*#.*\n", "", DOCKERFILE.read_text())
    instructions = re.split(r"\n(?=[A-Z]+ )", text.replace("\\\n", " "))
    (run,) = [text for text in instructions if text.startswith("RUN ") and "install --yes" in text
              and "${" + variable + "}" in text]
    return run[run.index("set -f"):]


@pytest.fixture
def sandbox(tmp_path):
    """Stub apt-get (records its arguments) and uv; apt lists and marker files under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path}/apt-calls\n')
    apt.chmod(apt.stat().st_mode | stat.S_IEXEC)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_dists").write_text("x")
    (tmp_path / "workdir").mkdir()
    (tmp_path / "workdir" / "libfake1").write_text("")  # a file a glob of the list would pick up

    def run(variable: str, value: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        script = (_script(variable).replace("/var/lib/apt/lists", str(lists))
                  .replace("/opt/uv/bin/uv", "true").replace("/tmp/wheels-built", str(tmp_path / "built"))
                  # The step's tree (layer.py capture) and its clean-up stay inside tmp_path.
                  .replace("/opt/venv/bin/python /opt/ingestion-factory/layer.py", "true")
                  .replace("/out/", f"{tmp_path}/out/").replace("/tmp/before-apt", f"{tmp_path}/before-apt"))
        completed = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                                   cwd=tmp_path / "workdir",
                                   env={"PATH": f"{bin_dir}:{os.environ['PATH']}", variable: value})
        calls = (tmp_path / "apt-calls").read_text().splitlines() if (tmp_path / "apt-calls").exists() else []
        return completed, calls

    run.lists = lists
    return run


@pytest.mark.parametrize("variable", ["OS_PACKAGES", "BUILD_PACKAGES"])
def test_several_packages_are_installed_as_separate_names_after_double_dash(sandbox, variable):
    completed, calls = sandbox(variable, "libpq5 unixodbc  libsasl2-modules-gssapi-mit")
    assert completed.returncode == 0, completed.stderr
    assert calls == ["update", "install --yes --no-install-recommends -- libpq5 unixodbc libsasl2-modules-gssapi-mit"]


def test_the_apt_lists_are_still_removed_after_the_install(sandbox):
    completed, _ = sandbox("OS_PACKAGES", "libpq5")
    assert completed.returncode == 0, completed.stderr
    assert list(sandbox.lists.iterdir()) == []  # globbing is back on for the clean-up


@pytest.mark.parametrize("variable", ["OS_PACKAGES", "BUILD_PACKAGES"])
def test_no_package_list_installs_nothing(sandbox, variable):
    completed, calls = sandbox(variable, "")
    assert (completed.returncode, calls) == (0, [])


@pytest.mark.parametrize("variable", ["OS_PACKAGES", "BUILD_PACKAGES"])
@pytest.mark.parametrize("value", ["libfake*", "-oAPT::Update::Pre-Invoke::=id", "libpq5 -s", "x", "Libpq5",
                                   "libpq5;id", "$(id)", "lib[pq]5"])
def test_a_word_that_is_not_a_package_name_stops_the_build_before_apt(sandbox, variable, value):
    completed, calls = sandbox(variable, value)
    assert completed.returncode == 2 and calls == [], (completed.stderr, calls)
    assert f"{variable}: '" in completed.stderr and "is not a Debian package name" in completed.stderr
    assert "libfake1" not in completed.stderr  # the word itself, never a glob's match
