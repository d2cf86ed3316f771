"""A freshly built Python image carries the suite's security and stable updates, and `inv audit` agrees.

Builds the image once under a test tag (debootstrap: about a minute plus the upgrade), then:
its apt sources name -updates and -security, `inv audit -c python-image` finds no Debian fix, and
`inv python-image --refresh` is a no-op.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from scratch_project import REPO, Project

TEST_IMAGE = "factory-test/python-updates:bookworm"


@pytest.fixture(scope="module")
def fresh_python_image(docker_api, tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        message = "building the Python image needs root and debootstrap (scripts/provision.sh)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    project = Project(REPO, "unused")
    env = {"INVOKE_FACTORY_PYTHON_IMAGE": TEST_IMAGE,
           "INVOKE_FACTORY_OUTPUT_DIR": str(tmp_path_factory.mktemp("output"))}
    project.inv("python-image", "--force", env=env, timeout=1800)
    yield project, env
    docker_api.images.remove(TEST_IMAGE, force=True)


def test_the_fresh_image_names_all_three_suites(docker_api, fresh_python_image):
    from ingestion_factory.engine.daemon import read_files

    path = "/etc/apt/sources.list.d/debian.sources"
    sources = read_files(docker_api, TEST_IMAGE, [path, "/etc/apt/sources.list"])
    text = sources[path].decode()
    assert "Suites: bookworm bookworm-updates" in text
    assert "Suites: bookworm-security" in text and "debian-security" in text
    assert sources["/etc/apt/sources.list"] is None  # debootstrap's one-suite list is gone


def test_audit_right_after_the_build_finds_no_debian_fix_and_refresh_is_a_no_op(fresh_python_image, tmp_path):
    project, env = fresh_python_image
    report = tmp_path / "audit.json"
    completed = project.inv("audit", "-c", "python-image", "--json", str(report), env=env, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    [image] = json.loads(report.read_text())["images"]
    assert (image["name"], image["debian"]) == ("python-image", [])
    started = time.monotonic()
    refreshed = project.inv("python-image", "--refresh", env=env)
    assert "is up to date with bookworm, bookworm-updates, bookworm-security" in refreshed.stdout
    assert time.monotonic() - started < 10  # < 2 s warm on its own; the subprocess start-up comes on top
