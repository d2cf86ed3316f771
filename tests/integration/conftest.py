"""Integration fixtures: a real Docker engine, a scratch copy of the project, cleanup of test images.

Every test here is marked `docker`. Without an engine the tests fail in CI
(CI=true) and are skipped elsewhere with a message saying how to get one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_NAMESPACE = "factorytest"


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.docker)


def _engine_problem() -> str | None:
    sys.path.insert(0, str(REPO))
    from ingestion_factory import buildkit, engine
    from ingestion_factory.errors import FactoryError

    try:
        engine.client()
        buildkit.find_cli()
    except FactoryError as exc:
        return exc.render()
    return None


@pytest.fixture(scope="session")
def docker_api():
    problem = _engine_problem()
    if problem:
        message = f"integration tests need a Docker engine with BuildKit:\n{problem}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from ingestion_factory import engine

    return engine.client()


@pytest.fixture(scope="session")
def python_image(docker_api):
    """The Python image every base starts FROM; built by .ci/run (`inv python-image`) or pulled."""
    from ingestion_factory import settings as settings_mod

    name = settings_mod.pyproject_defaults(REPO)["python_image"]
    try:
        docker_api.images.get(name)
    except Exception:
        try:
            docker_api.images.pull(name)
        except Exception:
            pytest.fail(f"Python image {name} is missing and cannot be pulled; run `inv python-image`",
                        pytrace=False)
    return name


class Project:
    """A scratch copy of the repository whose images live under their own namespace."""

    def __init__(self, root: Path, namespace: str):
        self.root = root
        self.namespace = namespace

    def inv(self, *args: str, check: bool = True, env: dict | None = None, timeout: int = 1800):
        full_env = dict(os.environ, INVOKE_FACTORY_NAMESPACE=self.namespace, PYTHONPATH=str(REPO),
                        **(env or {}))
        full_env.pop("CI", None) if env and env.get("CI") == "" else None
        completed = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=self.root, env=full_env,
                                   capture_output=True, text=True, timeout=timeout)
        if check and completed.returncode != 0:
            raise AssertionError(
                f"inv {' '.join(args)} exited {completed.returncode}\n--- stdout\n{completed.stdout[-4000:]}"
                f"\n--- stderr\n{completed.stderr[-4000:]}"
            )
        return completed

    def ref(self, name: str, tag: str) -> str:
        return f"{self.namespace}/ingestion-connector-{name}:{tag}"

    def report(self) -> dict:
        data = json.loads((self.root / "build" / "reports" / "build-latest.json").read_text())
        return {image["name"]: image for image in data["images"]}

    def connector_dir(self, name: str) -> Path:
        return self.root / "images" / "connectors" / name


def copy_project(destination: Path, namespace: str) -> Project:
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("tasks.py", "pyproject.toml", ".dockerignore"):
        shutil.copy(REPO / name, destination / name)
    for name in ("images", "runtime"):
        shutil.copytree(REPO / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    return Project(destination, namespace)


def remove_namespace_images(api, namespace: str) -> None:
    for image in api.images.list():
        for tag in image.tags:
            if tag.startswith(namespace + "/"):
                try:
                    api.images.remove(tag, noprune=False)
                except Exception:
                    pass


@pytest.fixture(scope="session")
def factory_project(tmp_path_factory, docker_api, python_image):
    """One scratch project shared by the build tests (builds are the slow part)."""
    namespace = f"{TEST_NAMESPACE}{uuid.uuid4().hex[:6]}"
    project = copy_project(tmp_path_factory.mktemp("project"), namespace)
    yield project
    remove_namespace_images(docker_api, namespace)


@pytest.fixture
def scratch_project(tmp_path, docker_api, python_image):
    """A project of its own for a test that changes images/; its images are removed afterwards."""
    namespace = f"{TEST_NAMESPACE}{uuid.uuid4().hex[:6]}"
    project = copy_project(tmp_path / "project", namespace)
    yield project
    remove_namespace_images(docker_api, namespace)
