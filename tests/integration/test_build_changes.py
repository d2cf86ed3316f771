"""Incremental rebuilds and failures that must leave the previous images untouched."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import pytest
from scratch_project import rewritten, scratch_projects
from testkit import DH_VERSION


@pytest.fixture(scope="module")
def project(tmp_path_factory, docker_api, python_image):
    """A DataHub family (base + two connectors) built once for the tests of this module."""
    for scratch in scratch_projects(tmp_path_factory, docker_api, "changes"):
        scratch.inv("build-connectors", "-c", "datahub-sqlite", "-c", "datahub-mysql")
        yield scratch


def image_id(api, project, name):
    return api.api.inspect_image(project.ref(name, DH_VERSION))["Id"]


def lock_of(directory):
    """A DataHub connector's lock for the DataHub version the images are built for."""
    return directory / "locks" / f"{DH_VERSION}.lock"


def ids(api, project):
    return {name: image_id(api, project, name) for name in ("base-datahub", "datahub-sqlite", "datahub-mysql")}


def test_changing_one_fragment_rebuilds_only_that_connector(project, docker_api):
    before = ids(docker_api, project)
    fragment = project.connector_dir("datahub-mysql") / "requirements.txt"
    with rewritten(fragment, fragment.read_text() + "# touched by the test\n"):
        plan = project.inv("build-connectors", "-c", "datahub-sqlite", "-c", "datahub-mysql", "--plan").stdout
        assert "inputs changed" in plan
        project.inv("build-connectors", "-c", "datahub-sqlite", "-c", "datahub-mysql")
        report = project.report()
        assert report["datahub-mysql"]["result"] == "built"
        assert report["datahub-sqlite"]["result"] == "up to date"
        assert report["base-datahub"]["result"] == "up to date"
        after = ids(docker_api, project)
        assert after["datahub-mysql"] != before["datahub-mysql"]
        assert after["datahub-sqlite"] == before["datahub-sqlite"]
        assert after["base-datahub"] == before["base-datahub"]
        # The replaced image does not stay behind as untagged layers.
        with pytest.raises(Exception, match="No such image|not found"):
            docker_api.api.inspect_image(before["datahub-mysql"])


def _pin_gone_from_the_index(lock_text: str) -> str:
    """A lock that pins a version the index does not have: what a package yanked after locking looks like."""
    return re.sub(r"^sqlparse==\S+", "sqlparse==0.0.999", lock_text, flags=re.M)


def test_failed_build_keeps_the_previous_image_and_others_still_build(project, docker_api):
    before = ids(docker_api, project)
    lock = lock_of(project.connector_dir("datahub-mysql"))
    sqlite_fragment = project.connector_dir("datahub-sqlite") / "requirements.txt"
    with rewritten(lock, _pin_gone_from_the_index(lock.read_text())), \
            rewritten(sqlite_fragment, sqlite_fragment.read_text() + "# rebuilt alongside a failing one\n"):
        completed = project.inv("build-connectors", "-c", "datahub-mysql", "-c", "datahub-sqlite", check=False)
        assert completed.returncode == 1
        failure = completed.stdout[completed.stdout.index("datahub-mysql failed:"):]
        # The cause, uv's own explanation, then the command once.
        assert failure.startswith("datahub-mysql failed: package not found: there is no version of "
                                  "sqlparse==0.0.999")
        assert failure.index("No solution found") < failure.index("failed command: [")
        assert failure.count("RUN ") == 1
        assert "1 image(s) not built: datahub-mysql" in completed.stderr
        assert project.report()["datahub-sqlite"]["result"] == "built"
        assert image_id(docker_api, project, "datahub-mysql") == before["datahub-mysql"]


def test_a_fragment_naming_a_missing_package_fails_its_lock_and_keeps_the_old_one(project):
    fragment = project.connector_dir("datahub-mysql") / "requirements.txt"
    lock = lock_of(project.connector_dir("datahub-mysql"))
    committed = lock.read_text()
    with rewritten(fragment, "acryl-datahub[mysql]\nthis-package-does-not-exist==9.9.9\n"):
        completed = project.inv("lock", "-c", "datahub-mysql", check=False)
        assert completed.returncode == 1
        assert ("datahub-mysql: lock failed: package not found: this-package-does-not-exist was not found in the "
                "package registry") in completed.stdout
        assert "No solution found" in completed.stdout
        assert "1 lock(s) not written: datahub-mysql" in completed.stderr
        assert lock.read_text() == committed


