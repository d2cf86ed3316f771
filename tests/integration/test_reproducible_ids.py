"""Same inputs, same image IDs (#31): the DataHub chain built from two fresh clones in different directories,
its images removed and BuildKit's cache bypassed (--no-cache) in between; then `inv rebuild` finds the image
identical, names the file a tampered copy added, and refuses a checkout whose inputs are not the image's."""

from __future__ import annotations

import io
import json
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

    # `inv rebuild` builds it again from its recorded inputs, no cache, in a scratch namespace: the same ID.
    rebuilt = second.inv("rebuild", "-c", "datahub-sqlite", check=False)
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-2000:]
    assert f"identical, {after['datahub-sqlite']['id']}" in rebuilt.stdout
    assert not [t for i in docker_api.images.list() for t in i.tags if f"{namespace}-rebuild-" in t]

    # A copy of the image with one file added in a layer of its own, under the image's tag: exit 1, naming it.
    source = second.ref("datahub-sqlite", DH_VERSION)
    tampered = f"FROM {source}\nUSER root\nRUN echo x > /opt/venv/bin/added && chmod 755 /opt/venv/bin/added\n"
    docker_api.images.build(fileobj=io.BytesIO(tampered.encode()), tag=second.ref("datahub-sqlite", DH_VERSION),
                            rm=True, network_mode="none")
    different = second.inv("rebuild", "-c", "datahub-sqlite", check=False)
    assert different.returncode == 1, different.stdout[-3000:] + different.stderr[-2000:]
    assert "/opt/venv/bin/added (file, only before)" in different.stdout
    assert "layer 8: only before" in different.stdout
    report = json.loads((second.root / "build" / "reports" / "rebuild-latest.json").read_text())["images"][0]
    assert report["status"] == "different" and report["rebuilt_id"] == after["datahub-sqlite"]["id"]

    # A checkout whose inputs are not the image's: bad input, naming the revision the image was built at.
    runtime_file = second.root / "runtime" / "main.py"
    runtime_file.write_text(runtime_file.read_text() + "\n# edited\n")
    stale = second.inv("rebuild", "-c", "base-datahub", check=False)
    assert stale.returncode == 2, stale.stdout[-2000:] + stale.stderr[-2000:]
    revision = after["base-datahub"]["labels"]["org.opencontainers.image.revision"]
    assert "is not what this checkout builds" in stale.stderr and revision in stale.stderr
