"""`python main.py` as a real process, against a fake DataHub on PYTHONPATH.

The fake imitates the parts of acryl-datahub the runtime uses (Pipeline,
PipelineConfig, the source and sink registries, pydantic's ValidationError),
so these tests exercise the real DataHub adapter, signal handling, output
redaction and the summary line without any framework installed. The fake's
source config decides how a run behaves (records, sleep, fail, leak, ...).
"""

from __future__ import annotations

import errno
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[2] / "runtime" / "main.py"
PASSWORD = "S3cr3t-Pa55word!"
MAX_ENV_STRING_BYTES = 128 * 1024

FAKE_FRAMEWORK = {
    "pydantic/__init__.py": """
        class ValidationError(ValueError):
            def __init__(self, errors):
                super().__init__(str(errors))
                self._errors = errors

            def errors(self):
                return self._errors
    """,
    "datahub/__init__.py": "",
    "datahub/ingestion/__init__.py": "",
    "datahub/ingestion/run/__init__.py": "",
    "datahub/ingestion/source/__init__.py": "",
    "datahub/ingestion/sink/__init__.py": "",
    "datahub/fake_models.py": """
        from types import SimpleNamespace

        from pydantic import ValidationError


        class ConfigurationError(Exception):
            pass


        class Model:
            fields = ()
            required = ()

            @classmethod
            def model_validate(cls, data):
                extra = [key for key in data if key not in cls.fields]
                errors = [{"loc": (key,), "msg": "Extra inputs are not permitted"} for key in extra]
                errors += [{"loc": (key,), "msg": "Field required"} for key in cls.required if key not in data]
                if errors:
                    raise ValidationError(errors)
                return SimpleNamespace(**data)


        class Registry:
            def __init__(self, plugins):
                self._plugins = plugins

            def get(self, key):
                if key == "broken":
                    try:
                        raise ModuleNotFoundError("No module named 'snowflake'", name="snowflake")
                    except ModuleNotFoundError as exc:
                        raise ConfigurationError("broken is disabled due to a missing dependency: snowflake") from exc
                if key not in self._plugins:
                    raise KeyError(f"Did not find a registered class for {key}")
                return self._plugins[key]


        def plugin(config_fields, required=()):
            model = type("Config", (Model,), {"fields": config_fields, "required": required})
            return type("Plugin", (), {"get_config_class": staticmethod(lambda: model)})
    """,
    "datahub/ingestion/run/pipeline_config.py": """
        from types import SimpleNamespace

        from pydantic import ValidationError


        class PipelineConfig:
            @classmethod
            def model_validate(cls, recipe):
                extra = [key for key in recipe if key not in ("source", "sink", "run_id")]
                errors = [{"loc": (key,), "msg": "Extra inputs are not permitted"} for key in extra]
                if "type" not in recipe.get("source", {}):
                    errors.append({"loc": ("source", "type"), "msg": "Field required"})
                if errors:
                    raise ValidationError(errors)
                sink = recipe.get("sink")
                return SimpleNamespace(
                    source=SimpleNamespace(type=recipe["source"]["type"]),
                    sink=SimpleNamespace(type=sink["type"]) if sink else None,
                )
    """,
    "datahub/ingestion/source/source_registry.py": """
        from datahub.fake_models import Registry, plugin

        FAKE_FIELDS = (
            "records", "sleep", "fail", "leak", "stop_marker", "ignore_stop", "block_in_driver", "password", "payload",
            "lose_stop_in_finalizer", "hang_logging",
        )
        source_registry = Registry({"fake": plugin(FAKE_FIELDS)})
    """,
    "datahub/ingestion/sink/sink_registry.py": """
        from datahub.fake_models import Registry, plugin

        sink_registry = Registry(
            {"file": plugin(("filename",), required=("filename",)), "datahub-rest": plugin(("server",))}
        )
    """,
    "datahub/ingestion/run/pipeline.py": """
        import contextlib
        import json
        import logging
        import sqlite3
        import sys
        import threading
        import time
        from types import SimpleNamespace

        logger = logging.getLogger("datahub.ingestion.run.pipeline")


        class PipelineExecutionError(Exception):
            pass


        class Finalizer:
            # Like pydantic-core calling back into Python: whatever is raised there is only printed.

            def __del__(self):
                print("finalizing", flush=True)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.05)


        class Part:
            def __init__(self):
                self.report = SimpleNamespace(total_records_written=0, warnings=[], failures=[])

            def get_report(self):
                return self.report


        class Pipeline:
            def __init__(self, recipe):
                self.recipe = recipe
                self.options = recipe["source"].get("config", {})
                self.source, self.sink = Part(), Part()
                self.exit_stack, self.inner_exit_stack = contextlib.ExitStack(), contextlib.ExitStack()
                marker = self.options.get("stop_marker")
                if marker:
                    self.exit_stack.callback(lambda: open(marker, "a").write("closed\\n"))

            @classmethod
            def create(cls, recipe):
                return cls(recipe)

            def run(self):
                with self.exit_stack, self.inner_exit_stack:
                    if self.options.get("leak"):
                        self._leak_secrets()
                    if self.options.get("block_in_driver"):
                        self._block_in_driver(self.options["block_in_driver"])
                    if self.options.get("lose_stop_in_finalizer"):
                        Finalizer()  # collected at once; a stop arriving in __del__ is "Exception ignored"
                    if self.options.get("hang_logging"):
                        self._hang_logging()
                    self._work(self.options.get("sleep", 0))
                    self.sink.report.total_records_written += self.options.get("records", 0)
                    if self.options.get("fail"):
                        entry = SimpleNamespace(
                            title="Pipeline Error", message="source failed", context=["table shop.orders"]
                        )
                        self.source.report.failures.append(entry)

            def _leak_secrets(self):
                # What a careless connector might print.
                password = self.options["password"]
                print("recipe:", json.dumps(self.recipe))
                logger.info("recipe %s", self.recipe)
                sys.stderr.write(f"password={password}\\n")
                print(f"engine postgresql://ingest:{password}@localhost:5432/shop")

            def _block_in_driver(self, database):
                # Like libpq waiting for a query: SQLite's busy wait retries in C
                # through signals, so no Python signal handler runs meanwhile.
                holder = sqlite3.connect(database, isolation_level=None)
                holder.execute("BEGIN EXCLUSIVE")
                waiter = sqlite3.connect(database, timeout=60, isolation_level=None)
                print("fake pipeline running", flush=True)
                waiter.execute("BEGIN EXCLUSIVE")

            def _hang_logging(self):
                # A thread stuck in the middle of a log call: the handler's lock is never released.
                held = threading.Event()
                handler = logging.getLogger().handlers[0]

                def stuck():
                    handler.acquire()
                    held.set()
                    threading.Event().wait()  # alive, so no new thread reuses its id and owns the lock

                threading.Thread(target=stuck, daemon=True).start()
                held.wait()

            def _work(self, seconds):
                deadline = time.monotonic() + seconds
                try:
                    print("fake pipeline running", flush=True)
                    while time.monotonic() < deadline:
                        time.sleep(0.05)
                except BaseException:
                    if not self.options.get("ignore_stop"):
                        raise
                    # A stuck workflow: swallows the stop request (sent once) and carries on.
                    while time.monotonic() < deadline:
                        time.sleep(0.05)

            def raise_from_status(self):
                if self.source.report.failures:
                    raise PipelineExecutionError("Source reported errors", self.source.report.failures)

            def pretty_print_summary(self):
                print(f"Pipeline finished; produced {self.sink.report.total_records_written} events")
    """,
}


