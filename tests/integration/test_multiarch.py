"""Images for linux/amd64 and linux/arm64 (issue 12), for real: arm64 runs under QEMU on this host.

The DataHub base and datahub-sqlite are built for both platforms in one module project, each variant
smoke-tested before it is tagged, pushed to a local registry as one manifest list per tag, pulled back
by platform, and the embedded demo run on arm64 writes the same metadata as on amd64. The arm64 Python
image (mmdebstrap under QEMU, minutes) is built once and kept, like the amd64 one.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import requests
from scratch_project import REPO
from testkit import DH_VERSION

from ingestion_factory.platforms import ARM64, emulation_problem
from ingestion_factory.workflows import metadata_file

pytestmark = [pytest.mark.arm64, pytest.mark.registry]

BOTH = ("--platform", "linux/amd64", "--platform", "linux/arm64")
LIST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json, "
              "application/vnd.oci.image.index.v1+json")
# Fields a second run of the same ingestion writes differently (when and which run), not what it found.
RUN_FIELDS = {"systemMetadata", "lastObserved", "runId", "lastRunId", "timestampMillis", "lastUpdatedTimestamp"}


@pytest.fixture(scope="session")
def arm64_python_image(docker_api, python_image):
    """python:3.11-slim-bookworm-arm64, built from Debian packages under QEMU once and then kept (built
    again when an earlier recipe of `inv python-image` made it: `inv python-image` itself decides)."""
    from ingestion_factory import settings as settings_mod

    problem = emulation_problem(ARM64)
    if problem:
        message = f"arm64 tests need QEMU: {problem} (apt-get install qemu-user-static binfmt-support)"
        pytest.fail(message, pytrace=False) if os.environ.get("CI") else pytest.skip(message)
    name = settings_mod.pyproject_defaults(REPO)["python_image"]
    ref = ARM64.ref(name)
    from scratch_project import Project

    Project(REPO, "unused").inv("python-image", "--platform", "linux/arm64", timeout=1800)
    assert docker_api.api.inspect_image(ref)["Architecture"] == "arm64"
    return ref


@pytest.fixture(scope="module")
def built(module_project, arm64_python_image):
    """datahub-sqlite and its base for both platforms, and that build's report (read now: later builds in the
    module overwrite build-latest.json)."""
    started = time.monotonic()
    module_project.inv("build-connectors", "-c", "datahub-sqlite", *BOTH)
    module_project.build_s = time.monotonic() - started
    module_project.first_report = built_report(module_project)
    return module_project


def repository(project, name: str) -> str:
    return f"{project.namespace}/ingestion-connector-{name}"


def test_both_platforms_are_built_smoke_tested_and_tagged_apart(built, docker_api):
    results = {(image["name"], image["platform"]): image for image in built.first_report}
    assert set(results) == {(name, platform) for name in ("base-datahub", "datahub-sqlite")
                            for platform in ("linux/amd64", "linux/arm64")}
    for (name, platform), image in results.items():
        assert image["result"] == "built", image
        assert image["smoke_s"] > 0  # main.py --check ran in this very variant before it got its tags
        arch = platform.split("/")[1]
        suffix = "" if arch == "amd64" else "-arm64"
        assert image["ref"] == f"{repository(built, name)}:{DH_VERSION}{suffix}"
        assert all(tag.endswith(suffix) for tag in image["tags"])
        attrs = docker_api.api.inspect_image(image["ref"])
        assert attrs["Architecture"] == arch
        assert attrs["Id"] == image["image_id"]
    # amd64 keeps today's names; the arm64 variant really is an aarch64 userland with aarch64 wheels.
    arm64_ref = results[("datahub-sqlite", "linux/arm64")]["ref"]
    probe = docker_api.containers.run(arm64_ref, ["python", "-c", "import platform, sqlalchemy.cyextension as c, "
                                                  "os; print(platform.machine(), os.listdir(c.__path__[0]))"],
                                      network_mode="none", remove=True).decode()
    assert probe.startswith("aarch64") and "aarch64-linux-gnu" in probe
    # Each variant's SBOM was checked against the lock; the arm64 one lists arm64 Debian packages.
    sbom = json.loads((built.root / "build" / "reports" / "sbom" / "arm64" / "datahub-sqlite.cdx.json").read_text())
    assert any("arch=arm64" in c.get("purl", "") for c in sbom["components"])



def test_the_cross_installed_arm64_variant_rebuilds_to_the_same_image_id(built):
    """#31: the arm64 datahub-sqlite (its packages cross-installed from amd64) is reproducible too: built again
    from its recorded inputs with no build cache, the same image ID."""
    arm64 = next(image for image in built.first_report
                 if image["name"] == "datahub-sqlite" and image["platform"] == "linux/arm64")
    completed = built.inv("rebuild", "-c", "datahub-sqlite", "--platform", "linux/arm64", check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert f"{arm64['ref']}: identical, {arm64['image_id']}" in completed.stdout

def test_a_no_op_multi_platform_build_stays_under_a_second(built):
    started = time.monotonic()
    done = built.inv("build-connectors", "-c", "datahub-sqlite", *BOTH)
    elapsed = time.monotonic() - started
    assert "All 4 images (linux/amd64, linux/arm64) are up to date" in done.stdout
    tool_s = float(done.stdout.rsplit("(", 1)[1].split("s)")[0])
    assert tool_s < 1.0, done.stdout
    assert elapsed < 5  # the whole process, interpreter start included


def test_push_publishes_one_manifest_list_and_each_platform_pulls_its_own(built, registries, docker_api):
    registry = registries.open
    built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host, *BOTH)
    report = json.loads((built.root / "build" / "reports" / "push-latest.json").read_text())
    images = {image["name"]: image for image in report["images"]}
    assert set(images) == {"base-datahub", "datahub-sqlite"}
    for name, image in images.items():
        assert image["result"] == "pushed", image
        assert set(image["platforms"]) == {"linux/amd64", "linux/arm64"}
        for tag in image["tags"]:  # version, commit, latest: each the same list, read straight from the registry
            response = requests.get(f"http://{registry.host}/v2/{repository(built, name)}/manifests/{tag}",
                                    headers={"Accept": LIST_TYPES}, timeout=10)
            response.raise_for_status()
            assert response.headers["Content-Type"].startswith("application/vnd.docker.distribution.manifest.list")
            assert response.headers["Docker-Content-Digest"] == image["digest"]
            entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                       for m in response.json()["manifests"]}
            assert entries == image["platforms"]
    assert images["datahub-sqlite"]["tags"][0] == DH_VERSION
    # Pulling the one tag on either architecture gets that architecture's verified image.
    remote = f"{registry.host}/{repository(built, 'datahub-sqlite')}"
    local = {platform: docker_api.api.inspect_image(f"{repository(built, 'datahub-sqlite')}:{DH_VERSION}{suffix}")["Id"]
             for platform, suffix in (("linux/amd64", ""), ("linux/arm64", "-arm64"))}
    for platform in ("linux/arm64", "linux/amd64"):
        try:
            docker_api.images.remove(f"{remote}:{DH_VERSION}", noprune=True)
        except Exception:
            pass
        pulled = docker_api.images.pull(remote, tag=DH_VERSION, platform=platform)
        attrs = docker_api.api.inspect_image(pulled.id)
        assert attrs["Architecture"] == platform.split("/")[1]
        assert pulled.id == local[platform]
    # A second push finds every list in place.
    built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host, *BOTH)
    again = json.loads((built.root / "build" / "reports" / "push-latest.json").read_text())
    assert {image["result"] for image in again["images"]} == {"already present"}


def test_an_arm64_only_push_after_an_amd64_push_leaves_both_under_the_version_tag(built, empty_registry):
    """Issue 30: `--platform linux/arm64` alone used to store an arm64-only list over `:<version>`, `:latest`
    and the commit tag, so amd64 pulls broke after an amd64 push. The list now keeps the amd64 image."""
    registry = empty_registry
    name = repository(built, "datahub-sqlite")
    built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host)  # the default platform alone
    amd64 = registry.manifest_digest(name, DH_VERSION)
    done = built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host, "--platform", "linux/arm64")
    report = json.loads((built.root / "build" / "reports" / "push-latest.json").read_text())
    image = {i["name"]: i for i in report["images"]}["datahub-sqlite"]
    assert image["result"] == "pushed" and "kept linux/amd64" in image["reason"], image
    assert "kept linux/amd64 from the tag" in done.stdout
    for tag in image["tags"]:  # version, commit, latest: the amd64 push gave each the same image
        response = requests.get(f"http://{registry.host}/v2/{name}/manifests/{tag}",
                                headers={"Accept": LIST_TYPES}, timeout=10)
        response.raise_for_status()
        entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                   for m in response.json()["manifests"]}
        assert entries == {"linux/amd64": amd64, "linux/arm64": image["platforms"]["linux/arm64"]}, tag

    # And back: a push of the default platform alone joins the list under the tags instead of replacing it.
    arm64 = image["platforms"]["linux/arm64"]
    again = built.inv("push", "-c", "datahub-sqlite", "--registry", registry.host)
    report = json.loads((built.root / "build" / "reports" / "push-latest.json").read_text())
    image = {i["name"]: i for i in report["images"]}["datahub-sqlite"]
    assert image["result"] in ("pushed", "already present"), (image, again.stdout[-2000:])
    for tag in image["tags"]:
        response = requests.get(f"http://{registry.host}/v2/{name}/manifests/{tag}",
                                headers={"Accept": LIST_TYPES}, timeout=10)
        response.raise_for_status()
        entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                   for m in response.json()["manifests"]}
        assert entries == {"linux/amd64": amd64, "linux/arm64": arm64}, tag


def _without_run_fields(value):
    if isinstance(value, dict):
        return {k: _without_run_fields(v) for k, v in value.items() if k not in RUN_FIELDS}
    if isinstance(value, list):
        return [_without_run_fields(v) for v in value]
    return value


def test_the_demo_on_arm64_writes_the_same_metadata_as_on_amd64(built, tmp_path_factory):
    examples = built.root / "examples"
    if not examples.exists():
        shutil.copytree(REPO / "examples", examples, ignore=shutil.ignore_patterns(
            "output", "sample.db", "__pycache__", "*-password", "*-jwt"))
    link = tmp_path_factory.mktemp("link") / "examples"
    env = {"INVOKE_FACTORY_EXAMPLES_LINK": str(link)}
    output = examples / "output" / "datahub-sqlite.json"
    written = {}
    for platform in ("linux/amd64", "linux/arm64"):
        output.unlink(missing_ok=True)
        started = time.monotonic()
        done = built.inv("run-local", "--platform", platform, "--no-build", env=env, timeout=600)
        assert "Result: success (exit 0)" in done.stdout, done.stdout
        assert f"{DH_VERSION}{'-arm64' if platform.endswith('arm64') else ''} " in done.stdout
        written[platform] = (json.loads(output.read_text()), time.monotonic() - started)
    amd64, arm64 = (written[p][0] for p in ("linux/amd64", "linux/arm64"))
    assert _without_run_fields(arm64) == _without_run_fields(amd64)
    summary = metadata_file.summarize(output)
    assert summary.tables == ["main.customers", "main.order_items", "main.orders", "main.products"]
    assert link.resolve() == examples.resolve()  # run-local made this project's own link


def test_a_connector_that_cannot_exist_on_arm64_is_listed_with_its_reason_and_skipped(scratch_project,
                                                                                      arm64_python_image):
    """On a project and namespace of its own: it edits datahub-sqlite's connector.toml, which the module's
    other tests must not see (amd64 is built, arm64 passed over)."""
    project = scratch_project
    settings_file = project.connector_dir("datahub-sqlite") / "connector.toml"
    settings_file.write_text(settings_file.read_text()
                             + '\nunavailable_platforms = { "linux/arm64" = "no aarch64 build of the driver" }\n')
    listed = json.loads(project.inv("list", "--json", *BOTH).stdout)
    rows = {(row["name"], row["platform"]): row for row in listed}
    assert rows[("datahub-sqlite", "linux/arm64")]["state"] == "unavailable: no aarch64 build of the driver"
    assert rows[("base-datahub", "linux/arm64")]["state"] == "missing"  # its base still exists on arm64
    done = project.inv("build-connectors", "-c", "datahub-sqlite", *BOTH)  # exit 0: nothing failed
    results = {(image["name"], image["platform"]): image for image in built_report(project)}
    assert results[("datahub-sqlite", "linux/arm64")]["result"] == "unavailable"
    assert results[("datahub-sqlite", "linux/amd64")]["result"] == "built"
    assert ("base-datahub", "linux/arm64") not in results  # nothing on arm64 needs it
    assert "cannot exist on a platform" in done.stdout


def built_report(project) -> list[dict]:
    return json.loads((project.root / "build" / "reports" / "build-latest.json").read_text())["images"]