def test_failed_smoke_test_keeps_the_previous_image(project, docker_api):
    before = image_id(docker_api, project, "datahub-sqlite")
    settings_file = project.connector_dir("datahub-sqlite") / "connector.toml"
    broken = settings_file.read_text().replace('check_modules = [', 'check_modules = ["module_that_is_missing", ')
    with rewritten(settings_file, broken):
        completed = project.inv("build-connectors", "-c", "datahub-sqlite", check=False)
        assert completed.returncode == 1
        assert "datahub-sqlite failed: plugin import failed in the smoke test: " in completed.stdout
        assert "module_that_is_missing" in completed.stdout
        assert image_id(docker_api, project, "datahub-sqlite") == before


def test_connector_whose_plugin_does_not_load_fails_and_keeps_its_tag(project, docker_api):
    """The smoke test imports the connector's own source plugin: one that cannot load fails the build."""
    before = image_id(docker_api, project, "datahub-mysql")
    settings_file = project.connector_dir("datahub-mysql") / "connector.toml"
    # DataHub's mongodb source, in an image without its extra: the plugin's module cannot import bson.
    broken = settings_file.read_text().replace('source = "mysql"', 'source = "mongodb"')
    with rewritten(settings_file, broken):
        completed = project.inv("build-connectors", "-c", "datahub-mysql", check=False)
        assert completed.returncode != 0
        assert "source plugin 'mongodb' cannot be loaded" in completed.stdout
        assert "No module named 'bson'" in completed.stdout  # pymongo's; the extra is not installed
        assert image_id(docker_api, project, "datahub-mysql") == before


def test_fragment_that_moves_the_framework_is_refused_by_name(project, docker_api):
    before = image_id(docker_api, project, "datahub-mysql")
    fragment = project.connector_dir("datahub-mysql") / "requirements.txt"
    lock = lock_of(project.connector_dir("datahub-mysql"))
    with rewritten(fragment, "acryl-datahub[mysql]==1.6.0.17\n"), rewritten(lock, lock.read_text()):
        locked = project.inv("lock", "-c", "datahub-mysql", check=False)
        assert locked.returncode == 1
        assert "would change the framework version" in locked.stdout
        assert "acryl-datahub" in locked.stdout
        built = project.inv("build-connectors", "-c", "datahub-mysql", check=False)
        assert built.returncode == 2 and f"run: inv lock -c datahub-mysql --version {DH_VERSION}" in built.stderr
        assert image_id(docker_api, project, "datahub-mysql") == before


def test_indirect_pin_conflict_names_the_package(project):
    fragment = project.connector_dir("datahub-mysql") / "requirements.txt"
    lock = lock_of(project.connector_dir("datahub-mysql"))
    # The base pins pydantic 2.x; asking for 1.x must fail and say which package.
    with rewritten(fragment, "acryl-datahub[mysql]\npydantic<2\n"), rewritten(lock, lock.read_text()):
        completed = project.inv("lock", "-c", "datahub-mysql", check=False)
        assert completed.returncode == 1
        assert ("datahub-mysql: lock failed: version conflict with the parent's pins: the fragment needs pydantic<2 "
                "but the parent's lock pins pydantic==2.") in completed.stdout


def test_ca_bundle_never_lands_in_the_image(project, docker_api, tmp_path):
    marker = f"factory-ca-marker-{uuid.uuid4().hex}"
    host_bundle = open("/etc/ssl/certs/ca-certificates.crt").read()
    bundle = tmp_path / "bundle.pem"
    # PEM readers skip text between certificates, so the marker is harmless but findable.
    bundle.write_text(f"# {marker}\n{host_bundle}")
    project.inv("build-connectors", "-c", "datahub-sqlite", "--force", "--ca-bundle", str(bundle))
    ref = project.ref("datahub-sqlite", DH_VERSION)
    history = subprocess.run(["docker", "history", "--no-trunc", ref], capture_output=True, text=True).stdout
    assert marker not in history
    container = docker_api.containers.run(
        ref, ["sh", "-c", f"grep -rl {marker} / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; ls /run/secrets"],
        detach=True, user="root", network_mode="none")
    try:
        container.wait(timeout=300)
        output = container.logs().decode()
    finally:
        container.remove(force=True)
    assert marker not in output.replace(f"grep -rl {marker}", "")
    assert "ca" not in output.split()


def test_unknown_connector_is_a_clear_error(project):
    completed = project.inv("build-connectors", "-c", "mysq", check=False)
    assert completed.returncode == 2
    assert "unknown connector 'mysq'" in completed.stderr
    assert "did you mean" in completed.stderr and "mysql" in completed.stderr


