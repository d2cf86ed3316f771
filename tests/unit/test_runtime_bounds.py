"""The runtime's bad-input table: every malformed config or setting is exit 2 with a message.

One row per kind of bad input, each run through main() as a container would
run it (exit code, summary reason, never a traceback), plus the measured
bound on YAML (any config up to the 4 MiB limit is parsed or refused in
bounded time and memory) and a stop arriving at any moment of start-up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from test_runtime import FakeAdapter, runtime_adapters, runtime_config, runtime_main  # noqa: F401
from test_runtime_process import MAIN, recipe

RUNTIME_DIR = MAIN.parent
BIG_INT = "9" * 5000

CONFIG_ROWS = [
    # (id, config text, reason in the summary)
    ("yaml-int-over-4300-digits", f"source: {{type: x}}\nn: {BIG_INT}\n",
     "has an integer of 5000 characters (line 2, column 4): Python converts at most 4300 digits"),
    ("json-int-over-4300-digits", f'{{"source": {{"type": "x"}}, "n": {BIG_INT}}}',
     "is not valid JSON: Exceeds the limit (4300 digits)"),
    ("yaml-date", "source: {type: x}\nsince: 2024-01-31\n",
     "has a YAML date, which JSON has no equivalent for (line 2, column 8): a config is JSON data; quote a date"),
    ("yaml-datetime", "source: {type: x}\nsince: 2024-01-31T10:00:00Z\n", "has a YAML date"),
    ("yaml-binary", "source: {type: x}\nkey: !!binary aGVsbG8=\n",
     "has a YAML !!binary value, which JSON has no equivalent for (line 2, column 6)"),
    ("yaml-set", "source: {type: x}\nnames: !!set {a, b}\n",
     "has a YAML !!set, which JSON has no equivalent for (line 2, column 8)"),
    ("yaml-omap", "source: {type: x}\nnames: !!omap [a: 1]\n", "has a YAML !!omap value"),
    ("yaml-too-many-values", "source: {type: x}\nlist:\n" + "- a\n" * 100_001, "has more than 100,000 YAML values"),
    ("yaml-too-many-tags", "source: {type: x}\nlist:\n" + "- !!str a\n" * 100_001, "has more than 100,000 YAML values"),
    ("yaml-alias", "base: &base {type: mysql}\nsource: *base\n", "uses the YAML alias *base (line 2, column 9)"),
    ("yaml-deeper-than-libyaml", "- " * 2_000 + "x\n", "is nested more than 100 levels deep"),
]


@pytest.fixture
def fake_framework(monkeypatch, tmp_path):
    monkeypatch.setitem(runtime_adapters.ADAPTERS, "fake", FakeAdapter)
    FakeAdapter.instances = []
    return {"INGESTION_FRAMEWORK": "fake", "INGESTION_TERMINATION_LOG": str(tmp_path / "no-termination-log")}


def _run_main(capsys, env, argv=("--validate",)):
    code = runtime_main.main(list(argv), env)
    out = capsys.readouterr().out
    summary = json.loads(out.rstrip("\n").splitlines()[-1])
    assert summary["exit_code"] == code
    assert "Traceback" not in out
    return code, summary


@pytest.mark.parametrize("text, reason", [row[1:] for row in CONFIG_ROWS], ids=[row[0] for row in CONFIG_ROWS])
def test_a_malformed_config_exits_2_with_its_reason(capsys, fake_framework, text, reason):
    code, summary = _run_main(capsys, dict(fake_framework, config=text))
    assert code == 2, summary
    assert summary["status"] == "config_error"
    assert reason in summary["reason"]


def test_a_quoted_date_and_a_4300_digit_integer_are_fine():
    config = runtime_config.load_config({"config": f"source: {{type: x}}\nsince: '2024-01-31'\nn: {'9' * 4300}\n"}, None)
    assert config["since"] == "2024-01-31" and config["n"] == int("9" * 4300)


def test_a_config_just_under_the_value_limit_loads():
    text = "source: {type: x}\nlist:\n" + "- a\n" * (runtime_config.MAX_YAML_NODES - 10)
    assert len(runtime_config.load_config({"config": text}, None)["list"]) == runtime_config.MAX_YAML_NODES - 10


SETTING_ROWS = [
    ("INGESTION_STOP_GRACE", "inf"),
    ("INGESTION_STOP_GRACE", "nan"),
    ("INGESTION_STOP_GRACE", "0"),
    ("INGESTION_STOP_GRACE", "0.5"),
    ("INGESTION_STOP_GRACE", "3601"),
    ("INGESTION_STOP_GRACE", "-6"),
    ("INGESTION_SERVER_TIMEOUT", "inf"),
    ("INGESTION_SERVER_TIMEOUT", "0"),
    ("INGESTION_SERVER_TIMEOUT", "1e9"),
]


@pytest.mark.parametrize("name, value", SETTING_ROWS, ids=[f"{name}={value}" for name, value in SETTING_ROWS])
def test_an_out_of_range_setting_exits_2_before_anything_runs(capsys, fake_framework, name, value):
    env = dict(fake_framework, config='{"source": {"type": "x"}}', **{name: value})
    code, summary = _run_main(capsys, env, argv=())
    assert code == 2
    assert f"{name}={value!r} must be a finite number of seconds" in summary["reason"]
    assert FakeAdapter.instances == []  # nothing ran, not even the framework's import


@pytest.mark.parametrize("value", ["1", "3600", "6.5"])
def test_a_stop_grace_within_range_is_taken(value):
    assert runtime_main.stop_grace({"INGESTION_STOP_GRACE": value}) == float(value)


# ------------------------------------------------------------- measured bounds

MEASURE = textwrap.dedent("""
    import resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import runtime_config
    text = open(sys.argv[2], encoding="utf-8").read()
    started = time.monotonic()
    try:
        runtime_config.parse_config_text(runtime_config.ConfigText(text, "test"))
        outcome = "loaded"
    except runtime_config.ConfigError:
        outcome = "refused"
    print(outcome, time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")

LIMIT = 4 * 1024 * 1024 - 64
SHAPES = {
    "one-character-list-items": "source: {type: x}\nlist:\n" + "- a\n" * (LIMIT // 4),
    "flow-list-of-integers": "source: {type: x}\nlist: [" + "1," * (LIMIT // 2 - 20) + "1]\n",
    "small-mapping-entries": "source: {type: x}\n" + "".join(f"k{i}: v\n" for i in range(LIMIT // 12)),
    "long-strings": "source: {type: x}\nlist:\n" + "".join(f"- {'t' * 200}{i}\n" for i in range(LIMIT // 210)),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_4_mib_yaml_config_parses_or_is_refused_within_3_s_and_300_mib(tmp_path, shape):
    path = tmp_path / "config.yaml"
    path.write_text(SHAPES[shape][:LIMIT])
    assert path.stat().st_size > 3.5 * 1024 * 1024
    completed = subprocess.run([sys.executable, "-c", MEASURE, str(RUNTIME_DIR), str(path)],
                               capture_output=True, text=True, timeout=60, check=True)
    outcome, seconds, mib = completed.stdout.split()
    assert outcome in ("loaded", "refused")
    assert float(seconds) < 3, completed.stdout
    assert int(mib) < 300, completed.stdout


# ------------------------------------------------------------ a stop at any moment


# Says "ready" once the interpreter itself is up, with the modules main.py's first lines import
# (a signal before that is the interpreter's business, not main.py's), then runs main.py exactly
# as `python main.py` would.
LAUNCHER = (
    "import os, signal, sys; path = sys.argv[1]; sys.argv = [path]; sys.path.insert(0, path.rsplit('/', 1)[0]); "
    "code = compile(open(path).read(), path, 'exec'); print('ready', flush=True); "
    "exec(code, {'__name__': '__main__', '__file__': path})"
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_at_any_moment_of_start_up_ends_143_without_a_traceback(env, signum):
    """From main.py's first line to the workflow's start, a stop is exit 143 (never 1 with a traceback)."""
    for delay in (0.005, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4):
        process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(MAIN)],
                                   env=dict(env, config=json.dumps(recipe(sleep=30))),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout.readline() == "ready\n"
        time.sleep(delay)
        process.send_signal(signum)
        out, _ = process.communicate(timeout=20)
        assert process.returncode == 143, (delay, out[-2000:])
        assert "Traceback" not in out, (delay, out[-2000:])


from test_runtime_process import env, fake_datahub  # noqa: E402,F401 - fixtures
