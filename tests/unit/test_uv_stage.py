"""The uv stages of both Dockerfiles: spelled the same (BuildKit shares identical stages), pinned by sha256 for
every platform, and the fetch itself run by /bin/sh against a local wheel."""

import hashlib
import io
import platform
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from ingestion_factory import platforms

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "images" / "base" / "Dockerfile", ROOT / "images" / "connectors" / "Dockerfile"]
PACKAGES_URL = "https://files.pythonhosted.org/packages/"


def _instructions(path: Path) -> list[str]:
    """Instructions as Docker joins them (`\\` lines), comment lines left out."""
    lines = [line for line in path.read_text().splitlines() if not re.match(r"\s*#", line)]
    return [i.strip() for i in re.split(r"\n(?=[A-Z]+ )", "\n".join(lines).replace("\\\n", "")) if i.strip()]


def _uv_stage(path: Path) -> list[str]:
    instructions = _instructions(path)
    start = instructions.index("FROM ${PYTHON_IMAGE} AS uv")
    end = next(n for n in range(start + 1, len(instructions)) if instructions[n].startswith("FROM "))
    return instructions[start:end]


def _fetches(path: Path) -> list[str]:
    return [i for i in _instructions(path) if i.startswith("RUN ") and "UV_WHEELS" in i]


def _global_arg(path: Path, name: str) -> str:
    (value,) = [i.split("=", 1)[1] for i in _instructions(path) if i.startswith(f"ARG {name}=")]
    return value.strip('"')


def test_both_dockerfiles_spell_the_uv_stage_and_its_pins_the_same():
    base, connectors = DOCKERFILES
    assert _uv_stage(base) == _uv_stage(connectors)
    for name in ("UV_VERSION", "UV_WHEELS"):
        assert _global_arg(base, name) == _global_arg(connectors, name)


def test_the_cross_stages_fetch_uv_the_same_way():
    fetches = [run for path in DOCKERFILES for run in _fetches(path)]
    assert len(fetches) == 4  # uv and cross stage of each
    assert len({run.split(" && /opt/uv/bin/uv --version")[0] for run in fetches}) == 1


def test_every_platform_has_a_pinned_wheel_of_the_pinned_version():
    version = _global_arg(DOCKERFILES[0], "UV_VERSION")
    wheels = dict(word.split("=", 1) for word in _global_arg(DOCKERFILES[0], "UV_WHEELS").split())
    assert set(wheels) == {p.machine for p in platforms.KNOWN}
    for path in wheels.values():
        assert re.fullmatch(rf"[0-9a-f/]+/uv-{re.escape(version)}-py3-none-[\w.]+\.whl#sha256=[0-9a-f]{{64}}", path)


@pytest.fixture
def fetch(tmp_path):
    """The uv stage's fetch, reading a wheel from tmp_path instead of PyPI and writing under tmp_path."""
    (run,) = _fetches(DOCKERFILES[0])[:1]
    script = (run[run.index("if [ -s"):].split(" && /opt/uv/bin/uv --version")[0]
              .replace(PACKAGES_URL, f"file://{tmp_path}/").replace("/opt/uv", str(tmp_path / "opt/uv")))
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("uv-9.9.9.data/scripts/uv", "#!/bin/sh\necho uv 9.9.9\n")
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab/uv-9.9.9-py3-none-any.whl").write_bytes(wheel.getvalue())
    digest = hashlib.sha256(wheel.getvalue()).hexdigest()

    def run(version="9.9.9", sha256=digest, machine=None):
        wheels = f"{machine or platform.machine()}=ab/uv-9.9.9-py3-none-any.whl#sha256={sha256}"
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "UV_VERSION": version, "UV_WHEELS": wheels})
    return run


def test_the_fetch_installs_the_wheels_executable(fetch, tmp_path):
    completed = fetch()
    assert completed.returncode == 0, completed.stderr
    assert subprocess.run([tmp_path / "opt/uv/bin/uv"], capture_output=True, text=True).stdout == "uv 9.9.9\n"


@pytest.mark.parametrize("change, message", [
    ({"sha256": "0" * 64}, "sha256 "),
    ({"version": "9.9.8"}, "is not uv 9.9.8"),
    ({"machine": "riscv64"}, "UV_WHEELS has no uv wheel for "),
])
def test_the_fetch_refuses_another_wheel(fetch, tmp_path, change, message):
    completed = fetch(**change)
    assert completed.returncode == 1 and message in completed.stderr
    assert not (tmp_path / "opt/uv/bin/uv").exists()
