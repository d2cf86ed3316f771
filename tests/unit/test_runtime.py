"""Unit tests of the in-image runtime (runtime/main.py and its helpers).

Pure tests: no container, no framework installed. A fake adapter is
registered in runtime_adapters.ADAPTERS for the duration of a test.
"""

from __future__ import annotations

import http.server
import importlib.util
import io
import json
import socket
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"
sys.path.insert(0, str(RUNTIME_DIR))

import runtime_adapters  # noqa: E402
import runtime_config  # noqa: E402
import runtime_redaction  # noqa: E402
from runtime_adapters import ConfigError, FrameworkAdapter, PluginMissing, RunCounts, WorkflowFailed  # noqa: E402


def _load_main():
    # Under its own name: "main" is too generic to claim in sys.modules.
    spec = importlib.util.spec_from_file_location("ingestion_runtime_main", RUNTIME_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runtime_main = _load_main()

SEED_CONFIG = {
    "source": {
        "type": "sample-data",
        "serviceName": "sample_data",
        "serviceConnection": {
            "config": {"type": "CustomDatabase", "connectionOptions": {"sampleDataFolder": "/opt/operator/sample_data"}}
        },
        "sourceConfig": {"config": {}},
    },
    "sink": {"type": "metadata-rest", "config": {}},
    "workflowConfig": {
        "loggerLevel": "INFO",
        "openMetadataServerConfig": {
            "hostPort": "http://localhost:8585/api",
            "authProvider": "openmetadata",
            "securityConfig": {"jwtToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXNlY3JldA"},
        },
    },
}


# ------------------------------------------------------------------ config loading


def test_config_text_from_env_json():
    config = runtime_config.load_config({"config": json.dumps(SEED_CONFIG)}, None)
    assert config == SEED_CONFIG


def test_config_text_from_env_yaml():
    text = "source:\n  type: postgres\n  config:\n    host_port: localhost:5432\nsink:\n  type: console\n"
    config = runtime_config.load_config({"config": text}, None)
    assert config["source"]["config"]["host_port"] == "localhost:5432"
    assert config["sink"]["type"] == "console"


@pytest.mark.parametrize("how", ["--config", "config_file", "CONFIG_FILE"])
def test_config_from_file(tmp_path, how):
    path = tmp_path / "workflow.yaml"
    path.write_text("source:\n  type: mysql\n")
    env = {} if how == "--config" else {how: str(path)}
    cli_path = str(path) if how == "--config" else None
    assert runtime_config.load_config(env, cli_path) == {"source": {"type": "mysql"}}


def test_json_file_is_parsed_strictly_as_json(tmp_path):
    path = tmp_path / "workflow.json"
    path.write_text("source: {type: mysql}\n")  # valid YAML, but not JSON
    with pytest.raises(ConfigError, match="not valid JSON"):
        runtime_config.load_config({}, str(path))


def test_same_file_named_twice_is_fine(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"source": {"type": "mysql"}}')
    env = {"config_file": str(path), "CONFIG_FILE": str(path)}
    assert runtime_config.load_config(env, str(path))["source"]["type"] == "mysql"


def test_text_and_file_together_is_an_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=r"both a config text \(env `config`\) and a config file \(--config\)"):
        runtime_config.load_config({"config": '{"a": 1}'}, str(path))
    with pytest.raises(ConfigError, match="env `config_file`"):
        runtime_config.load_config({"config": '{"a": 1}', "config_file": str(path)}, None)


