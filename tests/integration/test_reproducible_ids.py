"""Same inputs, same image IDs (#31): the DataHub chain built from two fresh clones in different directories,
its images removed and BuildKit's cache bypassed (--no-cache) in between."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from scratch_project import REPO, Project, remove_namespace_images
from testkit import DH_VERSION

CHAIN = ("base-datahub", "datahub-sqlite")


def clone(destination) -> Project:
    """A clone of the checkout's HEAD (what is committed: a clone is what another machine builds)."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(destination)], check=True)
    return Project(destination, "")


@pytest.fixture
def namespace(docker_api):
    name = f"factorytest{uuid.uuid4().hex[:6]}"
    yield name
    remove_namespace_images(docker_api, name)


def build_chain(project: Project, api) -> dict[str, dict]:
    project.inv("build-connectors", "-c", "datahub-sqlite", "--no-cache")
    found = {}
    for name in CHAIN:
        info = api.api.inspect_image(project.ref(name, DH_VERSION))
        found[name] = {"id": info["Id"], "labels": info["Config"]["Labels"], "created": info["Created"]}
    return found


def test_two_clones_build_the_same_image_ids(tmp_path_factory, docker_api, python_image, namespace):
    first = clone(tmp_path_factory.mktemp("clone-a") / "a" / "checkout")
    second = clone(tmp_path_factory.mktemp("other-place") / "b")
    first.namespace = second.namespace = namespace

    before = build_chain(first, docker_api)
    remove_namespace_images(docker_api, namespace)
    after = build_chain(second, docker_api)

    assert {name: image["id"] for name, image in after.items()} == {name: image["id"] for name, image in before.items()}
    for image in after.values():
        epoch = int(image["labels"]["io.ingestion-factory.source-date-epoch"])
        assert image["created"].startswith(subprocess.run(
            ["date", "-u", "-d", f"@{epoch}", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip())
    # A child is never older than its parent.
    assert int(after["datahub-sqlite"]["labels"]["io.ingestion-factory.source-date-epoch"]) >= int(
        after["base-datahub"]["labels"]["io.ingestion-factory.source-date-epoch"])
