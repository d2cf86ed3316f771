"""Connector containers at run time, the way an orchestrator runs them.

The seed's DockerOperator contract: `python main.py` on the host network, the
config in env `config`. Freshly built images are checked for the documented
exit codes (0 ok, 1 workflow failed, 2 config, 3 plugin missing, 143 stopped),
the one-line JSON summary as the last stdout line in every case, every way a
config can come in or go wrong, stop signals, the termination log, and
secrets kept out of the output.

Anything network is on 127.0.0.1: the test PostgreSQL, and servers the tests
run themselves (one that never answers, ports where nothing listens).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
import pytest
import requests
import yaml
from scratch_project import REPO
from testkit import DH_VERSION, OM_VERSION, free_port

from ingestion_factory.workflows import metadata_file

OPENMETADATA_CONNECTORS = ("sample-data", "mysql", "postgres", "mssql", "snowflake", "bigquery", "redshift",
                           "kafka", "tableau")
DATAHUB_POSTGRES = "datahub-postgres"
OPENMETADATA_POSTGRES = "postgres"

# Docker sends SIGKILL this long after SIGTERM; main.py must be gone before.
DOCKER_STOP_TIMEOUT_S = 10
# Linux's MAX_ARG_STRLEN: the longest single "NAME=value" environment string execve accepts.
MAX_ENV_STRING_BYTES = 128 * 1024

# Distinctive, so a leak into the output is unmistakable.
CONFIG_PASSWORD = "Matrix-Secret-4f1c9a77"
JWT_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWN0b3J5LXRlc3QifQ.c2lnbmF0dXJlLWZvci10ZXN0cw"
SECRETS = (CONFIG_PASSWORD, JWT_TOKEN)

STATUS_BY_EXIT_CODE = {0: "success", 1: "failed", 2: "config_error", 3: "missing_plugin", 143: "stopped"}
SUMMARY_KEYS = ("status", "exit_code", "framework", "connector", "mode", "records", "warnings", "failures",
                "duration_s")


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="session")
def connector_images(factory_project):
    """Every OpenMetadata connector and datahub-postgres, built in the test namespace and smoke-tested.

    One build at a time (--jobs 1): the machine is small and shared. With a warm
    BuildKit cache this takes a few minutes; images another module built are skipped.
    """
    args = ["build-connectors", "--jobs", "1"]
    for name in (*OPENMETADATA_CONNECTORS, DATAHUB_POSTGRES):
        args += ["-c", name]
    factory_project.inv(*args)
    return factory_project


def ref(project, name: str) -> str:
    return project.ref(name, DH_VERSION if name.startswith("datahub-") else OM_VERSION)


# ----------------------------------------------------------------------- containers


@dataclass
class Finished:
    """A container that ran to its end: exit code, its two streams, wall time."""

    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def summary(self) -> dict:
        """The last stdout line, parsed, after checking it is the documented summary."""
        lines = self.stdout.splitlines()
        assert lines, f"nothing on stdout (exit {self.exit_code}); stderr:\n{self.stderr[-3000:]}"
        try:
            summary = json.loads(lines[-1])
        except ValueError:
            pytest.fail(f"the last stdout line is not the JSON summary: {lines[-1]!r}\n"
                        f"--- stdout tail\n{self.stdout[-3000:]}", pytrace=False)
        missing = [key for key in SUMMARY_KEYS if key not in summary]
        assert not missing, f"summary lacks {missing}: {summary}"
        assert summary["exit_code"] == self.exit_code, (summary, self.stdout[-3000:])
        assert summary["status"] == STATUS_BY_EXIT_CODE[self.exit_code], summary
        assert ("reason" in summary) == (self.exit_code != 0), summary
        return summary

    def assert_no_secrets(self, *secrets: str) -> None:
        for secret in secrets or SECRETS:
            assert secret not in self.output, f"secret {secret[:4]}... leaked into the container output"


def mounts_for(files: dict[str, Path], read_only: bool = True) -> dict:
    """{container path: host path} as docker SDK volumes."""
    mode = "ro" if read_only else "rw"
    return {str(host): {"bind": container, "mode": mode} for container, host in files.items()}


def start(api, image: str, command=None, *, env: dict | None = None, volumes: dict | None = None,
          network_mode: str = "host"):
    return api.containers.run(image, command, environment=env or {}, volumes=volumes or {},
                              network_mode=network_mode, detach=True)


def finish(container, started: float, timeout: float = 240) -> Finished:
    try:
        status = container.wait(timeout=timeout)
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        container.kill()
        tail = container.logs().decode(errors="replace")[-3000:]
        pytest.fail(f"container still running after {timeout}s:\n{tail}", pytrace=False)
    seconds = time.monotonic() - started
    stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
    stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    return Finished(status["StatusCode"], stdout, stderr, seconds)


def run(api, image: str, command=None, **options) -> Finished:
    """Run a container to its end and remove it."""
    started = time.monotonic()
    container = start(api, image, command, **options)
    try:
        return finish(container, started)
    finally:
        container.remove(force=True)


# ------------------------------------------------------------------------- servers


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a hung server.

    `accepted` is set once a client connected, so a test knows the container is
    blocked waiting for an answer before it sends a signal.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.accepted = threading.Event()
        self._closing = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)  # held open, never read or answered
            self.accepted.set()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        for connection in [*self._connections, self._listener]:
            connection.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


# ------------------------------------------------------------------------- configs


def datahub_recipe(*, host_port: str = "127.0.0.1:5432", database: str = "factory_demo",
                   username: str = "factory_reader", password: str = CONFIG_PASSWORD,
                   output: str = "/opt/operator/output/metadata.json", source_type: str = "postgres") -> dict:
    return {
        "source": {"type": source_type, "config": {
            "host_port": host_port, "database": database, "username": username, "password": password,
            "include_tables": True, "include_views": True,
        }},
        "sink": {"type": "file", "config": {"filename": output}},
    }


def openmetadata_config(server: str, *, password: str = CONFIG_PASSWORD) -> dict:
    """The seed's OpenMetadata PostgreSQL workflow; its server is whatever the test points it at."""
    return {
        "source": {
            "type": "postgres",
            "serviceName": "factory_test_postgres",
            "serviceConnection": {"config": {
                "type": "Postgres", "hostPort": "127.0.0.1:5432", "database": "factory_demo",
                "username": "factory_reader", "authType": {"password": password},
            }},
            "sourceConfig": {"config": {"type": "DatabaseMetadata", "includeViews": True}},
        },
        "sink": {"type": "metadata-rest", "config": {}},
        "workflowConfig": {
            "loggerLevel": "INFO",
            "openMetadataServerConfig": {
                "hostPort": server, "authProvider": "openmetadata", "securityConfig": {"jwtToken": JWT_TOKEN},
            },
        },
    }


