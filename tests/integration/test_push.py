"""`inv push` against real docker-registry servers on 127.0.0.1.

One small family is pushed: the DataHub base and datahub-sqlite (built in
a module-scoped scratch project).
"""

from __future__ import annotations

import json
import time

import pytest
from testkit import DH_VERSION

pytestmark = pytest.mark.registry

IMAGES = {"base-datahub", "datahub-sqlite"}


@pytest.fixture(scope="module")
def built(module_project):
    """datahub-sqlite and its base, built and verified (a no-op when the build tests already did it)."""
    module_project.inv("build-connectors", "-c", "datahub-sqlite")
    return module_project


def push_report(project) -> dict:
    return json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())


def by_name(report: dict) -> dict:
    return {image["name"]: image for image in report["images"]}


def repository(project, name: str) -> str:
    return f"{project.namespace}/ingestion-connector-{name}"


def test_push_reads_back_digests_and_the_pulled_image_passes_its_check(built, registries, docker_api):
    registry = registries.open
    done = built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host)
    images = by_name(push_report(built))
    build_tags = {name: image["tags"] for name, image in built.report().items()}

    assert set(images) == IMAGES
    for name, image in images.items():
        assert image["result"] == "pushed", image
        assert image["tags"][0] == DH_VERSION
        # Exactly the tags the build gave it, then the cache tag of its inputs (for --cache-from).
        assert image["tags"][:-1] == build_tags.get(name, image["tags"][:-1])
        assert image["tags"][-1].startswith("inputs-")
        local_id = docker_api.api.inspect_image(f"{repository(built, name)}:{DH_VERSION}")["Id"]
        assert image["image_id"] == local_id
        for tag in image["tag_results"]:
            assert tag["result"] == "pushed"
            assert tag["digest"] == image["digest"]
            # Read back independently of the tool: the registry serves what was reported.
            assert registry.manifest_digest(repository(built, name), tag["tag"]) == tag["digest"]
        assert image["digest"] in done.stdout  # the table shows every digest

    # A clean pull of what was pushed is the verified image, and it still passes its check.
    ref = f"{registry.host}/{repository(built, 'datahub-sqlite')}:{DH_VERSION}"
    docker_api.images.remove(ref, noprune=True)
    pulled = docker_api.images.pull(ref)
    assert pulled.id == images["datahub-sqlite"]["image_id"]
    output = docker_api.containers.run(ref, ["python", "main.py", "--check"], network_mode="none", remove=True)
    assert output  # containers.run raises ContainerError on a non-zero exit

    # Pushing the same images again is a no-op: nothing is uploaded.
    started = time.monotonic()
    again = built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host)
    assert time.monotonic() - started < 60
    for image in by_name(push_report(built)).values():
        assert image["result"] == "already present", image
        assert image["digest"] == images[image["name"]]["digest"]
    assert ": pushing" not in again.stdout


def test_stale_or_missing_images_are_refused(built, registries):
    missing = built.inv("push", "-c", "datahub-postgres", "--registry", registries.open.host, check=False)
    assert missing.returncode != 0
    assert "datahub-postgres (missing)" in missing.stderr
    assert "inv build-connectors -c datahub-postgres" in missing.stderr

    fragment = built.connector_dir("datahub-sqlite") / "requirements.txt"
    original = fragment.read_text()
    fragment.write_text(original + "# changed after the build\n")
    try:
        changed = built.inv("push", "-c", "datahub-sqlite", "--registry", registries.open.host, check=False)
    finally:
        fragment.write_text(original)
    assert changed.returncode != 0
    assert "datahub-sqlite (inputs changed)" in changed.stderr
    assert "inv build-connectors -c datahub-sqlite" in changed.stderr


def test_authenticated_registry(built, registries, tmp_path):
    secured = registries.secured
    repo = repository(built, "datahub-sqlite")
    wrong_password = "Wrong-" + secured.password[::-1]

    nobody = built.inv("push", "-c", "datahub-sqlite", "--registry", secured.host, check=False)
    assert nobody.returncode != 0
    assert "requires a login" in nobody.stderr

    wrong = built.inv("push", "-c", "datahub-sqlite", "--registry", secured.host, check=False,
                      env={"FACTORY_REGISTRY_USERNAME": secured.username, "FACTORY_REGISTRY_PASSWORD": wrong_password})
    assert wrong.returncode != 0
    assert f"refused the credentials of {secured.username}" in wrong.stderr
    report = (built.root / "build" / "reports" / "push-latest.json").read_text()
    for text in (wrong.stdout, wrong.stderr, report):
        assert wrong_password not in text
    assert all(image["result"] == "not pushed" for image in json.loads(report)["images"])
    assert secured.manifest_digest(repo, DH_VERSION) is None

    password_file = tmp_path / "registry-password"
    password_file.write_text(secured.password + "\n")
    right = built.inv("push", "-c", "datahub-sqlite", "--registry", secured.host, "--no-latest",
                      "--username", secured.username, "--password-file", str(password_file))
    report_text = (built.root / "build" / "reports" / "push-latest.json").read_text()
    for text in (right.stdout, right.stderr, report_text):
        assert secured.password not in text
    images = by_name(json.loads(report_text))
    assert {image["result"] for image in images.values()} == {"pushed"}
    assert "latest" not in images["datahub-sqlite"]["tags"]
    assert secured.manifest_digest(repo, DH_VERSION) == images["datahub-sqlite"]["digest"]
    assert secured.manifest_digest(repo, "latest") is None  # --no-latest left `latest` alone


def test_registry_down_is_a_clear_error_and_nothing_is_reported_pushed(built, registries):
    host = registries.unused_host()
    down = built.inv("push", "-c", "datahub-sqlite", "--registry", host, check=False)
    assert down.returncode != 0
    assert f"nothing was pushed: {host} is not reachable: connection refused" in down.stderr
    assert {image["result"] for image in push_report(built)["images"]} == {"not pushed"}


def test_dry_run_contacts_no_registry(built, registries):
    host = registries.unused_host()
    dry = built.inv("push", "-c", "datahub-sqlite", "--registry", host, "--dry-run")
    assert dry.stdout.count("would push") == 2
    assert f"{host}/{repository(built, 'datahub-sqlite')}" in dry.stdout
