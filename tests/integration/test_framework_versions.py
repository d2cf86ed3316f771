"""Several OpenMetadata versions side by side, in the repository itself: the other supported versions' bases
and a sample of their connectors build and pass their smoke tests and SBOM checks, and the three `mysql`
images run next to each other, each reporting its own framework version.

The default version's whole catalog is test_whole_catalog.py's; here only the samples (the time budget).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from scratch_project import REPO
from testkit import OM_OTHER_VERSIONS, OM_VERSION, OM_VERSIONS, free_port

from ingestion_factory.engine.docker_engine import read_files

pytestmark = pytest.mark.catalog

SAMPLES = ("mysql", "postgres", "snowflake", "kafka", "tableau", "sample-data")
SBOM_PATH = "/opt/ingestion-factory/sbom.cdx.json"
NAMESPACE = "openmetadata"  # the repository's own, as test_whole_catalog builds it


def inv(*args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_FACTORY_")}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def image(name: str, version: str) -> str:
    return f"{NAMESPACE}/ingestion-connector-{name}:{version}"


@pytest.fixture(scope="module")
def samples(docker_api, python_image):
    """Each supported version's base and samples (the default's too, a no-op after the whole catalog)."""
    args = [arg for name in SAMPLES for arg in ("-c", name)]
    for version in OM_VERSIONS:
        completed = inv("build-connectors", "--version", version, *args)
        assert completed.returncode == 0, f"{version}:\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}"
    return SAMPLES


def run(api, ref: str, command: list[str], env: dict | None = None) -> tuple[int, str, dict]:
    """Run a container to its end: exit code, output, and main.py's JSON summary (its last line)."""
    container = api.containers.run(ref, command, environment=env or {}, network_mode="host", detach=True)
    try:
        code = container.wait(timeout=300)["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return code, output, json.loads(stdout.strip().splitlines()[-1])


def mysql_config(server: str) -> dict:
    config = json.loads((REPO / "examples" / "openmetadata" / "mysql.json").read_text())
    config["source"]["serviceConnection"]["config"]["authType"]["password"] = "not-a-real-password"
    config["workflowConfig"]["openMetadataServerConfig"]["hostPort"] = server
    config["workflowConfig"]["openMetadataServerConfig"]["securityConfig"]["jwtToken"] = "eyJhbGciOiJIUzI1NiJ9.e30.x"
    return config


def test_every_version_has_its_base_and_samples_built_and_verified(samples):
    for version in OM_VERSIONS:
        listed = json.loads(inv("list", "--json", "--version", version).stdout)
        rows = {row["name"]: row for row in listed if row["framework"] == "openmetadata"}
        assert rows["base"]["state"] == "up to date", (version, rows["base"])
        for name in samples:
            assert rows[name]["version"] == version
            assert rows[name]["state"] == "up to date", (version, rows[name])


def test_only_the_default_version_carries_latest_and_the_commit_tag(samples, docker_api):
    default_tags = docker_api.api.inspect_image(image("mysql", OM_VERSION))["RepoTags"]
    assert f"{NAMESPACE}/ingestion-connector-mysql:latest" in default_tags
    for version in OM_OTHER_VERSIONS:
        tags = [t for t in docker_api.api.inspect_image(image("mysql", version))["RepoTags"]
                if t.startswith(f"{NAMESPACE}/ingestion-connector-mysql:")]
        assert tags == [image("mysql", version)], (version, tags)


def test_each_image_carries_its_own_framework_and_lock(samples, docker_api):
    for version in OM_VERSIONS:
        labels = docker_api.api.inspect_image(image("mysql", version))["Config"]["Labels"]
        assert labels["io.ingestion-factory.framework-version"] == version
        output = docker_api.containers.run(image("mysql", version), [
            "python", "-c", "import importlib.metadata as m; print(m.version('openmetadata-ingestion'))"],
            entrypoint=[], network_mode="none", remove=True).decode().strip()
        assert output == version
        # What the factory resolved differently from a plain pip install is named in the SBOM.
        # Read through the archive API: a container's log stream can end before a large file's last chunk.
        sbom = json.loads(read_files(docker_api, image("mysql", version), [SBOM_PATH])[SBOM_PATH] or b"")
        names = {p["name"] for p in sbom["metadata"].get("properties", [])}
        resolution = json.loads(labels.get("io.ingestion-factory.resolution", "{}"))
        assert names == {f"ingestion-factory:{key}" for key in resolution}, (version, names, resolution)
        if version != "1.12.14.2":  # 1.13 and 2.0 install without dbt-core-experimental-parser
            assert any("dbt-core-experimental-parser" in line for line in resolution["overrides"])


def test_the_three_mysql_images_run_side_by_side(samples, docker_api):
    server = f"http://127.0.0.1:{free_port()}/api"
    config = json.dumps(mysql_config(server))
    for version in OM_VERSIONS:
        ref = image("mysql", version)
        code, output, summary = run(docker_api, ref, ["python", "main.py", "--check"])
        assert code == 0, output[-3000:]
        assert summary["framework_version"] == version, summary
        assert "MysqlSource" in output

        code, output, summary = run(docker_api, ref, ["python", "main.py", "--validate"], {"config": config})
        assert code == 0, output[-3000:]
        assert (summary["mode"], summary["framework_version"]) == ("validate", version), summary

        code, output, summary = run(docker_api, ref, ["python", "main.py"], {"config": config})
        assert code == 1, output[-3000:]
        assert summary["framework_version"] == version
        assert summary["reason"] == f"OpenMetadata server {server} is unreachable: connection refused", summary