@pytest.fixture(scope="module")
def fake_datahub(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake-datahub")
    for relative, source in FAKE_FRAMEWORK.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root


@pytest.fixture
def env(fake_datahub, tmp_path):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(fake_datahub),
        "INGESTION_FRAMEWORK": "datahub",
        "INGESTION_CONNECTOR": "fake",
        "INGESTION_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }


def recipe(**source_config):
    return {
        "source": {"type": "fake", "config": source_config},
        "sink": {"type": "file", "config": {"filename": "/tmp/out.json"}},
    }


def run_main(env, *args, config=None, timeout=30):
    if config is not None:
        env = dict(env, config=json.dumps(config))
    completed = subprocess.run(
        [sys.executable, str(MAIN), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return completed, json.loads(completed.stdout.splitlines()[-1])


class LiveProcess:
    """main.py running in the background, its stdout read line by line as it comes."""

    def __init__(self, env, config):
        self.process = subprocess.Popen(
            [sys.executable, str(MAIN)],
            env=dict(env, config=json.dumps(config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not printed within {timeout}s; got {self.seen}")

    def wait_for_exit(self, timeout):
        code = self.process.wait(timeout=timeout)
        time.sleep(0.1)  # let the pump thread drain the pipe
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def live(env):
    started = []

    def start(config):
        process = LiveProcess(env, config)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


# -------------------------------------------------------------------------- runs


def test_successful_run_prints_the_summary_last(env, tmp_path):
    marker = tmp_path / "stopped"
    completed, summary = run_main(env, config=recipe(records=12, stop_marker=str(marker)))
    assert completed.returncode == 0
    assert summary["status"] == "success" and summary["records"] == 12
    assert set(summary) >= {"status", "exit_code", "records", "warnings", "failures", "duration_s"}
    assert "Pipeline finished; produced 12 events" in completed.stdout
    assert marker.read_text() == "closed\n"
    assert not Path(env["INGESTION_TERMINATION_LOG"]).exists()


def test_failed_run_exits_1_stops_and_writes_the_termination_log(env, tmp_path):
    termination_log = Path(env["INGESTION_TERMINATION_LOG"])
    termination_log.write_text("")  # as Kubernetes mounts it
    marker = tmp_path / "stopped"
    completed, summary = run_main(env, config=recipe(records=3, fail=True, stop_marker=str(marker)))
    assert completed.returncode == 1
    assert summary["failures"] == 1
    assert summary["reason"] == "Source reported errors: Pipeline Error - source failed (table shop.orders)"
    assert marker.read_text() == "closed\n"
    assert termination_log.read_text().startswith("exit 1 (failed): Source reported errors")


def test_password_from_the_config_never_appears_in_the_output(env):
    completed, summary = run_main(env, config=recipe(leak=True, password=PASSWORD, fail=True))
    output = completed.stdout + completed.stderr
    assert "recipe:" in output and "password=" in output and "engine postgresql://ingest:" in output
    assert PASSWORD not in output
    assert PASSWORD not in json.dumps(summary)


def test_pipeline_run_id_becomes_the_recipes_run_id(env):
    env = dict(env, pipelineRunId="airflow-run-7")
    completed, _ = run_main(env, config=recipe(leak=True, password=PASSWORD))
    assert '"run_id": "airflow-run-7"' in completed.stdout


def test_validate_names_the_field_at_fault(env):
    bad = recipe(records=1)
    bad["source"]["config"]["hostport"] = "localhost"
    completed, summary = run_main(env, "--validate", config=bad)
    assert completed.returncode == 2
    assert summary["reason"] == "invalid configuration: source.config.hostport: Extra inputs are not permitted"

    no_filename = recipe()
    no_filename["sink"]["config"] = {}
    completed, summary = run_main(env, "--validate", config=no_filename)
    assert completed.returncode == 2 and "sink.config.filename: Field required" in summary["reason"]


def test_validate_accepts_a_good_recipe_without_running_it(env, tmp_path):
    marker = tmp_path / "stopped"
    completed, summary = run_main(env, "--validate", config=recipe(stop_marker=str(marker)))
    assert completed.returncode == 0 and summary["mode"] == "validate"
    assert "fake pipeline running" not in completed.stdout
    assert not marker.exists()


def test_unknown_source_type_is_a_config_error(env):
    completed, summary = run_main(env, "--validate", config={"source": {"type": "postgress", "config": {}}})
    assert completed.returncode == 2
    assert summary["reason"] == "invalid configuration: source.type: unknown DataHub source 'postgress'"


def test_unreachable_datahub_server_exits_1_quickly(env):
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {
        "source": {"type": "fake", "config": {}},
        "sink": {"type": "datahub-rest", "config": {"server": f"http://127.0.0.1:{port}"}},
    }
    started = time.monotonic()
    completed, summary = run_main(env, config=config)
    assert completed.returncode == 1
    assert summary["reason"] == f"DataHub server http://127.0.0.1:{port} is unreachable: connection refused"
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------------ --check


def test_check_imports_the_framework_and_finds_the_plugin(env):
    completed, summary = run_main(dict(env, INGESTION_CHECK_MODULES="json,csv"), "--check")
    assert completed.returncode == 0
    assert completed.stdout.splitlines()[:4] == [
        "ok      import datahub",
        "ok      import datahub.ingestion.run.pipeline",
        "ok      import json",
        "ok      import csv",
    ]
    assert completed.stdout.splitlines()[4].startswith("ok      connector fake: source plugin ")
    assert summary == {**summary, "status": "success", "mode": "check", "connector": "fake"}


def test_check_exits_3_when_the_plugin_cannot_load(env):
    completed, summary = run_main(dict(env, INGESTION_CONNECTOR="broken"), "--check")
    assert completed.returncode == 3
    assert "No module named 'snowflake'" in summary["reason"]


def test_check_exits_3_when_the_framework_is_absent(env):
    completed, summary = run_main(dict(env, PYTHONPATH=""), "--check")
    assert completed.returncode == 3
    assert summary["reason"].startswith("cannot import datahub: not installed")


# ------------------------------------------------------------------------ signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_the_workflow_and_exits_143(live, tmp_path, signum):
    marker = tmp_path / "stopped"
    process = live(recipe(sleep=60, records=5, stop_marker=str(marker)))
    process.wait_for_line("fake pipeline running")
    assert process.process.poll() is None  # the line streamed out while the run goes on
    sent = time.monotonic()
    process.process.send_signal(signum)
    code = process.wait_for_exit(timeout=10)
    assert code == 143
    assert time.monotonic() - sent < 5  # Docker kills at 10 s
    summary = json.loads(process.seen[-1])
    assert summary["status"] == "stopped"
    assert summary["reason"] == f"stopped by {signal.Signals(signum).name}"
    assert marker.read_text() == "closed\n"


def test_a_stuck_workflow_is_cut_off_after_the_grace_period(env, fake_datahub, tmp_path):
    env = dict(env, INGESTION_STOP_GRACE="1")
    process = LiveProcess(env, recipe(sleep=60, ignore_stop=True))
    try:
        process.wait_for_line("fake pipeline running")
        sent = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        assert process.wait_for_exit(timeout=10) == 143
        assert time.monotonic() - sent < 6
        summary = json.loads(process.seen[-1])
        assert summary["status"] == "stopped"
        assert "did not wind down within 1s" in summary["reason"]
    finally:
        process.kill()


def test_a_workflow_blocked_in_a_c_driver_still_exits_143_in_time(env, tmp_path):
    env = dict(env, INGESTION_STOP_GRACE="1")
    process = LiveProcess(env, recipe(block_in_driver=str(tmp_path / "locked.db")))
    try:
        process.wait_for_line("fake pipeline running")
        time.sleep(0.3)  # let the driver call begin
        sent = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        assert process.wait_for_exit(timeout=15) == 143
        assert time.monotonic() - sent < 6  # not the driver's 60 s, nor Docker's 10 s
        assert json.loads(process.seen[-1])["status"] == "stopped"
    finally:
        process.kill()


def test_a_stop_lost_inside_a_finalizer_is_raised_again_and_exits_143_at_once(live):
    # OpenMetadata's validation runs pydantic-core, which calls back into Python; a
    # StopRequested raised there is printed as "Exception ignored in: ..." and lost.
    process = live(recipe(sleep=3, fail=True, lose_stop_in_finalizer=True))
    process.wait_for_line("finalizing")
    sent = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    assert process.wait_for_exit(timeout=10) == 143, process.seen
    assert time.monotonic() - sent < 2  # not the 3 s the lost stop would let the run go on
    summary = json.loads(process.seen[-1])
    assert (summary["status"], summary["reason"]) == ("stopped", "stopped by SIGTERM")


@pytest.mark.parametrize("fail", [True, False], ids=["then-fails", "then-succeeds"])
def test_a_swallowed_stop_still_ends_as_stopped_whatever_the_workflow_does_next(live, fail):
    # The workflow swallows the stop, carries on and ends on its own before the grace period is over.
    process = live(recipe(sleep=1.5, records=2, ignore_stop=True, fail=fail))
    process.wait_for_line("fake pipeline running")
    process.process.send_signal(signal.SIGTERM)
    assert process.wait_for_exit(timeout=10) == 143, process.seen
    summary = json.loads(process.seen[-1])
    assert (summary["status"], summary["reason"]) == ("stopped", "stopped by SIGTERM")
    assert summary["records"] == 2


def test_the_deadline_exits_143_even_when_the_summary_cannot_be_written(env):
    # A thread stuck in a log call holds the handler's lock: writing the summary would block forever.
    process = LiveProcess(dict(env, INGESTION_STOP_GRACE="1"), recipe(sleep=60, ignore_stop=True, hang_logging=True))
    try:
        process.wait_for_line("fake pipeline running")
        sent = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        assert process.wait_for_exit(timeout=10) == 143
        assert time.monotonic() - sent < 4  # grace 1 s + at most 2 s more; Docker kills at 10 s
    finally:
        process.kill()


# ------------------------------------------------------------------- oversized text


def test_the_kernel_refuses_an_env_string_over_128_kib():
    # The reason oversized configs must be files: such a process cannot even start.
    fits = "x" * (MAX_ENV_STRING_BYTES - len("config=") - 1)
    assert subprocess.run([sys.executable, "-c", "pass"], env={"config": fits}).returncode == 0
    with pytest.raises(OSError) as caught:
        subprocess.run([sys.executable, "-c", "pass"], env={"config": fits + "x"})
    assert caught.value.errno == errno.E2BIG


def test_an_oversized_config_runs_from_a_mounted_file(env, tmp_path):
    big = recipe(records=1, payload="p" * (3 * MAX_ENV_STRING_BYTES))
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(big))
    completed, summary = run_main(dict(env, config_file=str(path)))
    assert completed.returncode == 0 and summary["records"] == 1


def test_config_text_and_file_together_exit_2(env, tmp_path):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(recipe()))
    completed, summary = run_main(env, "--config", str(path), config=recipe())
    assert completed.returncode == 2
    assert "both a config text (env `config`) and a config file (--config) were given" in summary["reason"]


# ------------------------------------------------------------------ hostile configs

BILLION_LAUGHS = "\n".join(
    ['a0: &a0 "lol"']
    + [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 10)]
    + ["source: {type: fake, config: {records: 1, payload: *a9}}", "sink: {type: file, config: {filename: /tmp/x}}"]
)


@pytest.mark.parametrize("text, reason", [
    (BILLION_LAUGHS, "uses the YAML alias *a0 (line 2, column 10)"),
    ("[" * 10_000, "is nested more than 100 levels deep"),
    ("- " * 10_000 + "x\n", "is nested more than 100 levels deep"),
    ("my" + b"\xff".decode("utf-8", "surrogateescape") + "sql: 1\n", "is not UTF-8 text: byte 0xff at offset 2"),
    ("- just\n- a list\n", "must be a non-empty mapping (got list)"),
], ids=["billion-laughs", "deep-json", "deep-yaml", "invalid-utf8", "not-a-mapping"])
def test_a_hostile_config_exits_2_at_once_with_a_reason(env, text, reason):
    started = time.monotonic()
    completed, summary = run_main(dict(env, config=text), "--validate", timeout=20)
    assert completed.returncode == 2, completed.stdout[-2000:]
    assert reason in summary["reason"]
    assert "Traceback" not in completed.stdout + completed.stderr
    assert time.monotonic() - started < 5  # the billion laughs used to run for 36 s, then minutes


def test_a_10_mb_config_file_exits_2_at_once(env, tmp_path):
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(recipe(records=1, payload="p" * (10 * 1024 * 1024))))
    started = time.monotonic()
    completed, summary = run_main(dict(env, config_file=str(path)), "--validate")
    assert completed.returncode == 2
    assert "is larger than 4 MiB, the most a config may be" in summary["reason"]
    assert time.monotonic() - started < 5
