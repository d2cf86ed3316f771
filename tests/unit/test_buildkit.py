import os
import threading
import time

import pytest

from ingestion_factory.engine import buildkit
from ingestion_factory.model.failures import Cause


@pytest.mark.parametrize(
    "version, native",
    [("20.10.24+dfsg1", True), ("18.09.1", True), ("18.06.0-ce", False), ("23.0.1", False), ("28.2.2", False),
     ("garbage", False)],
)
def test_native_buildkit_by_client_version(version, native):
    assert buildkit.native_buildkit(version) is native


def test_no_cli_gives_install_hint(monkeypatch):
    buildkit.find_cli.cache_clear()
    monkeypatch.setenv("FACTORY_DOCKER_CLI", "/nonexistent/docker")
    with pytest.raises(buildkit.DockerUnavailable) as error:
        buildkit.find_cli()
    buildkit.find_cli.cache_clear()
    assert "no BuildKit-capable docker CLI" in error.value.message
    assert "buildx" in error.value.hint


def test_a_build_that_prints_nothing_ends_at_the_no_output_timeout(tmp_path):
    started = time.monotonic()
    outcome = buildkit._stream(["sh", "-c", "echo downloading; sleep 30"], dict(os.environ), tmp_path / "x.log", None,
                               timeout_s=60, no_output_timeout_s=1)
    assert time.monotonic() - started < 25  # generous: a loaded machine must not flake it
    assert outcome.timed_out.cause is Cause.NO_OUTPUT_TIMEOUT
    assert "the no-output timeout fired: nothing printed for 1s" in outcome.timed_out.reason
    assert "the no-output timeout fired" in (tmp_path / "x.log").read_text()


def test_a_build_that_runs_too_long_ends_at_the_build_timeout(tmp_path):
    outcome = buildkit._stream(["sh", "-c", "while true; do echo step; sleep 0.1; done"], dict(os.environ),
                               tmp_path / "x.log", None, timeout_s=1, no_output_timeout_s=60)
    assert outcome.timed_out.cause is Cause.BUILD_TIMEOUT
    assert "the build timeout fired: still running after 1s" in outcome.timed_out.reason


def test_ending_the_builds_ends_a_running_one_and_starts_no_other(tmp_path):
    done = []
    thread = threading.Thread(target=lambda: done.append(
        buildkit._stream(["sh", "-c", "echo go; sleep 30"], dict(os.environ), tmp_path / "x.log", None)))
    thread.start()
    deadline = time.monotonic() + 10
    while "go" not in (tmp_path / "x.log").read_text() if (tmp_path / "x.log").exists() else True:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        buildkit.end_builds("interrupted (SIGINT)")
        thread.join(15)
        assert not thread.is_alive() and done[0].returncode != 0
        with pytest.raises(buildkit.BuildInterrupted, match="not started: interrupted"):
            buildkit._stream(["true"], dict(os.environ), tmp_path / "y.log", None)
    finally:
        buildkit.BUILDS.reset()
