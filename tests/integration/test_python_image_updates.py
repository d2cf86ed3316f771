"""The Python image from images/python/debian.lock: current with the suites after a refresh, and reproducible.

In a scratch copy of the repository, `inv python-image --refresh` locks what the suites serve now and
builds the image under a test tag (mmdebstrap: about 40 s, more on a loaded machine), then:
its apt sources name -updates and -security, `inv audit -c python-image` finds no Debian fix, a second
refresh is a no-op, the same lock built again in another directory (image removed in between, nothing
shared but the engine) gives the same image ID, and a locked version the archive does not serve fails
the build naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from scratch_project import copy_project

TEST_IMAGE = "factory-test/python-updates:bookworm"
LOCK = "images/python/debian.lock"


@pytest.fixture(scope="module")
def fresh_python_image(docker_api, tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        message = "building the Python image needs root and mmdebstrap (scripts/provision.sh)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    project = copy_project(tmp_path_factory.mktemp("first"), "unused")
    env = {"INVOKE_FACTORY_PYTHON_IMAGE": TEST_IMAGE}
    refreshed = project.inv("python-image", "--refresh", env=env, timeout=1800)
    yield project, env, refreshed
    docker_api.images.remove(TEST_IMAGE, force=True)


def test_the_fresh_image_names_all_three_suites(docker_api, fresh_python_image):
    from ingestion_factory.engine.daemon import read_files

    path = "/etc/apt/sources.list.d/debian.sources"
    # (/etc/hostname and /etc/resolv.conf cannot be asked this way: the engine puts them in every container.)
    sources = read_files(docker_api, TEST_IMAGE, [path, "/etc/apt/sources.list", "/var/log/dpkg.log",
                                                  "/var/log/apt/history.log", "/var/cache/ldconfig/aux-cache"])
    text = sources[path].decode()
    assert "Suites: bookworm bookworm-updates" in text
    assert "Suites: bookworm-security" in text and "debian-security" in text
    # The build's own apt source, its logs and caches stay out.
    assert [name for name, data in sources.items() if data is not None] == [path]


def test_audit_right_after_a_refresh_finds_no_debian_fix_and_a_second_refresh_is_a_no_op(fresh_python_image,
                                                                                         tmp_path):
    project, env, _ = fresh_python_image
    report = tmp_path / "audit.json"
    completed = project.inv("audit", "-c", "python-image", "--json", str(report), env=env, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    [image] = json.loads(report.read_text())["images"]
    assert (image["name"], image["sbom"], image["debian"]) == ("python-image", LOCK, [])
    lock = (project.root / LOCK).read_bytes()
    started = time.monotonic()
    refreshed = project.inv("python-image", "--refresh", env=env)
    assert "[amd64] is current with bookworm, bookworm-updates, bookworm-security" in refreshed.stdout
    assert f"{TEST_IMAGE} is already present" in refreshed.stdout
    assert (project.root / LOCK).read_bytes() == lock
    assert time.monotonic() - started < 10  # ~2 s warm on its own; the subprocess start-up comes on top


def test_the_same_lock_built_in_another_directory_gives_the_same_image_id(docker_api, fresh_python_image,
                                                                          tmp_path_factory):
    project, env, _ = fresh_python_image
    first = docker_api.images.get(TEST_IMAGE).id
    docker_api.images.remove(TEST_IMAGE, force=True)
    other = copy_project(tmp_path_factory.mktemp("second-clone"), "unused")
    shutil.copy(project.root / LOCK, other.root / LOCK)  # the refresh may have moved it past the committed one
    other.inv("python-image", env=env, timeout=1800)  # its own build/ directory: every .deb downloaded again
    assert docker_api.images.get(TEST_IMAGE).id == first


def test_a_locked_version_the_archive_does_not_serve_fails_naming_it_and_the_refresh(fresh_python_image,
                                                                                     tmp_path_factory):
    project, env, _ = fresh_python_image
    other = copy_project(tmp_path_factory.mktemp("unserved"), "unused")
    lock = (project.root / LOCK).read_text()
    [line] = [line for line in lock.splitlines() if line.startswith("libc6 ")][:1]
    name, version, rest = line.split(" ", 2)
    (other.root / LOCK).write_text(lock.replace(line, f"{name} {version}.0 {rest}", 1))
    failed = other.inv("python-image", "--force", env=env, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"are no longer served by bookworm, bookworm-updates, bookworm-security: libc6 {version}.0" in failed.stderr
    assert "inv python-image --refresh" in failed.stderr
