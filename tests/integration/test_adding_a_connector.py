"""Identity by content: adding (or removing) a hand-made connector builds that one image, and every
other lock stays current and every other image up to date, although the base's lock is re-written
(its joint resolution follows the catalog's extras)."""

from __future__ import annotations

import re
import shutil

import pytest
from scratch_project import scratch_projects
from testkit import DH_VERSION

SIBLINGS = ("base-datahub", "datahub-sqlite", "datahub-mysql")
BASE_LOCK = f"images/base/frameworks/datahub/{DH_VERSION}/requirements.lock"
NEW_LOCK = f"images/connectors/datahub-superset/locks/{DH_VERSION}.lock"


@pytest.fixture(scope="module")
def project(tmp_path_factory, docker_api, python_image):
    """The DataHub base and two of its connectors, built once in a namespace of this module."""
    for scratch in scratch_projects(tmp_path_factory, docker_api, "adding"):
        scratch.inv("build-connectors", "-c", "datahub-sqlite", "-c", "datahub-mysql")
        yield scratch


def identities(api, project) -> dict[str, tuple[str, str]]:
    """Each sibling's image ID and input hash (its registry cache tag follows the hash)."""
    found = {}
    for name in SIBLINGS:
        attrs = api.api.inspect_image(project.ref(name, DH_VERSION))
        found[name] = attrs["Id"], attrs["Config"]["Labels"]["io.ingestion-factory.inputs"]
    return found


def locks(project) -> dict[str, bytes]:
    """Every lock of the project (the SBOM tool's, each base's and each connector's, per framework version)."""
    return {str(p.relative_to(project.root)): p.read_bytes() for p in project.root.glob("images/**/*.lock")}


def assert_siblings_up_to_date(project, docker_api, before):
    project.inv("build-connectors", "-c", "datahub-sqlite", "-c", "datahub-mysql")
    assert {name: image["result"] for name, image in project.report().items()} == dict.fromkeys(SIBLINGS, "up to date")
    assert identities(docker_api, project) == before


def test_adding_a_connector_builds_that_one_image(project, docker_api):
    before, committed = identities(docker_api, project), locks(project)
    # A DataHub extra no connector of the catalog uses yet: the base's joint resolution changes.
    directory = project.connector_dir("datahub-superset")
    directory.mkdir()
    (directory / "requirements.txt").write_text("acryl-datahub[superset]\n")
    (directory / "connector.toml").write_text('framework = "datahub"\nsource = "superset"\n')

    stale = project.inv("lock", "--check", check=False)
    assert stale.returncode == 1
    assert f"base-datahub ({DH_VERSION}): inputs changed" in stale.stdout  # --check still names the base
    assert f"datahub-superset ({DH_VERSION}): missing" in stale.stdout
    assert "error: 2 of" in stale.stderr  # and nothing else

    locked = project.inv("lock", "-c", "datahub-superset")
    assert "base-datahub: packages and hashes unchanged" in locked.stdout, locked.stdout
    assert "datahub-superset: created" in locked.stdout
    assert "other lock(s) do not match" not in locked.stdout
    moved = {path for path, data in locks(project).items() if committed.get(path) != data}
    assert moved == {BASE_LOCK, NEW_LOCK}
    assert re.search(r"All \d+ locks match their inputs", project.inv("lock", "--check").stdout)

    built = project.inv("build-connectors", "-c", "datahub-superset")
    report = project.report()
    assert {name: image["result"] for name, image in report.items()} == {
        "base-datahub": "up to date", "datahub-superset": "built"}, built.stdout[-3000:]
    assert_siblings_up_to_date(project, docker_api, before)

    # Removing it again: the base's lock goes back to its old inputs, and nothing is rebuilt.
    shutil.rmtree(directory)
    relocked = project.inv("lock")
    assert "base-datahub: packages and hashes unchanged" in relocked.stdout, relocked.stdout
    assert locks(project) == committed
    assert_siblings_up_to_date(project, docker_api, before)
