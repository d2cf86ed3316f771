"""The smoke test against a fake engine: a real timeout is told apart from an engine that went away."""

import http.client
import json
import threading

import pytest
import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from ingestion_factory.engine import verify
from ingestion_factory.model.failures import Cause


class FakeContainer:
    def __init__(self, *, wait=None, status=0, output="", remove_error=None):
        self.wait_error, self.status, self.output, self.remove_error = wait, status, output, remove_error
        self.killed = self.removed = False

    def start(self):
        pass

    def wait(self, timeout):
        if self.wait_error:
            raise self.wait_error
        return {"StatusCode": self.status}

    def kill(self):
        self.killed = True

    def logs(self, stdout=True, stderr=True):
        return self.output.encode()

    def remove(self, force=False):
        if self.remove_error:
            raise self.remove_error
        self.removed = True


class FakeAPI:
    def __init__(self, container):
        self.container = container
        self.containers = self

    def create(self, image, command, **options):
        assert options["network_mode"] == "none"
        self.options = options
        return self.container


# What docker-py raises over the unix socket (checked against a real engine in tests/integration).
UNIX_SOCKET_TIMEOUT = requests.exceptions.ConnectionError(
    ReadTimeoutError(None, None, "UnixHTTPConnectionPool(host='localhost', port=None): Read timed out."))
DAEMON_GONE = requests.exceptions.ConnectionError(
    ProtocolError("Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection")))


@pytest.mark.parametrize("error", [UNIX_SOCKET_TIMEOUT, requests.exceptions.ReadTimeout("read timed out")])
def test_a_smoke_test_that_hangs_is_a_timeout(error):
    container = FakeContainer(wait=error)
    with pytest.raises(verify.SmokeFailed) as failed:
        verify.smoke_test(FakeAPI(container), "sha256:x")
    assert failed.value.diagnosis.cause is Cause.SMOKE_TIMEOUT
    assert failed.value.message == f"smoke test did not finish in {verify.SMOKE_TIMEOUT_S}s"
    assert container.killed and container.removed


def test_an_engine_that_went_away_is_not_called_a_timeout():
    container = FakeContainer(wait=DAEMON_GONE, remove_error=DAEMON_GONE)
    with pytest.raises(verify.SmokeFailed) as failed:
        verify.smoke_test(FakeAPI(container), "sha256:x")
    diagnosis = failed.value.diagnosis
    assert diagnosis.cause is Cause.ENGINE
    assert "did not finish" not in diagnosis.reason
    assert diagnosis.reason.startswith("waiting for the smoke test failed: ConnectionError:")
    assert "Connection aborted" in diagnosis.reason
    assert not container.killed


def test_a_plugin_that_does_not_import_fails_the_smoke_test_by_name():
    output = "MISSING import x: cannot import x: not installed\n" + json.dumps(
        {"status": "missing_plugin", "exit_code": 3, "reason": "cannot import x: not installed"})
    with pytest.raises(verify.SmokeFailed) as failed:
        verify.smoke_test(FakeAPI(FakeContainer(status=3, output=output)), "sha256:x")
    assert failed.value.diagnosis.cause is Cause.PLUGIN_IMPORT
    assert failed.value.message == "plugin import failed in the smoke test: cannot import x: not installed"


def test_a_passing_smoke_test_returns_its_output():
    result = verify.smoke_test(FakeAPI(FakeContainer(status=0, output="ok")), "sha256:x")
    assert (result.exit_code, result.output) == (0, "ok")


class BlockingContainer(FakeContainer):
    """Runs until killed, as `main.py --check` does for seconds."""

    def __init__(self):
        super().__init__()
        self.started = threading.Event()
        self.stopped = threading.Event()

    def start(self):
        self.started.set()

    def wait(self, timeout):
        assert self.stopped.wait(10)
        return {"StatusCode": 137}

    def kill(self):
        self.killed = True
        self.stopped.set()


def test_ending_the_smoke_tests_kills_a_running_one_and_starts_no_other():
    container = BlockingContainer()
    failures = []

    def smoke():
        try:
            verify.smoke_test(FakeAPI(container), "sha256:x")
        except verify.SmokeFailed as exc:
            failures.append(exc)

    thread = threading.Thread(target=smoke)
    thread.start()
    try:
        assert container.started.wait(10)
        verify.end_smoke_tests("interrupted (SIGINT)")
        thread.join(10)
        assert not thread.is_alive() and container.killed and container.removed
        assert failures[0].diagnosis.cause is Cause.INTERRUPTED  # not blamed on the image
        later = FakeContainer()
        with pytest.raises(verify.SmokeFailed, match="not started: interrupted"):
            verify.smoke_test(FakeAPI(later), "sha256:y")
        assert later.removed
    finally:
        verify.SMOKE_TESTS.reset()


def test_a_smoke_test_yields_the_cpu_to_builds():
    """Builds share one cgroup of weight 1024; a smoke test weighs less, so it never slows a build down."""
    api = FakeAPI(FakeContainer(status=0, output="ok"))
    verify.smoke_test(api, "sha256:x")
    assert 2 <= api.options["cpu_shares"] < 1024