def unreachable_server() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


@pytest.fixture
def output_dir(tmp_path) -> Path:
    """A folder the container user (uid 1000) can write to, mounted at /opt/operator/output."""
    folder = tmp_path / "output"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


@pytest.fixture
def termination_log(tmp_path) -> Path:
    """An empty file, writable by uid 1000, to bind-mount at /dev/termination-log."""
    path = tmp_path / "termination-log"
    path.touch()
    path.chmod(0o666)
    return path


# ------------------------------------------------------------------- build + check


def test_every_image_builds_and_passes_its_smoke_test(connector_images):
    """Under its version tag an image has passed `python main.py --check` (tags move only after it)."""
    results = connector_images.report()
    for name in (*OPENMETADATA_CONNECTORS, DATAHUB_POSTGRES):
        assert results[name]["result"] in ("built", "up to date"), results[name]


@pytest.mark.parametrize("name", [*OPENMETADATA_CONNECTORS, DATAHUB_POSTGRES])
def test_check_imports_framework_and_plugin_without_a_network(connector_images, docker_api, name):
    finished = run(docker_api, ref(connector_images, name), ["python", "main.py", "--check"], network_mode="none")

    assert finished.exit_code == 0, finished.stdout[-3000:]
    summary = finished.summary
    source = "postgres" if name == DATAHUB_POSTGRES else name
    assert summary["mode"] == "check" and summary["connector"] == source
    assert summary["framework"] == ("datahub" if name == DATAHUB_POSTGRES else "openmetadata")
    assert f"ok      connector {source}" in finished.stdout
    assert "MISSING" not in finished.stdout