def test_two_different_files_is_an_error(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    with pytest.raises(ConfigError, match="conflicting config files"):
        runtime_config.load_config({"config_file": str(first)}, str(second))


def test_malformed_json_names_line_and_column():
    text = '{\n  "source": {"type": "mysql"}\n  "sink": {}\n}'
    with pytest.raises(ConfigError) as caught:
        runtime_config.load_config({"config": text}, None)
    message = str(caught.value)
    assert "env `config` is not valid JSON" in message
    assert "Expecting ',' delimiter (line 3, column 3)" in message


def test_malformed_yaml_names_line_and_column():
    with pytest.raises(ConfigError, match=r"not valid YAML: .*\(line 3, column \d+\)"):
        runtime_config.load_config({"config": "source:\n  type: mysql\n bad: [1, 2\n"}, None)


def test_missing_config_says_how_to_give_one():
    with pytest.raises(ConfigError, match="no configuration given: set env `config`.*--config PATH"):
        runtime_config.load_config({}, None)
    with pytest.raises(ConfigError, match="no configuration given"):
        runtime_config.load_config({"config": "   \n"}, None)


def test_missing_file_hints_at_the_mount(tmp_path):
    with pytest.raises(ConfigError, match="does not exist \\(is the volume mounted\\?\\)"):
        runtime_config.load_config({}, str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("text", ["[1, 2]", "just a string", "{}", "42", "null", "- a\n- b\n", "[]", "true"])
def test_config_must_be_a_non_empty_mapping(text):
    with pytest.raises(ConfigError, match="must be a non-empty mapping"):
        runtime_config.load_config({"config": text}, None)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """A short YAML document whose aliases expand to width**levels strings when walked."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        aliases = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + f"\nsource: {{type: mysql, config: {{tables: *a{levels}}}}}\n"


MERGE_BOMB = "".join(f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 9)}], k{n}: v}}\n" for n in range(1, 9))


@pytest.mark.parametrize("text, problem", [
    (billion_laughs(), r"uses the YAML alias \*a0 \(line 2, column 10\)"),
    ("base: &base {type: mysql}\nsource: *base\n", r"uses the YAML alias \*base \(line 2, column 9\)"),
    ("m0: &m0 {k: v}\n" + MERGE_BOMB, r"uses the YAML alias \*m0"),
])
def test_yaml_aliases_are_refused_before_they_expand(text, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        runtime_config.load_config({"config": text}, None)
    assert "write the repeated part out" in str(caught.value)


def test_an_anchor_nobody_refers_to_is_harmless():
    assert runtime_config.load_config({"config": "source: &s {type: mysql}\n"}, None) == {"source": {"type": "mysql"}}


@pytest.mark.parametrize("text", [
    "[" * 10_000,
    "[" * 10_000 + "]" * 10_000,
    '{"a": ' * 5_000 + "1" + "}" * 5_000,
    "- " * 10_000 + "x\n",
    "".join("  " * level + f"k{level}:\n" for level in range(150)) + "  " * 150 + "v: 1\n",
    json.dumps({"source": {"type": "x"}, "deep": json.loads("[" * 101 + "]" * 101)}),
])
def test_deeply_nested_documents_are_refused_with_a_message(text):
    limit = runtime_config.MAX_CONFIG_DEPTH
    with pytest.raises(ConfigError, match=f"is nested more than {limit} levels deep"):
        runtime_config.load_config({"config": text}, None)


def test_a_config_at_the_depth_limit_loads():
    nested = json.loads("[" * 99 + "]" * 99)
    config = {"source": {"type": "x"}, "deep": nested}  # 100 levels: the mapping and 99 lists
    assert runtime_config.load_config({"config": json.dumps(config)}, None) == config


def test_invalid_utf8_in_a_file_is_named_with_its_offset(tmp_path):
    path = tmp_path / "workflow.yaml"
    path.write_bytes(b"source:\n  type: my\xffsql\n")
    with pytest.raises(ConfigError, match=r"config file .*workflow.yaml is not UTF-8 text: byte 0xff at offset 18"):
        runtime_config.load_config({}, str(path))


def test_invalid_utf8_in_the_environment_is_named_with_its_offset():
    # Python hands undecodable environment bytes over as lone surrogates (os.fsdecode).
    text = "source:\n  type: my" + b"\xff".decode("utf-8", "surrogateescape") + "sql\n"
    with pytest.raises(ConfigError, match=r"env `config` is not UTF-8 text: byte 0xff at offset 18"):
        runtime_config.load_config({"config": text}, None)


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "workflow.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"source": {"type": "mysql"}}')
    assert runtime_config.load_config({}, str(path)) == {"source": {"type": "mysql"}}


def test_a_file_over_the_size_limit_is_refused_without_reading_it_whole(tmp_path):
    limit = runtime_config.MAX_CONFIG_BYTES
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"source": {"type": "x", "config": {"blob": "x" * (10 * 1024 * 1024)}}}))
    with pytest.raises(ConfigError, match=f"is larger than {limit // (1024 * 1024)} MiB, the most a config may be"):
        runtime_config.load_config({}, str(path))


def test_a_config_just_under_the_size_limit_loads(tmp_path):
    path = tmp_path / "large.json"
    filler = "x" * (runtime_config.MAX_CONFIG_BYTES - 100)
    path.write_text(json.dumps({"source": {"type": "x"}, "blob": filler}))
    assert runtime_config.load_config({}, str(path))["blob"] == filler


def test_json_works_without_pyyaml_and_yaml_explains(monkeypatch):
    monkeypatch.setattr(runtime_config, "yaml", None)
    assert runtime_config.load_config({"config": '{"source": {"type": "x"}}'}, None)
    with pytest.raises(ConfigError, match="YAML needs PyYAML.*pass the config as JSON"):
        runtime_config.load_config({"config": "source:\n  type: x\n"}, None)


def test_env_entry_limit_matches_the_kernel_constant():
    name = "config"
    largest = "x" * (128 * 1024 - len(name) - 2)  # "config=" + value + NUL == 128 KiB
    assert runtime_config.env_entry_fits(name, largest)
    assert not runtime_config.env_entry_fits(name, largest + "x")
    assert not runtime_config.env_entry_fits(name, "é" * (64 * 1024))  # bytes count, not characters


def test_config_far_beyond_the_env_limit_loads_from_a_file(tmp_path):
    big = {"source": {"type": "mysql", "tables": [f"table_{index:06d}" for index in range(20000)]}}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big))
    assert path.stat().st_size > 2 * runtime_config.MAX_ENV_STRING_BYTES
    assert not runtime_config.env_entry_fits("config", path.read_text())
    assert runtime_config.load_config({}, str(path)) == big


# ------------------------------------------------------- pipelineType and run id


@pytest.mark.parametrize(
    "pipeline_type, class_path",
    [
        (None, "metadata.workflow.metadata.MetadataWorkflow"),
        ("metadata", "metadata.workflow.metadata.MetadataWorkflow"),
        ("lineage", "metadata.workflow.metadata.MetadataWorkflow"),
        ("dbt", "metadata.workflow.metadata.MetadataWorkflow"),
        ("usage", "metadata.workflow.usage.UsageWorkflow"),
        ("profiler", "metadata.workflow.profiler.ProfilerWorkflow"),
        ("autoClassification", "metadata.workflow.classification.AutoClassificationWorkflow"),
        ("TestSuite", "metadata.workflow.data_quality.TestSuiteWorkflow"),
        ("testsuite", "metadata.workflow.data_quality.TestSuiteWorkflow"),
        ("dataInsight", "metadata.workflow.data_insight.DataInsightWorkflow"),
        ("application", "metadata.workflow.application.ApplicationWorkflow"),
    ],
)
def test_pipeline_type_picks_the_workflow_class(pipeline_type, class_path):
    assert runtime_adapters.workflow_class_path(pipeline_type) == class_path


def test_unknown_pipeline_type_is_a_config_error():
    with pytest.raises(ConfigError, match="pipelineType: unknown value 'ingest'.*metadata, lineage"):
        runtime_adapters.resolve_pipeline_type("ingest")


def test_openmetadata_prepare_takes_pipeline_type_and_injects_run_id():
    adapter = runtime_adapters.OpenMetadataAdapter()
    config = dict(SEED_CONFIG, pipelineType="profiler")
    prepared = adapter.prepare(config, {"pipelineRunId": "0b3c7d1e-9f5b-4e8a-8a2c-1d2e3f4a5b6c"})
    assert "pipelineType" not in prepared  # the workflow model forbids unknown keys
    assert prepared["pipelineRunId"] == "0b3c7d1e-9f5b-4e8a-8a2c-1d2e3f4a5b6c"
    assert adapter.pipeline_type == "profiler"
    assert adapter.describe() == {"pipeline_type": "profiler"}
    assert adapter.log_level(prepared) == "INFO"


def test_environment_overrides_the_config_like_openmetadatas_operator():
    adapter = runtime_adapters.OpenMetadataAdapter()
    config = dict(SEED_CONFIG, pipelineType="usage", pipelineRunId="from-config")
    prepared = adapter.prepare(config, {"pipelineType": "lineage", "pipelineRunId": "from-env"})
    assert adapter.pipeline_type == "lineage"
    assert prepared["pipelineRunId"] == "from-env"


def test_openmetadata_server_url_is_the_host_port():
    assert runtime_adapters.OpenMetadataAdapter().server_url(SEED_CONFIG) == "http://localhost:8585/api"


def test_datahub_accepts_only_the_metadata_pipeline_type_and_maps_the_run_id():
    adapter = runtime_adapters.DataHubAdapter()
    recipe = {"source": {"type": "postgres", "config": {}}, "pipelineType": "metadata"}
    prepared = adapter.prepare(recipe, {"pipelineRunId": "run-42"})
    assert prepared == {"source": {"type": "postgres", "config": {}}, "run_id": "run-42"}
    with pytest.raises(ConfigError, match="pipelineType: 'profiler' is an OpenMetadata workflow type"):
        adapter.prepare({"source": {"type": "postgres"}}, {"pipelineType": "profiler"})


def test_datahub_server_url_is_the_rest_sink():
    recipe = {"source": {"type": "x"}, "sink": {"type": "datahub-rest", "config": {"server": "http://gms:8080"}}}
    assert runtime_adapters.DataHubAdapter().server_url(recipe) == "http://gms:8080"
    assert runtime_adapters.DataHubAdapter().server_url({"source": {"type": "x"}, "sink": {"type": "file"}}) is None


def test_unknown_framework_is_a_missing_plugin():
    with pytest.raises(PluginMissing, match="INGESTION_FRAMEWORK='spark' is not supported"):
        runtime_adapters.create_adapter("spark")
    assert isinstance(runtime_adapters.create_adapter(None), runtime_adapters.OpenMetadataAdapter)
    assert isinstance(runtime_adapters.create_adapter("DataHub"), runtime_adapters.DataHubAdapter)


def test_import_required_names_the_missing_module():
    with pytest.raises(PluginMissing, match="cannot import no_such_module_xyz: not installed"):
        runtime_adapters.import_required("no_such_module_xyz")
    with pytest.raises(PluginMissing, match="module 'no_such_pkg_xyz' is missing"):
        runtime_adapters.import_required("no_such_pkg_xyz.sub")


class _FakeValidationError:
    def __init__(self, errors):
        self._errors = errors

    def errors(self):
        return self._errors


def test_validation_errors_name_the_field_path():
    error = _FakeValidationError(
        [
            {"loc": ("hostPort",), "msg": "Field required"},
            {"loc": ("DatabaseConnection", "config", "MysqlConnection", "x"), "msg": "noise"},
            {"loc": ("tables", 2, "name"), "msg": "Input should be a valid string"},
            {"loc": ("a", "b", "c", "d", "e"), "msg": "more noise"},
        ]
    )
    formatted = runtime_adapters.format_validation_errors(error, prefix=("source", "serviceConnection", "config"))
    assert formatted.startswith("source.serviceConnection.config.hostPort: Field required; ")
    assert "source.serviceConnection.config.tables[2].name: Input should be a valid string" in formatted
    assert formatted.endswith("(and 1 more)")


# ---------------------------------------------------------------------- redaction

PASSWORD = "S3cr3t-Pa55word!"


def _redactor_for(document):
    redactor = runtime_redaction.Redactor()
    redactor.add_secrets_from(document)
    return redactor


def test_secret_values_come_from_secret_named_fields():
    document = {
        "source": {"config": {"password": PASSWORD, "username": "ingest", "passwordFile": "/run/secrets/pw"}},
        "aws": {"awsSecretAccessKey": "AKIA-very-secret", "awsRegion": "eu-west-1"},
        "auth": {
            "jwtToken": "tok-123456",
            "tokenType": "Bearer",
            "tokenUrl": "https://idp/token",
            "apiKey": "k-987654",
        },
        "dbt": {"clientSecret": "cs-123456", "sas_token": "sv=2020&sig=abc"},
        "flags": {"password": "pw"},  # too short to mask everywhere
    }
    expected = {PASSWORD, "AKIA-very-secret", "tok-123456", "k-987654", "cs-123456", "sv=2020&sig=abc"}
    values = runtime_redaction.secret_values(document)
    # Each secret as is, and the forms it prints in (here only URL-quoted).
    assert expected <= values and {urllib.parse.unquote(value) for value in values} == expected


def test_known_secret_values_are_masked_wherever_they_appear():
    redactor = _redactor_for({"config": {"password": PASSWORD}})
    line = f"connecting with {PASSWORD} (repr: {PASSWORD!r}, json: {json.dumps({'x': PASSWORD})})"
    redacted = redactor.redact(line)
    assert PASSWORD not in redacted
    assert redacted.count(runtime_redaction.MASK) == 3


def test_json_escaped_and_multiline_secrets_are_masked():
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    tricky = 'quo"te\\pass'
    redactor = _redactor_for({"privateKey": key, "password": tricky})
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in redactor.redact("key line: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC")
    assert "quo" not in redactor.redact(json.dumps({"pw": tricky}))


@pytest.mark.parametrize(
    "text, secret",
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl here", "eyJhbGciOiJIUzI1NiJ9"),
        ("url postgresql://ingest:hunter2secret@db:5432/shop", "hunter2secret"),
        ("url mysql+pymysql://root:p%40ss@localhost/x", "p%40ss"),
        ("password=hunter2secret user=x", "hunter2secret"),
        ("{'password': 'hunter2secret', 'user': 'x'}", "hunter2secret"),
        ('{"apiKey": "abc123def456"}', "abc123def456"),
        ("PGPASSWORD=hunter2secret psql", "hunter2secret"),
        ("client_secret: zyx987654", "zyx987654"),
    ],
)
def test_secret_patterns_are_masked_without_knowing_the_config(text, secret):
    redacted = runtime_redaction.Redactor().redact(text)
    assert secret not in redacted
    assert runtime_redaction.MASK in redacted


def test_url_without_password_and_plain_text_are_untouched():
    redactor = runtime_redaction.Redactor()
    for text in ["http://localhost:8585/api", "postgresql://db:5432/shop", "password authentication failed for user"]:
        assert redactor.redact(text) == text


def test_redacting_stream_masks_secrets_split_across_writes():
    target = io.StringIO()
    stream = runtime_redaction.RedactingStream(target, _redactor_for({"password": PASSWORD}))
    stream.write("pw=" + PASSWORD[:5])
    assert target.getvalue() == ""  # incomplete line is held back
    stream.write(PASSWORD[5:] + " done\nnext")
    assert target.getvalue() == f"pw={runtime_redaction.MASK} done\n"
    stream.flush()
    assert target.getvalue().endswith("next")


# ------------------------------------------------------------------------ summary


def test_exit_codes_are_fixed_and_avoid_dockers_range():
    codes = {
        runtime_main.EXIT_SUCCESS: 0,
        runtime_main.EXIT_WORKFLOW_FAILED: 1,
        runtime_main.EXIT_CONFIG_ERROR: 2,
        runtime_main.EXIT_PLUGIN_MISSING: 3,
        runtime_main.EXIT_STOPPED: 143,
    }
    assert all(actual == expected for actual, expected in codes.items())
    assert not set(runtime_main.STATUS_BY_EXIT_CODE) & {125, 126, 127, 137}
    assert set(runtime_main.STATUS_BY_EXIT_CODE) == {0, 1, 2, 3, 143}


def test_summary_fields_and_one_line_reason():
    outcome = runtime_main.Outcome(
        1, reason="boom\n  on two lines", counts=RunCounts(records=12, warnings=1, failures=2)
    )
    summary = runtime_main.build_summary(
        outcome, {"framework": "datahub", "connector": "postgres", "mode": "run"}, 3.2149
    )
    assert summary == {
        "status": "failed",
        "exit_code": 1,
        "framework": "datahub",
        "connector": "postgres",
        "mode": "run",
        "records": 12,
        "warnings": 1,
        "failures": 2,
        "duration_s": 3.21,
        "reason": "boom on two lines",
    }
    success = runtime_main.build_summary(runtime_main.Outcome(0), {}, 0.5)
    assert "reason" not in success and success["status"] == "success"


def test_reason_is_truncated():
    assert len(runtime_main.one_line("x" * 5000)) == runtime_main.MAX_REASON_LENGTH


def test_reporter_writes_once_and_the_termination_log(tmp_path):
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    stream = io.StringIO()
    env = {"INGESTION_TERMINATION_LOG": str(termination_log), "INGESTION_FRAMEWORK": "datahub"}
    redactor = _redactor_for({"password": PASSWORD})
    reporter = runtime_main.Reporter(runtime_redaction.RedactingStream(stream, redactor), env, "run", started=0.0,
                                     redactor=redactor)
    assert reporter.emit(runtime_main.Outcome(2, reason=f"source.type: Field required, {PASSWORD}")) == 2
    assert reporter.emit(runtime_main.Outcome(0)) == 2  # the first summary stands
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["exit_code"] == 2
    assert termination_log.read_text() == "exit 2 (config_error): source.type: Field required, ********\n"


def test_termination_log_is_not_created_where_there_is_none(tmp_path):
    missing = tmp_path / "termination-log"
    runtime_main.write_termination_log(
        {"INGESTION_TERMINATION_LOG": str(missing)}, {"exit_code": 1, "status": "failed"}
    )
    assert not missing.exists()


# --------------------------------------------------------------------- server probe


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server():
    """Accepts connections and never answers: the case that hangs a framework client."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    listener.close()


def test_probe_accepts_any_http_answer(http_server):
    runtime_main.probe_server(http_server, "OpenMetadata", timeout_s=2)  # 501 is still an answer


def test_probe_reports_a_refused_connection(closed_port):
    url = f"http://localhost:{closed_port}/api"
    with pytest.raises(WorkflowFailed, match=f"^OpenMetadata server {url} is unreachable: connection refused$"):
        runtime_main.probe_server(url, "OpenMetadata", timeout_s=2)


def test_probe_gives_up_on_a_silent_server_in_bounded_time(silent_server):
    with pytest.raises(WorkflowFailed, match="is unreachable: no answer within 0.5s"):
        runtime_main.probe_server(silent_server, "OpenMetadata", timeout_s=0.5)


@pytest.mark.parametrize("url", ["ftp://host/x", "http://:8585", "http://host:port/api"])
def test_probe_rejects_malformed_server_addresses(url):
    with pytest.raises(ConfigError):
        runtime_main.probe_server(url, "OpenMetadata", timeout_s=1)


def test_bare_host_port_gets_a_scheme():
    assert runtime_main.server_url_with_scheme("localhost:8585") == "http://localhost:8585"


# ------------------------------------------------------------- main() with a fake


class FakeAdapter(FrameworkAdapter):
    """Stands in for a framework; the config's `fail_at` picks where it fails."""

    name = "fake"
    server_label = "Fake"
    core_modules = ("json",)
    instances: list = []

    def __init__(self):
        self.calls = []
        self.fail_at = None
        FakeAdapter.instances.append(self)

    def _step(self, step, config=None):
        self.calls.append(step)
        failure = {
            "validate": ConfigError("source.config.port: Input should be a valid integer"),
            "create": PluginMissing("connector plugin cannot be imported: No module named 'pymysql'"),
            "run": WorkflowFailed("source reported 2 failures"),
            "raise_on_failure": WorkflowFailed("sink reported errors"),
            "crash": RuntimeError("driver exploded"),
        }
        if self.fail_at == step:
            raise failure[step]
        if self.fail_at == "crash" and step == "run":
            raise failure["crash"]

    def prepare(self, config, env):
        self.fail_at = config.pop("fail_at", None)
        self.server = config.pop("server", None)
        return config

    def log_level(self, config):
        return config.get("workflowConfig", {}).get("loggerLevel")

    def check_connector(self, connector):
        if connector == "broken":
            raise PluginMissing("source plugin 'broken' cannot be loaded: No module named 'snowflake'")
        return f"connector {connector}: fake plugin"

    def validate(self, config):
        self._step("validate")

    def server_url(self, config):
        return self.server

    def create(self, config):
        self._step("create")
        print(f"creating with {config}")  # a leaky framework printing its config

    def run(self):
        self._step("run")

    def raise_on_failure(self):
        self._step("raise_on_failure")

    def print_status(self):
        self._step("print_status")

    def stop(self):
        self.calls.append("stop")
        if self.fail_at == "stop":
            raise RuntimeError("stop failed too")

    def counts(self):
        return RunCounts(records=7, warnings=1, failures=0 if self.fail_at is None else 2)


@pytest.fixture
def fake_framework(monkeypatch, tmp_path):
    monkeypatch.setitem(runtime_adapters.ADAPTERS, "fake", FakeAdapter)
    FakeAdapter.instances = []
    return {"INGESTION_FRAMEWORK": "fake", "INGESTION_TERMINATION_LOG": str(tmp_path / "no-termination-log")}


def _run_main(capsys, env, argv=(), config=None):
    if config is not None:
        env = dict(env, config=json.dumps(config))
    code = runtime_main.main(list(argv), env)
    out = capsys.readouterr().out
    summary = json.loads(out.rstrip("\n").splitlines()[-1])
    assert summary["exit_code"] == code
    return code, summary, out


def test_successful_run_follows_the_lifecycle(capsys, fake_framework):
    code, summary, _ = _run_main(capsys, fake_framework, config={"source": {"type": "mysql"}})
    assert code == 0
    assert FakeAdapter.instances[0].calls == ["validate", "create", "run", "raise_on_failure", "print_status", "stop"]
    assert summary == {
        "status": "success",
        "exit_code": 0,
        "framework": "fake",
        "connector": "mysql",
        "mode": "run",
        "records": 7,
        "warnings": 1,
        "failures": 0,
        "duration_s": summary["duration_s"],
    }


@pytest.mark.parametrize(
    "fail_at, code, reason",
    [
        ("run", 1, "source reported 2 failures"),
        ("raise_on_failure", 1, "sink reported errors"),
        ("crash", 1, "unexpected error: RuntimeError: driver exploded"),
        ("create", 3, "connector plugin cannot be imported: No module named 'pymysql'"),
    ],
)
def test_failures_map_to_exit_codes_and_stop_still_runs(capsys, fake_framework, fail_at, code, reason):
    exit_code, summary, _ = _run_main(capsys, fake_framework, config={"source": {"type": "mysql"}, "fail_at": fail_at})
    assert exit_code == code
    assert summary["reason"] == reason
    assert FakeAdapter.instances[0].calls[-1] == "stop"


def test_invalid_config_exits_2_with_the_field_and_never_creates(capsys, fake_framework):
    code, summary, _ = _run_main(capsys, fake_framework, config={"source": {"type": "mysql"}, "fail_at": "validate"})
    assert code == 2
    assert summary["reason"] == "invalid configuration: source.config.port: Input should be a valid integer"
    assert FakeAdapter.instances[0].calls == ["validate"]


def test_a_failing_stop_does_not_hide_the_outcome(capsys, fake_framework):
    code, summary, out = _run_main(capsys, fake_framework, config={"source": {"type": "x"}, "fail_at": "stop"})
    assert code == 0 and summary["status"] == "success"
    assert "stopping the workflow failed" in out


def test_validate_mode_stops_after_validation(capsys, fake_framework):
    code, summary, out = _run_main(capsys, fake_framework, argv=["--validate"], config={"source": {"type": "x"}})
    assert code == 0 and summary["mode"] == "validate"
    assert FakeAdapter.instances[0].calls == ["validate"]
    assert "configuration is valid for fake" in out


def test_missing_config_exits_2(capsys, fake_framework):
    code, summary, _ = _run_main(capsys, fake_framework)
    assert code == 2 and summary["status"] == "config_error"
    assert "no configuration given" in summary["reason"]


def test_malformed_config_exits_2_with_position(capsys, fake_framework):
    env = dict(fake_framework, config='{"source": {"type": "x",}}')
    code, summary, _ = _run_main(capsys, env)
    assert code == 2
    assert "Expecting property name enclosed in double quotes (line 1, column 25)" in summary["reason"]


def test_unreachable_server_exits_1_before_creating(capsys, fake_framework, closed_port):
    url = f"http://127.0.0.1:{closed_port}/api"
    code, summary, _ = _run_main(capsys, fake_framework, config={"source": {"type": "x"}, "server": url})
    assert code == 1
    assert summary["reason"] == f"Fake server {url} is unreachable: connection refused"
    assert "create" not in FakeAdapter.instances[0].calls


def test_reachable_server_lets_the_run_go_on(capsys, fake_framework, http_server):
    code, _, _ = _run_main(capsys, fake_framework, config={"source": {"type": "x"}, "server": http_server})
    assert code == 0


def test_password_from_the_config_never_reaches_the_output(capsys, fake_framework):
    config = {"source": {"type": "postgres", "config": {"password": PASSWORD}}, "fail_at": "run"}
    _, _, out = _run_main(capsys, fake_framework, config=config)
    assert "creating with" in out and runtime_redaction.MASK in out
    assert PASSWORD not in out


def test_log_level_comes_from_the_config(capsys, fake_framework):
    config = {"source": {"type": "x"}, "workflowConfig": {"loggerLevel": "ERROR"}}
    _, _, out = _run_main(capsys, fake_framework, argv=["--validate"], config=config)
    assert "configuration is valid" not in out  # INFO is below ERROR


def test_check_mode_imports_modules_and_the_connector(capsys, fake_framework):
    env = dict(fake_framework, INGESTION_CHECK_MODULES="csv, email.message", INGESTION_CONNECTOR="mysql")
    code, summary, out = _run_main(capsys, env, argv=["--check"])
    assert code == 0 and summary["mode"] == "check" and summary["connector"] == "mysql"
    assert out.splitlines()[:4] == [
        "ok      import json",
        "ok      import csv",
        "ok      import email.message",
        "ok      connector mysql: fake plugin",
    ]


def test_check_mode_exits_3_naming_what_is_missing(capsys, fake_framework):
    env = dict(fake_framework, INGESTION_CHECK_MODULES="csv,pymysql_not_here")
    code, summary, out = _run_main(capsys, env, argv=["--check"])
    assert code == 3 and summary["status"] == "missing_plugin"
    assert "pymysql_not_here" in summary["reason"]
    assert "MISSING import pymysql_not_here" in out


def test_check_mode_exits_3_for_a_broken_connector_plugin(capsys, fake_framework):
    code, summary, _ = _run_main(capsys, dict(fake_framework, INGESTION_CONNECTOR="broken"), argv=["--check"])
    assert code == 3 and "No module named 'snowflake'" in summary["reason"]


def test_unknown_framework_exits_3(capsys, fake_framework):
    code, summary, _ = _run_main(capsys, dict(fake_framework, INGESTION_FRAMEWORK="spark"), argv=["--check"])
    assert code == 3 and "not supported" in summary["reason"]


def test_usage_error_exits_2_with_a_summary(capsys, fake_framework):
    code, summary, _ = _run_main(capsys, fake_framework, argv=["--check", "--validate"])
    assert code == 2 and summary["reason"].startswith("invalid command line: argument --validate: not allowed")


def test_bad_timeout_setting_is_a_config_error(capsys, fake_framework):
    env = dict(fake_framework, INGESTION_SERVER_TIMEOUT="soon")
    code, summary, _ = _run_main(capsys, env, config={"source": {"type": "x"}, "server": "http://127.0.0.1:1"})
    assert code == 2 and "INGESTION_SERVER_TIMEOUT='soon'" in summary["reason"]


def test_main_restores_the_process_streams(capsys, fake_framework):
    before = (sys.stdout, sys.stderr)
    _run_main(capsys, fake_framework, argv=["--check"])
    assert (sys.stdout, sys.stderr) == before
