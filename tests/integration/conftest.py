"""Integration fixtures: a real Docker engine, a scratch copy of the project, cleanup of test images.

Every test here is marked `docker`. Without an engine the tests fail in CI
(CI=true) and are skipped elsewhere with a message saying how to get one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from scratch_project import (  # noqa: F401
    REPO,
    TEST_NAMESPACE,
    Project,
    copy_project,
    remove_namespace_images,
    remove_tags_under,
    scratch_projects,
)
from testkit import free_port


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.docker)


def _engine_problem() -> str | None:
    sys.path.insert(0, str(REPO))
    from ingestion_factory.engine import buildkit
    from ingestion_factory.engine import daemon as engine
    from ingestion_factory.errors import FactoryError

    try:
        engine.client()
        buildkit.find_cli()
    except FactoryError as exc:
        return exc.render()
    return None


@pytest.fixture(scope="session")
def docker_api():
    problem = _engine_problem()
    if problem:
        message = f"integration tests need a Docker engine with BuildKit:\n{problem}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from ingestion_factory.engine import daemon as engine

    return engine.client()


@pytest.fixture(scope="session")
def python_image(docker_api):
    """The Python image every base starts FROM; built by scripts/provision.sh (`inv python-image`) or pulled."""
    from ingestion_factory import settings as settings_mod

    name = settings_mod.pyproject_defaults(REPO)["python_image"]
    try:
        docker_api.images.get(name)
    except Exception:
        try:
            docker_api.images.pull(name)
        except Exception:
            pytest.fail(f"Python image {name} is missing and cannot be pulled; run `inv python-image`",
                        pytrace=False)
    return name


@pytest.fixture(scope="session")
def factory_project(tmp_path_factory, docker_api, python_image):
    """One scratch project shared by the tests that only need images built (builds are the slow part)."""
    yield from scratch_projects(tmp_path_factory, docker_api, "project")


@pytest.fixture
def scratch_project(tmp_path, docker_api, python_image):
    """A project of its own for a test that changes images/; its images are removed afterwards."""
    namespace = f"{TEST_NAMESPACE}{uuid.uuid4().hex[:6]}"
    project = copy_project(tmp_path / "project", namespace)
    yield project
    remove_namespace_images(docker_api, namespace)


# --- local registries for `inv push` (Debian package docker-registry) ------------------------------


class LocalRegistry:
    """A docker-registry server on 127.0.0.1 (plain HTTP, which the daemon allows for 127.0.0.0/8)."""

    def __init__(self, host: str, process: subprocess.Popen, log: Path, username: str = "", password: str = ""):
        self.host = host
        self.process = process
        self.log = log
        self.username = username
        self.password = password

    @property
    def auth(self):
        return (self.username, self.password) if self.username else None

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Docker-Content-Digest of a tag, read straight from the registry (None when absent)."""
        import requests

        response = requests.get(
            f"http://{self.host}/v2/{repository}/manifests/{tag}", auth=self.auth, timeout=10,
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                               "application/vnd.oci.image.manifest.v1+json"},
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]