# ------------------------------------------------------------- DataHub, real run


@pytest.mark.postgres
def test_datahub_postgres_ingestion_writes_tables_views_and_columns(connector_images, docker_api, postgres_database,
                                                                   output_dir, termination_log):
    db = postgres_database
    recipe = datahub_recipe(host_port=f"{db.host}:{db.port}", database=db.database, username=db.user,
                            password=db.password, output="/opt/operator/output/postgres.json")

    finished = run(docker_api, ref(connector_images, DATAHUB_POSTGRES), ["python", "main.py"],
                   env={"config": json.dumps(recipe)},
                   volumes={**mounts_for({"/opt/operator/output": output_dir}, read_only=False),
                            **mounts_for({"/dev/termination-log": termination_log}, read_only=False)})

    assert finished.exit_code == 0, finished.stdout[-3000:]
    written = metadata_file.summarize(output_dir / "postgres.json")
    assert set(db.tables) <= set(written.tables)
    assert set(db.views) <= set(written.views)
    assert written.columns_of("factory_demo.sales.orders") == ["amount", "customer_id", "order_id", "ordered_at"]
    assert written.columns_of("factory_demo.sales.customers") == ["country", "customer_id", "full_name"]
    assert written.columns_of("factory_demo.public.inventory") == ["in_stock", "sku"]
    assert written.columns_of("factory_demo.sales.revenue_by_country") == ["country", "revenue"]
    summary = finished.summary
    assert (summary["framework"], summary["connector"], summary["mode"]) == ("datahub", "postgres", "run")
    assert summary["records"] == written.records and summary["failures"] == 0
    finished.assert_no_secrets(db.password)
    assert termination_log.read_text() == "", "a successful run must leave the termination log alone"


@pytest.mark.postgres
def test_datahub_wrong_password_exits_1_with_the_reason(connector_images, docker_api, postgres_database, output_dir,
                                                        termination_log):
    db = postgres_database
    wrong = "Wrong-" + CONFIG_PASSWORD
    recipe = datahub_recipe(host_port=f"{db.host}:{db.port}", database=db.database, username=db.user,
                            password=wrong)

    finished = run(docker_api, ref(connector_images, DATAHUB_POSTGRES), env={"config": json.dumps(recipe)},
                   volumes={**mounts_for({"/opt/operator/output": output_dir}, read_only=False),
                            **mounts_for({"/dev/termination-log": termination_log}, read_only=False)})

    assert finished.exit_code == 1, finished.stdout[-3000:]
    summary = finished.summary
    assert "password authentication failed" in summary["reason"]
    assert summary["failures"] >= 1
    finished.assert_no_secrets(wrong)
    assert termination_log.read_text().startswith("exit 1 (failed): ")
    assert "password authentication failed" in termination_log.read_text()


# ------------------------------------------------------- OpenMetadata: validate, run


def test_openmetadata_validate_accepts_a_valid_config_offline(connector_images, docker_api):
    config = openmetadata_config(unreachable_server())  # --validate never contacts it

    finished = run(docker_api, ref(connector_images, OPENMETADATA_POSTGRES), ["python", "main.py", "--validate"],
                   env={"config": json.dumps(config)}, network_mode="none")

    assert finished.exit_code == 0, finished.stdout[-3000:]
    summary = finished.summary
    assert (summary["mode"], summary["pipeline_type"]) == ("validate", "metadata")
    assert "configuration is valid for openmetadata" in finished.stdout
    finished.assert_no_secrets()


EXAMPLE_IMAGES = {"sample_data.json": "sample-data", "mysql.json": "mysql", "postgres.json": "postgres"}


@pytest.mark.parametrize("example, image", sorted(EXAMPLE_IMAGES.items()))
def test_shipped_openmetadata_examples_validate_in_their_images(connector_images, docker_api, example, image):
    """The configs in examples/openmetadata/ are valid for the framework version the images carry."""
    # Placeholders such as ${file:...} stay as text: still strings where the model wants strings.
    text = (REPO / "examples" / "openmetadata" / example).read_text()
    finished = run(docker_api, ref(connector_images, image), ["python", "main.py", "--validate"],
                   env={"config": text}, network_mode="none")
    assert finished.exit_code == 0, finished.stdout[-3000:]
    assert finished.summary["mode"] == "validate"


