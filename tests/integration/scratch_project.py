"""A scratch copy of the repository whose images live under a namespace of their own.

Kept out of conftest.py so test modules can import it by a name no other
folder's conftest shadows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from ingestion_factory.engine.daemon import remove_tags_under

REPO = Path(__file__).resolve().parents[2]
TEST_NAMESPACE = "factorytest"


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


@contextmanager
def rewritten(path: Path, text: str):
    """`path` holds `text` inside the block and exactly its original bytes again afterwards."""
    original = path.read_bytes()
    path.write_text(text)
    try:
        yield original.decode()
    finally:
        path.write_bytes(original)


def remove_namespace_images(api, namespace: str) -> None:
    remove_tags_under(api, namespace)


def scratch_projects(tmp_path_factory, api, label: str):
    """Yield a fresh scratch project in its own namespace; remove its images afterwards."""
    import uuid

    namespace = f"{TEST_NAMESPACE}{uuid.uuid4().hex[:6]}"
    yield copy_project(tmp_path_factory.mktemp(label), namespace)
    remove_namespace_images(api, namespace)


def empty_namespace(api, namespace: str, hosts: list[str]) -> None:
    """Remove every image of `namespace`, and the refs under `host/namespace` a push or a pull left."""
    prefixes = [namespace + "/"] + [f"{host}/{namespace}/" for host in hosts]
    from docker.errors import APIError, NotFound

    # The low-level list (no inspect per image): other test runs may remove their images meanwhile.
    doomed = {image["Id"] for image in api.api.images()
              if any(tag.startswith(tuple(prefixes)) for tag in image.get("RepoTags") or [])
              or any(digest.startswith(tuple(prefixes)) for digest in image.get("RepoDigests") or [])}
    for image_id in doomed:
        try:
            tags = api.api.inspect_image(image_id).get("RepoTags") or []
        except NotFound:
            continue
        for tag in tags:
            if tag.startswith(tuple(prefixes)):
                api.images.remove(tag, noprune=True)

    # Same inputs, same image (#31): another namespace built from the same commit holds the very image. It stays
    # theirs: what this namespace had is gone once its tags are.
    for image_id in list(doomed):
        try:
            if api.api.inspect_image(image_id).get("RepoTags"):
                doomed.discard(image_id)
        except NotFound:
            doomed.discard(image_id)

    for _ in range(3):  # children before parents: repeat until nothing more goes
        for image_id in list(doomed):
            try:
                api.images.remove(image_id)
            except NotFound:
                pass
            except APIError:  # a child still holds it: the next round
                continue
            doomed.discard(image_id)
    assert not doomed, f"images of {namespace} still there: {doomed}"


SIGNING_ENV = {"FACTORY_SIGNING_PASSPHRASE": "integration-test-passphrase"}


def signing_family(project: Project) -> Project:
    """A key pair generated, signing_key and trusted_keys set (as a string, so INVOKE_FACTORY_TRUSTED_KEYS can
    override it), and the DataHub family built: what the signing tests start from."""
    project.inv("keys", "generate", "--output", "keys", env=SIGNING_ENV)
    (project.root / "invoke.yaml").write_text(
        "factory:\n  signing_key: keys/factory-signing.key\n  trusted_keys: keys/factory-signing.pub\n")
    project.inv("build-connectors", "-c", "datahub-sqlite")
    return project