def _start_registry(directory: Path, *, username: str = "", password: str = "") -> LocalRegistry:
    import time
    import urllib.error
    import urllib.request

    directory.mkdir(parents=True)
    host = f"127.0.0.1:{free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": host, "secret": uuid.uuid4().hex},
    }
    if username:
        htpasswd = subprocess.run(["htpasswd", "-Bbn", username, password], capture_output=True, text=True,
                                  check=True).stdout
        (directory / "htpasswd").write_text(htpasswd)
        config["auth"] = {"htpasswd": {"realm": "factory-test", "path": str(directory / "htpasswd")}}
    (directory / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = directory / "registry.log"
    with log.open("w") as sink:
        process = subprocess.Popen(["docker-registry", "serve", str(directory / "config.yml")], stdout=sink,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited {process.returncode}:\n{log.read_text()[-2000:]}", pytrace=False)
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            break
        except urllib.error.HTTPError as exc:  # 401 from the authenticated one: it is up
            if exc.code == 401:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"docker-registry on {host} did not answer /v2/ within 20s", pytrace=False)
    return LocalRegistry(host, process, log, username, password)


class Registries:
    def __init__(self, open_registry: LocalRegistry, secured: LocalRegistry):
        self.open = open_registry  # no authentication
        self.secured = secured  # htpasswd: secured.username / secured.password

    @staticmethod
    def unused_host() -> str:
        """host:port where no registry listens (for "registry down")."""
        return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def registries(tmp_path_factory, docker_api):
    """Two throwaway registries on free ports: one open, one with htpasswd auth; stopped at the end."""
    missing = [tool for tool in ("docker-registry", "htpasswd") if not shutil.which(tool)]
    if missing:
        message = (f"push tests need {' and '.join(missing)}: "
                   "`sudo apt-get install -y docker-registry apache2-utils`")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("registries")
    started = [_start_registry(root / "open")]
    try:
        started.append(_start_registry(root / "secured", username="factory",
                                       password=f"Pw-{uuid.uuid4().hex[:12]}"))
        yield Registries(*started)
    finally:
        for local in started:
            _stop_registry(local, docker_api)


@pytest.fixture
def empty_registry(registries, tmp_path, docker_api):
    """One more open registry for this test alone, holding nothing yet (a mirror)."""
    local = _start_registry(tmp_path / "empty-registry")
    yield local
    _stop_registry(local, docker_api)


@pytest.fixture(scope="module")
def lying_registry(registries, tmp_path_factory, docker_api):
    """A registry of this module's own, and a liar in front of it (lying_registry.py); the liar is returned,
    the real one is its `upstream`."""
    from lying_registry import Serving

    real = _start_registry(tmp_path_factory.mktemp("lied-to") / "registry")
    serving = Serving(real.host, free_port())
    yield serving.liar
    serving.stop()
    remove_registry_tags(docker_api, serving.liar.host)
    _stop_registry(real, docker_api)


def _stop_registry(local, docker_api) -> None:
    """Stop a registry this session started, and drop the local tags its pushes made."""
    local.process.terminate()
    try:
        local.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        local.process.kill()
    remove_registry_tags(docker_api, local.host)


def remove_registry_tags(api, host: str) -> None:
    """Local tags made for a push to a test registry (the images stay under their own tags)."""
    remove_tags_under(api, host, noprune=True)


# --- a real PostgreSQL for the run-local and Airflow tests (Debian package postgresql) --------------

POSTGRES_DEMO_SQL = """
CREATE SCHEMA IF NOT EXISTS sales;
CREATE TABLE IF NOT EXISTS sales.customers (
    customer_id integer PRIMARY KEY,
    full_name   text NOT NULL,
    country     char(2) NOT NULL
);
CREATE TABLE IF NOT EXISTS sales.orders (
    order_id    integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES sales.customers (customer_id),
    ordered_at  date NOT NULL,
    amount      numeric(10, 2) NOT NULL
);
CREATE TABLE IF NOT EXISTS public.inventory (
    sku      text PRIMARY KEY,
    in_stock integer NOT NULL
);
CREATE OR REPLACE VIEW sales.revenue_by_country AS
    SELECT c.country, sum(o.amount) AS revenue
    FROM sales.orders o JOIN sales.customers c USING (customer_id)
    GROUP BY c.country;
GRANT USAGE ON SCHEMA sales TO {user};
GRANT SELECT ON ALL TABLES IN SCHEMA sales, public TO {user};
"""


class PostgresDatabase:
    """Connection facts of the demo database."""

    host = "127.0.0.1"
    port = 5432
    # Names of their own: the server may be shared with other work on this machine.
    database = "factory_demo"
    user = "factory_reader"
    tables = ("factory_demo.public.inventory", "factory_demo.sales.customers", "factory_demo.sales.orders")
    views = ("factory_demo.sales.revenue_by_country",)

    # Fixed, so concurrent test sessions agree; distinctive, so tests can look for leaks.
    password = "pg-Secret-7c41e9d2"


def _postgres_listening(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def _as_postgres(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a command as the postgres superuser (peer authentication on the local socket)."""
    prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    return subprocess.run([*prefix, *command], input=stdin, capture_output=True, text=True, timeout=60)


def _psql(sql: str, database: str = "postgres") -> str:
    completed = _as_postgres("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, stdin=sql)
    if completed.returncode != 0:
        pytest.fail(f"psql failed: {completed.stderr.strip()}", pytrace=False)
    return completed.stdout.strip()


@pytest.fixture(scope="session")
def postgres_database():
    """A local PostgreSQL on 127.0.0.1:5432 with role `factory_reader`, database `factory_demo` (tables + a view).

    Reuses a running server; otherwise starts the Debian cluster (pg_ctlcluster, as root).
    Idempotent: safe to run against a server an earlier session prepared.
    """
    import time

    db = PostgresDatabase()
    if not _postgres_listening(db.host, db.port):
        clusters = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
        if clusters.returncode != 0 or not clusters.stdout.strip():
            message = "PostgreSQL is not running on 127.0.0.1:5432 and no Debian cluster exists (apt install postgresql)"
            pytest.fail(message, pytrace=False) if os.environ.get("CI") else pytest.skip(message)
        version, cluster = clusters.stdout.split()[:2]
        started = subprocess.run(["pg_ctlcluster", version, cluster, "start"], capture_output=True, text=True)
        deadline = time.monotonic() + 30
        while not _postgres_listening(db.host, db.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _postgres_listening(db.host, db.port):
            pytest.fail(f"PostgreSQL did not start: {started.stderr.strip()}", pytrace=False)
    _psql(f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db.user}') THEN
                CREATE ROLE {db.user} LOGIN;
            END IF;
        END $$;
        ALTER ROLE {db.user} LOGIN PASSWORD '{db.password}';
    """)
    if _psql(f"SELECT 1 FROM pg_database WHERE datname = '{db.database}'") != "1":
        _psql(f"CREATE DATABASE {db.database}")
    _psql(POSTGRES_DEMO_SQL.format(user=db.user), database=db.database)
    return db


# --- a project with examples/ and the DataHub demo images, for run-local and Airflow ----------------

RUN_LOCAL_CONNECTORS = ("datahub-sqlite", "datahub-postgres")


@pytest.fixture(scope="session")
def run_local_project(factory_project, tmp_path_factory):
    """factory_project plus a copy of examples/, its own examples link, and the DataHub demo images built.

    `Project.inv` runs with INVOKE_FACTORY_EXAMPLES_LINK set through `env`; tests pass `run_env`.
    """
    from ingestion_factory.workflows import examples as examples_mod

    destination = factory_project.root / "examples"
    if not destination.exists():
        shutil.copytree(REPO / "examples", destination, ignore=shutil.ignore_patterns(
            "output", "sample.db", "__pycache__", "*-password", "*-jwt"))
    examples_mod.ensure_sample_db(destination)
    examples_mod.ensure_output_dir(destination)
    factory_project.examples = destination
    factory_project.examples_link = tmp_path_factory.mktemp("link") / "examples"
    examples_mod.ensure_link(factory_project.examples_link, destination)
    factory_project.run_env = {"INVOKE_FACTORY_EXAMPLES_LINK": str(factory_project.examples_link)}
    args = ["build-connectors", "--jobs", "1"]
    for name in RUN_LOCAL_CONNECTORS:
        args += ["-c", name]
    factory_project.inv(*args)
    return factory_project


@pytest.fixture(scope="module")
def module_project(tmp_path_factory, docker_api, python_image):
    """A scratch project for one test module, for tests that must know exactly what was built before them."""
    yield from scratch_projects(tmp_path_factory, docker_api, "module")