def _parent(config: dict, path: tuple[str, ...]) -> dict:
    for key in path[:-1]:
        config = config[key]
    return config


def _without(path: tuple[str, ...]):
    return lambda config: _parent(config, path).pop(path[-1])


def _setting(path: tuple[str, ...], value):
    return lambda config: _parent(config, path).__setitem__(path[-1], value)


CONNECTION = ("source", "serviceConnection", "config")
BROKEN_OPENMETADATA_CONFIGS = {
    "missing-username": (_without((*CONNECTION, "username")),
                         "source.serviceConnection.config.username: Field required"),
    "unknown-connection-type": (_setting((*CONNECTION, "type"), "Postgress"),
                                ("source.serviceConnection.config.type: 'Postgress' is not an OpenMetadata "
                                 "connection type")),
    "wrong-value-type": (_setting(("source", "sourceConfig", "config", "includeViews"), "sometimes"),
                         "source.sourceConfig.config.includeViews: Input should be a valid boolean"),
    "missing-server": (_without(("workflowConfig", "openMetadataServerConfig", "hostPort")),
                       "workflowConfig.openMetadataServerConfig.hostPort: Field required"),
}


@pytest.mark.parametrize("broken", BROKEN_OPENMETADATA_CONFIGS, ids=str)
def test_openmetadata_validate_names_the_broken_field(connector_images, docker_api, broken):
    change, expected = BROKEN_OPENMETADATA_CONFIGS[broken]
    config = openmetadata_config(unreachable_server())
    change(config)

    finished = run(docker_api, ref(connector_images, OPENMETADATA_POSTGRES), ["python", "main.py", "--validate"],
                   env={"config": json.dumps(config)}, network_mode="none")

    assert finished.exit_code == 2, finished.stdout[-3000:]
    assert finished.summary["reason"].startswith(f"invalid configuration: {expected}"), finished.summary
    finished.assert_no_secrets()


def test_openmetadata_run_against_a_refused_server_exits_1_promptly(connector_images, docker_api):
    server = unreachable_server()

    finished = run(docker_api, ref(connector_images, OPENMETADATA_POSTGRES),
                   env={"config": json.dumps(openmetadata_config(server))})

    assert finished.exit_code == 1, finished.stdout[-3000:]
    summary = finished.summary
    assert summary["reason"] == f"OpenMetadata server {server} is unreachable: connection refused"
    assert summary["duration_s"] < 15 and finished.seconds < 30, (summary, finished.seconds)
    finished.assert_no_secrets()


def test_openmetadata_run_against_a_silent_server_gives_up_after_the_probe_timeout(connector_images, docker_api,
                                                                                   silent_server):
    server = f"http://127.0.0.1:{silent_server.port}/api"

    finished = run(docker_api, ref(connector_images, OPENMETADATA_POSTGRES),
                   env={"config": json.dumps(openmetadata_config(server)), "INGESTION_SERVER_TIMEOUT": "3"})

    assert finished.exit_code == 1, finished.stdout[-3000:]
    summary = finished.summary
    assert summary["reason"] == f"OpenMetadata server {server} is unreachable: no answer within 3s"
    assert silent_server.accepted.is_set()
    # Without the probe the framework's client would wait minutes; here: import time + 3 s.
    assert 3 <= summary["duration_s"] < 3 + 15, summary
    finished.assert_no_secrets()


# ------------------------------------------------------------------ bad input matrix


