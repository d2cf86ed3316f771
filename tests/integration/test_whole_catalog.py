"""The whole catalog, through the normal tasks, in the repository itself.

Every available connector is built (a no-op when the images are current) and passes a smoke test
that imports its own plugin; the catalog matches what the frameworks in the bases say; a connector
whose plugin does not load fails its build with the import error named and keeps its previous tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from scratch_project import REPO
from testkit import DH_VERSION, OM_VERSION

pytestmark = pytest.mark.catalog


def inv(*args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_FACTORY_")}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def whole_catalog(docker_api, python_image):
    """`inv build-connectors` over everything: the bases, then every available connector."""
    completed = inv("build-connectors")
    assert completed.returncode == 0, f"{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}"
    return completed


def test_every_available_connector_is_built_and_verified(whole_catalog):
    # The default versions' catalog (the other versions' samples are test_framework_versions.py's).
    listed = [row for version in (OM_VERSION, DH_VERSION)
              for row in json.loads(inv("list", "--json", "--version", version).stdout)]
    connectors = [row for row in listed if row["kind"] == "connector"]
    unavailable = [row for row in connectors if row["state"].startswith("unavailable")]
    stale = [f"{row['name']}: {row['state']}" for row in connectors
             if row not in unavailable and row["state"] != "up to date"]
    assert not stale, stale
    assert len(connectors) >= 111  # 98 OpenMetadata sources, 20 DataHub ones, and hand-made extras
    assert len(unavailable) <= 5, [row["name"] for row in unavailable]
    for row in unavailable:
        assert len(row["state"]) > len("unavailable: ") + 20, f"{row['name']} needs a reason a user can act on"
    assert "unavailable here, not built" in whole_catalog.stdout or not unavailable


def test_the_catalog_is_what_the_frameworks_say(whole_catalog):
    completed = inv("catalog", "--check")
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]


def test_each_image_checks_its_own_plugin(whole_catalog, docker_api):
    """The baked-in check names the connector's own source, and --check imports its source classes."""
    env = dict(e.split("=", 1) for e in docker_api.api.inspect_image(
        "openmetadata/ingestion-connector-clickhouse:latest")["Config"]["Env"])
    assert env["INGESTION_CONNECTOR"] == "clickhouse"
    assert "metadata.ingestion.source.database.clickhouse.metadata" in env["INGESTION_CHECK_MODULES"]
    output = docker_api.containers.run("openmetadata/ingestion-connector-clickhouse:latest",
                                       ["python", "main.py", "--check"], network_mode="none", remove=True)
    assert b"ClickhouseSource" in output


def test_a_noop_build_of_the_whole_catalog_is_fast(whole_catalog):
    completed = inv("build-connectors")
    assert completed.returncode == 0
    assert "nothing to build" in completed.stdout


def test_compiled_drivers_load_and_leave_no_compiler_behind(whole_catalog, docker_api):
    """doris, impala and oracle compile sdists in a build stage: the final image has the driver and
    its Debian library, not the compiler or the headers."""
    for name, module in (("doris", "MySQLdb"), ("impala", "kerberos"), ("oracle", "cx_Oracle")):
        output = docker_api.containers.run(
            f"openmetadata/ingestion-connector-{name}:latest",
            ["sh", "-c", f"python -c 'import {module}' && echo imported; "
                         "command -v gcc cc || echo no-compiler; ls /usr/include/python3.11 2>/dev/null || echo no-headers"],
            entrypoint=[], network_mode="none", remove=True).decode()
        assert output.split() == ["imported", "no-compiler", "no-headers"], (name, output)
