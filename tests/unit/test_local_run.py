"""run-local's pure parts: config resolution and transport, the examples folder, output summaries, stopping."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from fake_engine import FakeContainer, FakeEngine

from ingestion_factory.engine.docker_engine import DockerEngine
from ingestion_factory.errors import ConfigError, FactoryError
from ingestion_factory.settings import Settings
from ingestion_factory.workflows import examples, local_run, metadata_file, run_config

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- run_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_demo_config_has_no_secret_and_travels_in_the_environment():
    config = run_config.load(REPO / "examples" / "datahub" / "sqlite.yml", env={})

    assert config.transport == run_config.ENV_TRANSPORT
    assert json.loads(config.text)["source"]["type"] == "sqlalchemy"
    assert config.placeholders == [] and config.secret_fields == []


def test_file_placeholders_are_read_relative_to_the_config(tmp_path):
    write(tmp_path / "secrets" / "pg", "s3cret\n")
    path = write(tmp_path / "configs" / "pg.yml", "source:\n  config:\n    password: ${file:../secrets/pg}\n")

    config = run_config.load(path, env={})

    assert config.document["source"]["config"]["password"] == "s3cret"  # the trailing newline is dropped
    assert config.transport == run_config.FILE_TRANSPORT
    assert "holds secrets (password)" in config.why_file()


def test_environment_placeholders_inside_longer_strings(tmp_path):
    path = write(tmp_path / "c.json", '{"sink": {"config": {"server": "http://${HOST}:8080"}}}')

    config = run_config.load(path, env={"HOST": "datahub"})

    assert config.document["sink"]["config"]["server"] == "http://datahub:8080"
    # A placeholder alone makes the config sensitive: it exists to keep something out of the file.
    assert config.transport == run_config.FILE_TRANSPORT


def test_a_missing_placeholder_value_names_what_to_set(tmp_path):
    path = write(tmp_path / "c.yml", "a:\n  password: ${PG_PASSWORD}\n")
    with pytest.raises(ConfigError, match="needs the environment variable PG_PASSWORD") as caught:
        run_config.load(path, env={})
    assert "export PG_PASSWORD" in caught.value.hint

    write(tmp_path / "d.yml", "a:\n  password: ${file:missing}\n")
    with pytest.raises(ConfigError, match="does not exist") as caught:
        run_config.load(tmp_path / "d.yml", env={})
    assert "printf %s" in caught.value.hint


SMALL_LAUGHS = "\n".join(['a0: &a0 "lol"'] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 7)])


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("- a\n- b\n", "must be a non-empty mapping (got list)"),
    ("a: [1, 2\n", "is not valid YAML: "),
    (SMALL_LAUGHS, "uses the YAML alias *a0 (line 2, column 10)"),
    ("k: " + "[" * 10_000, "is nested more than 100 levels deep"),
    ("".join("  " * n + f"k{n}:\n" for n in range(120)) + "  " * 120 + "v: 1\n", "is nested more than 100 levels deep"),
])
def test_unusable_config_files(tmp_path, text, problem):
    # The runtime's own reader: what run-local refuses, the container would refuse too.
    with pytest.raises(ConfigError) as caught:
        run_config.load(write(tmp_path / "c.yml", text), env={})
    assert problem in caught.value.message and str(tmp_path / "c.yml") in caught.value.message


def test_unreadable_bytes_and_oversized_files_are_refused(tmp_path):
    (tmp_path / "latin1.yml").write_bytes(b"source:\n  type: caf\xe9\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text: byte 0xe9 at offset 19"):
        run_config.load(tmp_path / "latin1.yml", env={})
    write(tmp_path / "huge.json", json.dumps({"source": {"config": {"blob": "x" * (10 * 1024 * 1024)}}}))
    with pytest.raises(ConfigError, match="is larger than 4 MiB, the most a config may be"):
        run_config.load(tmp_path / "huge.json", env={})


def test_a_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run_config.load(tmp_path / "nope.yml")


def test_a_large_config_goes_as_a_file(tmp_path):
    path = write(tmp_path / "big.json", json.dumps({"source": {"config": {"blob": "x" * (101 * 1024)}}}))

    config = run_config.load(path, env={})

    assert config.transport == run_config.FILE_TRANSPORT
    assert "too large for the environment" in config.why_file()


def test_empty_secret_fields_do_not_count():
    assert run_config.secret_fields({"a": {"password": ""}, "token": None, "b": [{"apiKey": "k"}]}) == ["apiKey"]


def test_every_example_config_loads_once_its_secrets_exist(tmp_path):
    copy = tmp_path / "examples"
    shutil.copytree(REPO / "examples", copy, ignore=shutil.ignore_patterns("output", "airflow", "sample.db"))
    for name in ("postgres-password", "mysql-password", "openmetadata-jwt"):
        write(copy / "secrets" / name, "value\n")
    configs = sorted([*copy.glob("datahub/*.yml"), *copy.glob("openmetadata/*.json")])

    loaded = {path.relative_to(copy).as_posix(): run_config.load(path, env={}) for path in configs}

    assert set(loaded) >= {"datahub/sqlite.yml", "datahub/postgres.yml", "openmetadata/sample_data.json",
                           "openmetadata/postgres.json", "openmetadata/mysql.json"}
    for name, config in loaded.items():
        assert "${" not in config.text, name
        expected = run_config.ENV_TRANSPORT if name == "datahub/sqlite.yml" else run_config.FILE_TRANSPORT
        assert config.transport == expected, name
    sample = loaded["openmetadata/sample_data.json"].document
    assert sample["source"]["serviceConnection"]["config"]["connectionOptions"]["sampleDataFolder"] == \
        "/opt/operator/sample_data"
    assert sample["workflowConfig"]["openMetadataServerConfig"]["hostPort"] == "http://localhost:8585/api"


# ------------------------------------------------------------------------------ examples


def test_the_link_is_created_then_repointed(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "deep" / "openmetadata" / "examples"

    assert examples.ensure_link(link, first) is None
    assert link.resolve() == first
    assert examples.ensure_link(link, first) is None
    note = examples.ensure_link(link, second)
    assert link.resolve() == second and "now points at" in note


def test_a_real_directory_at_the_link_path_is_left_alone(tmp_path):
    (tmp_path / "examples").mkdir()
    with pytest.raises(ConfigError, match="is not a symlink") as caught:
        examples.ensure_link(tmp_path / "examples", tmp_path)
    assert "INVOKE_FACTORY_EXAMPLES_LINK" in caught.value.hint


def test_the_sample_database_is_built_from_its_script(tmp_path):
    shutil.copytree(REPO / "examples" / "sample_db", tmp_path / "sample_db", ignore=shutil.ignore_patterns("*.db"))

    database = examples.ensure_sample_db(tmp_path)

    with sqlite3.connect(database) as connection:
        objects = connection.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
        revenue = connection.execute("SELECT full_name, revenue FROM customer_revenue ORDER BY customer_id").fetchall()
    assert sorted(objects) == [("table", "customers"), ("table", "order_items"), ("table", "orders"),
                               ("table", "products"), ("view", "customer_revenue")]
    assert revenue[0] == ("Ada Lovelace", 140.0)
    assert stat.S_IMODE(database.stat().st_mode) == 0o644


def test_the_sample_database_is_rebuilt_only_when_its_script_changed(tmp_path):
    script = write(tmp_path / "sample_db" / "schema.sql", "CREATE TABLE a (x INTEGER);")
    database = examples.ensure_sample_db(tmp_path)
    built = database.stat().st_mtime_ns
    # A checkout may leave the script newer than the database: the content decides, not the time.
    os.utime(script, ns=(built + 10**9, built + 10**9))
    assert examples.ensure_sample_db(tmp_path).stat().st_mtime_ns == built

    write(script, "CREATE TABLE b (y INTEGER);")
    examples.ensure_sample_db(tmp_path)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [("b",)]


def test_a_file_that_is_not_a_database_is_replaced(tmp_path):
    write(tmp_path / "sample_db" / "schema.sql", "CREATE TABLE a (x INTEGER);")
    write(tmp_path / "sample_db" / "sample.db", "not a database")
    database = examples.ensure_sample_db(tmp_path)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [("a",)]


def test_the_committed_sample_database_matches_its_script():
    """Re-commit examples/sample_db/sample.db whenever schema.sql changes (inv run-local rebuilds it)."""
    database = REPO / "examples" / "sample_db" / "sample.db"
    script = (REPO / "examples" / "sample_db" / "schema.sql").read_text()
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == examples.script_stamp(script)


def test_a_broken_script_is_reported_and_leaves_nothing(tmp_path):
    write(tmp_path / "sample_db" / "schema.sql", "CREATE TABLE (;")
    with pytest.raises(ConfigError, match="does not build a database"):
        examples.ensure_sample_db(tmp_path)
    assert sorted(p.name for p in (tmp_path / "sample_db").iterdir()) == ["schema.sql"]


def test_no_script_no_database(tmp_path):
    assert examples.ensure_sample_db(tmp_path) is None


def test_the_output_folder_is_writable_for_the_container_user(tmp_path):
    output = examples.ensure_output_dir(tmp_path)
    assert stat.S_IMODE(output.stat().st_mode) == 0o777


# ------------------------------------------------------------------------- metadata_file


def dataset(name: str) -> str:
    return f"urn:li:dataset:(urn:li:dataPlatform:sqlite,{name},PROD)"


def test_a_metadata_file_in_both_event_shapes(tmp_path):
    records = [
        {"proposedSnapshot": {"com.linkedin.pegasus2avro.metadata.snapshot.DatasetSnapshot": {
            "urn": dataset("main.orders"),
            "aspects": [{"com.linkedin.pegasus2avro.schema.SchemaMetadata": {
                "fields": [{"fieldPath": "order_id"}, {"fieldPath": "status"}]}}]}}},
        {"entityType": "dataset", "entityUrn": dataset("main.orders"), "aspectName": "subTypes",
         "aspect": {"json": {"typeNames": ["Table"]}}},
        {"entityType": "dataset", "entityUrn": dataset("main.revenue"), "aspectName": "subTypes",
         "aspect": {"json": {"typeNames": ["View"]}}},
        {"entityType": "dataset", "entityUrn": dataset("main.revenue"), "aspectName": "schemaMetadata",
         "aspect": {"json": {"fields": [{"fieldPath": "revenue"}]}}},
        {"entityType": "container", "entityUrn": "urn:li:container:1", "aspectName": "subTypes",
         "aspect": {"json": {"typeNames": ["Database"]}}},
    ]
    path = write(tmp_path / "out.json", json.dumps(records))

    summary = metadata_file.summarize(path)

    assert summary.tables == ["main.orders"] and summary.views == ["main.revenue"]
    assert summary.columns == 3 and summary.columns_of("main.orders") == ["order_id", "status"]
    assert summary.describe() == "1 table (main.orders), 1 view (main.revenue), 3 columns, 5 records"
    assert summary.aspects["subTypes"] == 3


def test_a_file_that_is_not_metadata(tmp_path):
    with pytest.raises(FactoryError, match="expected a JSON list"):
        metadata_file.summarize(write(tmp_path / "x.json", "{}"))


# ----------------------------------------------------------------------------- local_run


def test_last_line_survives_arbitrary_chunks():
    tail = local_run.LastLines()
    for chunk in ["log one\nlog t", "wo\n", '{"status": "succ', 'ess", "exit_code": 0}\n', "\n"]:
        tail.feed(chunk)
    assert local_run.parse_summary(tail.last()) == {"status": "success", "exit_code": 0}
    assert local_run.parse_summary("not json") is None
    assert local_run.parse_summary("[1]") is None


def test_the_file_sink_is_found_on_the_host(tmp_path):
    document = {"sink": {"type": "file", "config": {"filename": "/opt/operator/output/x.json"}}}
    assert local_run.sink_file_on_host(document, tmp_path) == tmp_path / "output" / "x.json"
    assert local_run.sink_file_on_host({"sink": {"type": "file", "config": {"filename": "/tmp/x.json"}}},
                                       tmp_path) is None
    assert local_run.sink_file_on_host({"sink": {"type": "metadata-rest", "config": {}}}, tmp_path) is None


def test_the_demo_config_is_the_default_only_for_the_demo_connector(tmp_path):
    settings = Settings(root=tmp_path)
    assert local_run.config_file_for(settings, "datahub-sqlite", None) == tmp_path / "examples/datahub/sqlite.yml"
    assert local_run.config_file_for(settings, "mysql", "x.json") == Path("x.json").resolve()
    with pytest.raises(ConfigError, match="no config for connector 'mysql'"):
        local_run.config_file_for(settings, "mysql", None)


def test_a_secret_config_is_a_read_only_file_only_for_the_run(tmp_path):
    path = write(tmp_path / "c.yml", "source:\n  config:\n    password: hunter22\n")
    config = run_config.load(path, env={})

    with local_run.config_delivery(config) as (environment, mounts):
        assert environment == {"config_file": local_run.CONTAINER_CONFIG_FILE}
        (mount,) = mounts
        source = Path(mount["Source"])
        assert mount["Target"] == local_run.CONTAINER_CONFIG_FILE and mount["ReadOnly"] is True
        assert json.loads(source.read_text()) == config.document
        assert stat.S_IMODE(source.parent.stat().st_mode) == 0o700
    assert not source.exists()

    demo = run_config.load(REPO / "examples" / "datahub" / "sqlite.yml", env={})
    with local_run.config_delivery(demo) as (environment, mounts):
        assert environment == {"config": demo.text} and mounts == []


def test_examples_are_mounted_read_only_but_output_and_secrets_stay_hidden(tmp_path):
    examples = tmp_path / "examples"
    (examples / "secrets").mkdir(parents=True)
    (examples / "output").mkdir()
    link = tmp_path / "link"
    link.symlink_to(examples)

    mounts = {mount["Target"]: mount for mount in local_run.examples_mounts(link, examples)}

    assert mounts["/opt/operator"]["Source"] == str(examples) and mounts["/opt/operator"]["ReadOnly"] is True
    assert mounts["/opt/operator/output"]["Source"] == str(examples / "output")
    assert mounts["/opt/operator/output"]["ReadOnly"] is False
    secrets = mounts["/opt/operator/secrets"]
    assert secrets["Type"] == "tmpfs" and secrets["Source"] is None and secrets["ReadOnly"] is True

    (examples / "secrets").rmdir()  # nothing to hide, and no mount point to make inside a read-only bind
    assert "/opt/operator/secrets" not in {mount["Target"] for mount in local_run.examples_mounts(link, examples)}


def fake_container(interrupts: int = 0, exit_code: int = 0) -> FakeContainer:
    """A container that logs a line and its JSON summary; `interrupts` KeyboardInterrupts come from the first waits."""
    summary = json.dumps({"status": "stopped" if exit_code else "success", "exit_code": exit_code}).encode()
    return FakeContainer(exit_code=exit_code, interrupts=interrupts, output=(b"working\n", summary))


def engine_running(container: FakeContainer) -> FakeEngine:
    engine = FakeEngine()
    engine.add("sha256:" + "c" * 64, {}, ["ns/img:1"])
    engine.container = container
    return engine


def run(container, keep=False):
    out = []

    class Out:
        write = out.append

        @staticmethod
        def flush():
            pass

    api = engine_running(container)
    result = local_run.run_container(api, "ns/img:1", {"config": "{}"}, [], name="run-local-x", keep=keep, out=Out)
    return result, api, "".join(out)


def test_a_run_streams_logs_reads_the_summary_and_removes_the_container():
    container = fake_container()
    result, api, output = run(container)

    assert result.exit_code == 0 and result.summary["status"] == "success"
    assert "working" in output
    assert container.calls == ["wait", "remove"]
    assert api.started["network_mode"] == "host" and api.started["detach"] is True
    assert api.started["command"] == ["python", "main.py"]


def test_ctrl_c_stops_the_container_then_collects_its_exit_code(capsys):
    container = fake_container(interrupts=1, exit_code=143)
    result, _, _ = run(container)

    assert result.exit_code == 143
    assert container.calls == ["wait", "stop 10", "wait", "wait", "remove"]
    assert "Stopping run-local-test" in capsys.readouterr().err


def test_a_second_ctrl_c_kills_and_keep_keeps():
    container = fake_container(interrupts=2, exit_code=137)
    result, _, _ = run(container, keep=True)

    assert result.exit_code == 137 and result.kept
    assert container.calls == ["wait", "stop 10", "wait", "kill", "wait"]


def test_result_lines():
    result = local_run.RunResult(1, {"status": "failed", "records": 0, "warnings": 0, "failures": 1,
                                     "duration_s": 1.5, "reason": "boom"}, "c", False)
    assert local_run.result_line(result) == \
        "Result: failed (exit 1): 0 records, 0 warnings, 1 failures in 1.5s\nReason: boom"
    assert "no JSON summary" in local_run.result_line(local_run.RunResult(137, None, "c", False))


# ----------------------------------------------------------------------- run_local_docker.sh


# ------------------------------------------------------------------------- missing images


class FakeCatalog:
    def resolve(self, names):
        return [name.removeprefix("ingestion-connector-") for name in names]


def fake_plan(monkeypatch, current, state="up to date"):
    """A catalog and plan that know one connector, and a build that records what it was asked for."""
    from types import SimpleNamespace

    from rich.console import Console

    from ingestion_factory.cli.console_progress import ConsoleProgress
    from ingestion_factory.model import catalog

    item = SimpleNamespace(name="mysql", ref="ns/ingestion-connector-mysql:1.0", current=current, state=state,
                           reason="why")
    builds = []
    monkeypatch.setattr(catalog, "discover", lambda settings: FakeCatalog())
    return builds, {"progress": ConsoleProgress(Console(highlight=False, width=200), timestamps=False),
                    "build_image": lambda settings, names: builds.append(names) or 0,
                    "plan": lambda settings, found, targets: (SimpleNamespace(items={"mysql": item}), None)}


def test_a_missing_image_is_built_first(monkeypatch, tmp_path):
    builds, options = fake_plan(monkeypatch, current=None, state="missing")

    assert local_run.ensure_image(Settings(root=tmp_path), "ingestion-connector-mysql", build=True, **options) == \
        ("ns/ingestion-connector-mysql:1.0", "mysql")
    assert builds == [["mysql"]]


def test_a_missing_image_with_no_build_is_an_error_with_the_command_to_run(monkeypatch, tmp_path):
    builds, options = fake_plan(monkeypatch, current=None, state="missing")

    with pytest.raises(FactoryError, match="image ns/ingestion-connector-mysql:1.0 does not exist") as caught:
        local_run.ensure_image(Settings(root=tmp_path), "mysql", build=False, **options)
    assert "inv build-connectors -c mysql" in caught.value.hint
    assert builds == []


def test_a_stale_image_runs_with_a_note(monkeypatch, tmp_path, capsys):
    builds, options = fake_plan(monkeypatch, current=object(), state="inputs changed")

    assert local_run.ensure_image(Settings(root=tmp_path), "mysql", build=True, **options)[0] == \
        "ns/ingestion-connector-mysql:1.0"
    assert builds == []
    assert "is not current (inputs changed: why); running it anyway" in capsys.readouterr().out


@pytest.mark.parametrize("text, reason", [
    ("source: {type: x}\nsince: 2024-01-31\n", "has a YAML date"),
    ("source: {type: x}\nkey: !!binary aGVsbG8=\n", "has a YAML !!binary value"),
    ("source: {type: x}\nnames: !!set {a, b}\n", "has a YAML !!set"),
    (f"source: {{type: x}}\nn: {'9' * 5000}\n", "has an integer of 5000 characters"),
], ids=["date", "binary", "set", "int-over-4300-digits"])
def test_run_local_refuses_what_json_cannot_carry_with_exit_2(tmp_path, text, reason):
    """These once made run-local print a traceback when it turned the config into JSON."""
    path = tmp_path / "workflow.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason) as caught:
        run_config.load(path, env={})
    assert caught.value.exit_code == 2


def test_a_stop_just_after_the_start_still_stops_the_container(monkeypatch):
    container = fake_container()

    class Out:
        write = staticmethod(lambda text: None)
        flush = staticmethod(lambda: None)

    def interrupted_on_entry():
        raise KeyboardInterrupt  # SIGTERM between the start and the wait

    monkeypatch.setattr(local_run, "_stop_signals_as_interrupt", interrupted_on_entry)
    with pytest.raises(KeyboardInterrupt):
        local_run.run_container(engine_running(container), "ns/img:1", {}, [], name="run-local-x", keep=True, out=Out)
    assert container.calls[0] == "stop 10"  # stopped even though --keep keeps it


def test_the_log_stream_has_no_read_timeout(monkeypatch):
    """The engine client's 600 s read timeout cut a quiet workflow's log stream and lost its summary."""
    import docker

    opened = {}

    class Client:
        def __init__(self, timeout):
            opened["timeout"] = timeout
            self.api = self

        def logs(self, container_id, stream, follow):
            opened.update(id=container_id, stream=stream, follow=follow)
            return iter([b"done\n"])

    monkeypatch.setattr(docker, "from_env", lambda timeout: Client(timeout))

    class SdkContainer:
        client = object()
        id = "abc123"

    engine = DockerEngine(sdk=type("Sdk", (), {"api": None})())
    assert list(engine.follow_logs(SdkContainer())) == [b"done\n"]
    assert opened == {"timeout": None, "id": "abc123", "stream": True, "follow": True}