def _json_error_position(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"(line {exc.lineno}, column {exc.colno})"
    raise AssertionError("the broken JSON parses")


def _yaml_error(text: str) -> str:
    try:
        yaml.load(text, Loader=yaml.CSafeLoader)  # the loader the runtime uses (libyaml), so the same words
    except yaml.YAMLError as exc:
        return f"{exc.problem} (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})"
    raise AssertionError("the broken YAML parses")


RECIPE_TEXT = json.dumps(datahub_recipe(), indent=2)
# Never contacted: every case using it ends before the server probe.
OPENMETADATA_TEXT = json.dumps(openmetadata_config("http://127.0.0.1:8585/api"))
# A trailing comma after the password: the position must point at it.
BROKEN_JSON = RECIPE_TEXT.replace(f'"{CONFIG_PASSWORD}"', f'"{CONFIG_PASSWORD}",', 1)
# A second colon in a plain value.
BROKEN_YAML = (f"source:\n  type: postgres\n  config:\n    password: {CONFIG_PASSWORD}\n"
               "    username: factory: reader\n")
MOUNTED_RECIPE = "/opt/operator/config/recipe.json"


@dataclass(frozen=True)
class BadInput:
    image: str
    exit_code: int
    reason: str  # part of the summary's reason
    env: dict = field(default_factory=dict)
    command: tuple = ("python", "main.py")
    files: dict = field(default_factory=dict)  # container path -> text, mounted read-only


BAD_INPUTS = {
    "missing-config": BadInput(DATAHUB_POSTGRES, 2, "invalid configuration: no configuration given: set env `config`"),
    "malformed-json": BadInput(
        DATAHUB_POSTGRES, 2, f"is not valid JSON: Expecting property name enclosed in double quotes "
                             f"{_json_error_position(BROKEN_JSON)}", env={"config": BROKEN_JSON}),
    "malformed-yaml": BadInput(
        DATAHUB_POSTGRES, 2, f"is not valid YAML: {_yaml_error(BROKEN_YAML)}", env={"config": BROKEN_YAML}),
    "unknown-pipeline-type": BadInput(
        OPENMETADATA_POSTGRES, 2, "pipelineType: unknown value 'metdata'; expected one of metadata,",
        env={"config": OPENMETADATA_TEXT, "pipelineType": "metdata"}),
    "openmetadata-pipeline-type-for-datahub": BadInput(
        DATAHUB_POSTGRES, 2, "pipelineType: 'profiler' is an OpenMetadata workflow type",
        env={"config": RECIPE_TEXT, "pipelineType": "profiler"}),
    "both-text-and-file": BadInput(
        DATAHUB_POSTGRES, 2, "both a config text (env `config`) and a config file (env `config_file`) were given",
        env={"config": RECIPE_TEXT, "config_file": MOUNTED_RECIPE}, files={MOUNTED_RECIPE: RECIPE_TEXT}),
    "config-file-not-mounted": BadInput(
        DATAHUB_POSTGRES, 2, "config file /opt/operator/config/absent.json does not exist (is the volume mounted?)",
        command=("python", "main.py", "--config", "/opt/operator/config/absent.json")),
    "bad-command-line": BadInput(
        DATAHUB_POSTGRES, 2, "invalid command line: unrecognized arguments: --dry-run",
        env={"config": RECIPE_TEXT}, command=("python", "main.py", "--dry-run")),
    "recipe-for-another-connector": BadInput(
        DATAHUB_POSTGRES, 3, "DataHub source plugin 'mysql' cannot be loaded",
        env={"config": json.dumps(datahub_recipe(source_type="mysql"))}),
    "pipeline-type-missing-from-the-framework": BadInput(
        OPENMETADATA_POSTGRES, 3, "pipelineType dataInsight needs metadata.workflow.data_insight",
        env={"config": OPENMETADATA_TEXT, "pipelineType": "dataInsight"}),
    "unknown-framework": BadInput(
        DATAHUB_POSTGRES, 3, "INGESTION_FRAMEWORK='nifi' is not supported by this runtime",
        env={"config": RECIPE_TEXT, "INGESTION_FRAMEWORK": "nifi"}),
    "check-module-missing": BadInput(
        DATAHUB_POSTGRES, 3, "cannot import no_such_plugin_module",
        env={"INGESTION_CHECK_MODULES": "psycopg2,no_such_plugin_module"}, command=("python", "main.py", "--check")),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
def test_bad_input_ends_with_its_exit_code_and_a_summary(connector_images, docker_api, tmp_path, case):
    bad = BAD_INPUTS[case]
    files = {}
    for container_path, text in bad.files.items():
        host = tmp_path / Path(container_path).name
        host.write_text(text)
        files[container_path] = host

    finished = run(docker_api, ref(connector_images, bad.image), list(bad.command), env=bad.env,
                   volumes=mounts_for(files))

    assert finished.exit_code == bad.exit_code, finished.stdout[-3000:]
    assert bad.reason in finished.summary["reason"], finished.summary
    # The reason is also logged, for people reading the task log rather than XCom.
    assert bad.reason in "\n".join(finished.stdout.splitlines()[:-1])
    finished.assert_no_secrets()


# ---------------------------------------------------------------- termination log


@pytest.mark.parametrize("writable", [True, False], ids=["writable", "read-only"])
def test_termination_log_gets_the_reason_when_writable(connector_images, docker_api, termination_log, writable):
    finished = run(docker_api, ref(connector_images, DATAHUB_POSTGRES), env={"config": BROKEN_JSON},
                   volumes=mounts_for({"/dev/termination-log": termination_log}, read_only=not writable))

    assert finished.exit_code == 2
    reason = finished.summary["reason"]
    if writable:
        assert termination_log.read_text() == f"exit 2 (config_error): {reason}\n"
    else:  # nothing to write to is no error: same exit code, same summary
        assert termination_log.read_text() == ""
    finished.assert_no_secrets()


# ------------------------------------------------------------------- config size


def large_recipe(**connection) -> dict:
    """A real recipe over 128 KiB: thousands of deny patterns (none matches the demo tables)."""
    recipe = datahub_recipe(output="/opt/operator/output/large.json", **connection)
    recipe["source"]["config"]["table_pattern"] = {
        "deny": [f"^factory_demo\\.archive\\.table_{number:05d}$" for number in range(5000)],
    }
    return recipe


def test_config_text_over_128_kib_cannot_reach_the_process(connector_images, docker_api):
    """Linux refuses an environment string over 128 KiB: the container's first exec fails, main.py never runs.

    Docker 20.10 starts the container and it exits 1 at once with "exec ...: argument
    list too long" in its log; other engine versions may refuse to start it instead.
    Either way there is no summary: the remedy is a mounted file (next test).
    """
    text = json.dumps(large_recipe())
    assert len(f"config={text}".encode()) + 1 > MAX_ENV_STRING_BYTES

    try:
        finished = run(docker_api, ref(connector_images, DATAHUB_POSTGRES), env={"config": text})
    except docker.errors.APIError as exc:
        assert "argument list too long" in str(exc)
        return
    assert finished.exit_code != 0
    assert "argument list too long" in finished.output
    assert '"exit_code"' not in finished.output  # main.py never started
    finished.assert_no_secrets()


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["env config_file", "--config"])
def test_large_config_as_a_mounted_file_runs(connector_images, docker_api, postgres_database, tmp_path, output_dir,
                                             how):
    db = postgres_database
    config = tmp_path / "large.json"
    config.write_text(json.dumps(large_recipe(host_port=f"{db.host}:{db.port}", database=db.database,
                                              username=db.user, password=db.password)))
    assert config.stat().st_size > MAX_ENV_STRING_BYTES
    mounted = "/opt/operator/config/large.json"
    if how == "--config":
        env, command = {}, ["python", "main.py", "--config", mounted]
    else:
        env, command = {"config_file": mounted}, ["python", "main.py"]

    finished = run(docker_api, ref(connector_images, DATAHUB_POSTGRES), command, env=env,
                   volumes={**mounts_for({mounted: config}),
                            **mounts_for({"/opt/operator/output": output_dir}, read_only=False)})

    assert finished.exit_code == 0, finished.stdout[-3000:]
    assert finished.summary["records"] > 0
    assert set(db.tables) <= set(metadata_file.summarize(output_dir / "large.json").tables)
    finished.assert_no_secrets(db.password)


# ------------------------------------------------------------------- stop signals


def stop_while_blocked(api, image: str, env: dict, server: SilentServer, *, signal_name: str = "SIGTERM"):
    """Start a run, wait until it hangs on the silent server, send the signal; (Finished, seconds to exit)."""
    started = time.monotonic()
    container = start(api, image, env=env)
    try:
        if not server.accepted.wait(timeout=120):
            container.kill()
            pytest.fail(f"the run never connected to the silent server:\n{container.logs().decode()[-3000:]}",
                        pytrace=False)
        time.sleep(0.5)  # let it settle into the blocking call
        signalled = time.monotonic()
        if signal_name == "SIGTERM":
            container.stop(timeout=DOCKER_STOP_TIMEOUT_S)  # what `docker stop` and Airflow's on_kill do
        else:
            container.kill(signal=signal_name)
        finished = finish(container, started, timeout=30)
        return finished, time.monotonic() - signalled
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_stop_signal_while_waiting_for_the_server_exits_143_at_once(connector_images, docker_api, silent_server,
                                                                     signal_name):
    """OpenMetadata waiting on its server probe: the signal handler interrupts the wait."""
    config = openmetadata_config(f"http://127.0.0.1:{silent_server.port}/api")

    finished, seconds = stop_while_blocked(
        docker_api, ref(connector_images, OPENMETADATA_POSTGRES),
        {"config": json.dumps(config), "INGESTION_SERVER_TIMEOUT": "120"}, silent_server, signal_name=signal_name)

    assert finished.exit_code == 143, finished.stdout[-3000:]
    assert seconds < 3, f"took {seconds:.1f}s to stop"
    assert finished.summary["reason"] == f"stopped by {signal_name}"
    finished.assert_no_secrets()


def test_sigterm_while_a_driver_blocks_in_c_exits_143_before_docker_kills(connector_images, docker_api,
                                                                          silent_server):
    """DataHub's PostgreSQL source stuck in libpq's connect: Python's handler cannot run.

    The stop deadline (INGESTION_STOP_GRACE, default 6 s) writes the summary and
    exits 143 before Docker's SIGKILL at 10 s, which would make it 137.
    """
    recipe = datahub_recipe(host_port=f"127.0.0.1:{silent_server.port}")

    finished, seconds = stop_while_blocked(docker_api, ref(connector_images, DATAHUB_POSTGRES),
                                           {"config": json.dumps(recipe)}, silent_server)

    assert finished.exit_code == 143, finished.stdout[-3000:]
    assert seconds < DOCKER_STOP_TIMEOUT_S - 2, f"took {seconds:.1f}s to stop"
    assert finished.summary["reason"] == "stopped by SIGTERM; the workflow did not wind down within 6s"
    finished.assert_no_secrets()


# ---------------------------------------------------------- many stops, real framework


class HandshakeServer:
    """An OpenMetadata server on 127.0.0.1 that answers the handshake, then holds every other request.

    The runtime's probe and the client's version check get answers, so workflow
    creation goes on into OpenMetadata's own code and blocks there, waiting for
    the first real API call. `release()` answers the held requests and every later
    one at once with 404 (what a server going away with the deployment does to a
    workflow): a run that missed its stop then fails within a second instead of
    waiting for the stop deadline, so a lost stop shows as exit 1.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.holding = threading.Event()
        self._released = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                server.requests += 1
                if self.path.endswith("/system/version"):
                    self._answer(200, {"version": OM_VERSION, "revision": "test", "timestamp": 0})
                elif self.path.rstrip("/").endswith("/api"):
                    self._answer(200, {})
                else:
                    server.holding.set()
                    server._released.wait()
                    self._answer(404, {"code": 404, "message": "gone"})

            do_POST = do_PUT = do_PATCH = do_GET

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                with contextlib.suppress(OSError):  # the stopped container's connection may be gone
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api"
        threading.Thread(target=self._server.serve_forever, name="handshake-server", daemon=True).start()

    def hold(self) -> None:
        """Hold requests again (for the next container)."""
        self.requests = 0
        self.holding.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def handshake_server():
    server = HandshakeServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def mysql_image(factory_project):
    """Only the mysql image and its base: the many-stops test needs no other connector."""
    factory_project.inv("build-connectors", "--jobs", "1", "-c", "mysql")
    return ref(factory_project, "mysql")


def openmetadata_mysql_config(server: str) -> dict:
    """examples/openmetadata/mysql.json with real-looking secrets and its server at `server`."""
    config = json.loads((REPO / "examples" / "openmetadata" / "mysql.json").read_text())
    config["source"]["serviceConnection"]["config"].update(hostPort=f"127.0.0.1:{free_port()}",
                                                           authType={"password": CONFIG_PASSWORD})
    config["workflowConfig"]["openMetadataServerConfig"].update(hostPort=server,
                                                               securityConfig={"jwtToken": JWT_TOKEN})
    return config


@dataclass(frozen=True)
class Stop:
    """One `docker stop` at `delay_s` after the container started, and how the container ended."""

    delay_s: float
    phase: str
    exit_code: int
    seconds: float  # from `docker stop` to the container's exit
    status: str | None  # the summary's, None when main.py printed nothing at all
    reason: str | None

    @property
    def ok(self) -> bool:
        # Only a stop before main.py's first instant (the interpreter starting) may leave no summary.
        return (self.exit_code == 143 and self.seconds < DOCKER_STOP_TIMEOUT_S - 2
                and (self.status == "stopped" or (self.status is None and self.phase == "start-up")))

    def __str__(self) -> str:
        return (f"stop at {self.delay_s:5.2f}s ({self.phase:<20}) -> exit {self.exit_code} in {self.seconds:4.2f}s, "
                f"{self.status}: {self.reason}")


def stop_after(api, image: str, env: dict, server: HandshakeServer, delay_s: float | None) -> Stop:
    """Start a run, `docker stop` it after delay_s (None: once it blocks in the framework), release the server."""
    server.hold()
    started = time.monotonic()
    container = start(api, image, env=env)
    try:
        if delay_s is None:
            assert server.holding.wait(timeout=120), container.logs().decode()[-3000:]
            delay_s = time.monotonic() - started
        else:
            time.sleep(max(0.0, delay_s - (time.monotonic() - started)))
        phase = ("blocked in framework" if server.holding.is_set() else
                 "creating workflow" if server.requests else "start-up")
        signalled, stopped = time.monotonic(), []
        stopping = threading.Thread(target=lambda: (container.stop(timeout=DOCKER_STOP_TIMEOUT_S),
                                                    stopped.append(time.monotonic())))
        stopping.start()
        time.sleep(0.2)  # the signal is in; whatever the workflow asks the server now fails at once
        server.release()
        stopping.join()
        seconds = stopped[0] - signalled
        finished = finish(container, started, timeout=30)
        finished.assert_no_secrets()
        if not finished.stdout.strip():
            return Stop(delay_s, phase, finished.exit_code, seconds, None, None)
        summary = json.loads(finished.stdout.splitlines()[-1])
        return Stop(delay_s, phase, finished.exit_code, seconds, summary["status"], summary.get("reason"))
    finally:
        container.remove(force=True)


STOPS = 21  # one once the run blocks in the framework, twenty spread from the start to a little after
# A stop in the container's first instant can be lost before main.py even exists (seen once in about sixty
# stops at 0 s; dumb-init signals the child's process group, which the child creates as it starts).
# main.py cannot help that, so the spread starts a little later.
FIRST_STOP_S = 0.25


def test_every_stop_during_start_up_and_run_exits_143_well_before_docker_kills(mysql_image, docker_api,
                                                                              handshake_server):
    """Many `docker stop`s spread over an OpenMetadata run, from the interpreter starting to the workflow
    blocked in the framework's HTTP client: every one must end 143 / `stopped`, whatever the framework does
    with the StopRequested (pydantic-core, for one, can swallow it while validating)."""
    env = {"config": json.dumps(openmetadata_mysql_config(handshake_server.url))}
    # How long this machine, busy as it is, takes to get the workflow into the framework's code.
    first = stop_after(docker_api, mysql_image, env, handshake_server, None)
    earliest, latest = FIRST_STOP_S, first.delay_s + 1.5
    stops = [first] + [stop_after(docker_api, mysql_image, env, handshake_server,
                                  earliest + (latest - earliest) * index / (STOPS - 2)) for index in range(STOPS - 1)]

    report = "\n".join(str(stop) for stop in stops)
    print(f"\n{report}")
    assert all(stop.ok for stop in stops), report
    phases = {stop.phase for stop in stops}
    assert {"start-up", "blocked in framework"} <= phases, f"the stops did not cover start-up and run:\n{report}"