def test_missing_daemon_is_a_clear_error(project):
    completed = project.inv("build-connectors", "--plan", check=False,
                            env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert completed.returncode == 3
    assert "cannot reach the Docker daemon" in completed.stderr
    assert "hint:" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_malformed_fragment_is_named_and_the_rest_still_plans(project):
    broken = project.root / "images" / "connectors" / "broken-fragment"
    broken.mkdir()
    (broken / "requirements.txt").write_text("pymysql ==== 1\n")
    try:
        completed = project.inv("build-connectors", "-c", "broken-fragment", check=False)
        assert completed.returncode == 2
        assert "requirements.txt:1: not a valid requirement" in completed.stderr
        everything = project.inv("build-connectors", "--plan", check=False)
        assert "broken-fragment cannot be built" in everything.stdout
        assert "datahub-sqlite" in everything.stdout
    finally:
        (broken / "requirements.txt").unlink()
        broken.rmdir()


def test_dependent_connector_with_os_packages(project, docker_api):
    """A connector built FROM another connector, with a Debian package; a parent change rebuilds both."""
    child = project.root / "images" / "connectors" / "datahub-sqlite-tools"
    child.mkdir()
    (child / "requirements.txt").write_text("pyfiglet==1.0.2\n")
    (child / "connector.toml").write_text(
        'parent = "datahub-sqlite"\nsource = "sqlalchemy"\nos_packages = ["sqlite3"]\ncheck_modules = ["pyfiglet"]\n')
    parent_fragment = project.connector_dir("datahub-sqlite") / "requirements.txt"
    original = parent_fragment.read_text()
    try:
        project.inv("lock", "-c", "datahub-sqlite-tools")
        project.inv("build-connectors", "-c", "datahub-sqlite-tools")
        report = project.report()
        assert report["datahub-sqlite-tools"]["result"] == "built"
        child_ref = project.ref("datahub-sqlite-tools", DH_VERSION)
        labels = docker_api.api.inspect_image(child_ref)["Config"]["Labels"]
        assert labels["io.ingestion-factory.parent-id"] == image_id(docker_api, project, "datahub-sqlite")
        assert labels["io.ingestion-factory.framework"] == "datahub"
        output = docker_api.containers.run(child_ref, ["sqlite3", "--version"], remove=True, network_mode="none")
        assert output.decode().startswith("3.")

        parent_fragment.write_text(original + "# a change in the parent\n")
        plan = project.inv("build-connectors", "-c", "datahub-sqlite-tools", "--plan").stdout
        assert "parent changed" in plan
        project.inv("build-connectors", "-c", "datahub-sqlite-tools")
        report = project.report()
        assert report["datahub-sqlite"]["result"] == "built"
        assert report["datahub-sqlite-tools"]["result"] == "built"
        assert report["base-datahub"]["result"] == "up to date"
    finally:
        parent_fragment.write_text(original)
        shutil.rmtree(child)  # its files and its locks/ folder


def test_a_broken_directory_exits_2_whether_or_not_something_was_built(scratch_project):
    """One rule: 2 for bad input found before building, 1 when a build failed (and 1 wins)."""
    connectors = scratch_project.root / "images" / "connectors"
    for directory in connectors.iterdir():
        if directory.is_dir() and directory.name != "datahub-sqlite":  # "everything" stays small
            shutil.rmtree(directory)
    # The base's lock follows the extras its catalog uses, so a smaller catalog re-locks it first.
    scratch_project.inv("lock", "-c", "datahub-sqlite")
    scratch_project.inv("build-connectors")
    broken = connectors / "broken-fragment"
    broken.mkdir()
    (broken / "requirements.txt").write_text("pymysql ==== 1\n")

    nothing_to_build = scratch_project.inv("build-connectors", check=False)
    assert "up to date; nothing to build" in nothing_to_build.stdout
    assert nothing_to_build.returncode == 2, nothing_to_build.stderr

    fragment = connectors / "datahub-sqlite" / "requirements.txt"
    with rewritten(fragment, fragment.read_text() + "# rebuilt next to a broken directory\n"):
        rebuilt = scratch_project.inv("build-connectors", check=False)
        assert scratch_project.report()["datahub-sqlite"]["result"] == "built"
        assert rebuilt.returncode == 2, rebuilt.stderr
        assert "error: 1 connector(s) cannot be built: broken-fragment" in rebuilt.stderr
        assert scratch_project.inv("build-connectors", "--plan", check=False).returncode == 2

    lock = lock_of(connectors / "datahub-sqlite")
    with rewritten(lock, _pin_gone_from_the_index(lock.read_text())):
        failed = scratch_project.inv("build-connectors", check=False)
        assert failed.returncode == 1, failed.stderr
        assert ("error: 1 image(s) not built: datahub-sqlite; 1 connector(s) cannot be built: broken-fragment"
                in failed.stderr)
