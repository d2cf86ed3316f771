"""Runs that never lie, against a real engine: two runs at once, an interrupt mid-build, a stalled download.

Two runs at once and the stalled download use datahub-sqlite (the smallest connector) in one scratch
project: built once, then two forced rebuilds at once, then one whose download stalls behind a proxy
that accepts connections and never answers. The interrupt is the acceptance's own case, mysql, in the
session's shared project (its OpenMetadata base and mysql are built there for the runtime tests anyway,
so it adds only the interrupted build and the re-run).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from scratch_project import REPO
from testkit import DH_VERSION, OM_VERSION

from ingestion_factory.engine import verify
from ingestion_factory.model.plan import LABEL_NAME, LABEL_PARENT

CONNECTOR = "datahub-sqlite"


@pytest.fixture(scope="module")
def project(module_project):
    module_project.inv("build-connectors", "-c", CONNECTOR)
    return module_project


def _start_inv(project, *args, env=None):
    # Unbuffered: the test reads the progress lines as they come, to interrupt mid-build.
    full_env = dict(os.environ, INVOKE_FACTORY_NAMESPACE=project.namespace, PYTHONPATH=str(REPO),
                    PYTHONUNBUFFERED="1", **(env or {}))
    # A session of its own, as a shell's job: the signal reaches inv only, never the build it runs.
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=project.root, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _image_id(api, ref):
    return api.api.inspect_image(ref)["Id"]


def _build_processes() -> list[str]:
    """docker build / buildx processes of a factory build still alive (their --iidfile is in factory-build-*)."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if "factory-build-" in line and "ps -eo" not in line]


def _pin_tags(api) -> list[str]:
    return [tag for image in api.images.list() for tag in image.tags if tag.startswith(verify.PIN_REPOSITORY)]


def test_two_forced_builds_at_once_both_succeed_one_after_the_other(project, docker_api):
    first = _start_inv(project, "build-connectors", "-c", CONNECTOR, "--force")
    time.sleep(1.5)
    second = _start_inv(project, "build-connectors", "-c", CONNECTOR, "--force")
    outputs = [process.communicate(timeout=900)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    waited = [output for output in outputs if "waiting for pid" in output]
    assert len(waited) == 1, outputs
    assert "the other run finished; going on" in waited[0]
    report = project.report()
    assert report[CONNECTOR]["result"] == "built"
    log = (project.root / "build" / "logs" / f"{CONNECTOR}.log").read_text()
    assert log.count("===== ") >= 3  # the first build and both forced ones, none truncated
    assert _image_id(docker_api, project.ref(CONNECTOR, "latest")) == _image_id(
        docker_api, project.ref(CONNECTOR, DH_VERSION))
    # The first run's image was replaced by the second's and removed: no untagged copy is left behind.
    base_id = _image_id(docker_api, project.ref("base-datahub", "latest"))
    dangling = [image for image in docker_api.images.list(filters={"dangling": True})
                if image.labels.get(LABEL_NAME) == CONNECTOR and image.labels.get(LABEL_PARENT) == base_id]
    assert dangling == []


def test_an_interrupt_mid_build_tags_nothing_and_leaves_no_build_behind(factory_project, docker_api):
    project, connector = factory_project, "mysql"
    project.inv("build-connectors", "--jobs", "1", "-c", connector)  # a no-op when the runtime tests built it
    before = _image_id(docker_api, project.ref(connector, "latest"))
    pins_before = set(_pin_tags(docker_api))  # other runs' pins are none of this run's business
    # --no-cache: with a warm cache mysql's BuildKit build takes under a second, too short to interrupt.
    process = _start_inv(project, "build-connectors", "-c", connector, "--force", "--no-cache")
    lines: list[str] = []
    building = threading.Event()

    def pump():
        for line in process.stdout:
            lines.append(line)
            if f"{connector}: building" in line or "step " in line:
                building.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert building.wait(300), "".join(lines)
    time.sleep(3)  # well inside the build: --no-cache re-runs every step
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    reader.join(10)
    output = "".join(lines)
    assert code == 130, output
    assert "interrupted by SIGINT" in output
    assert _image_id(docker_api, project.ref(connector, "latest")) == before  # no tag moved
    assert _image_id(docker_api, project.ref(connector, OM_VERSION)) == before
    assert _build_processes() == []
    assert set(_pin_tags(docker_api)) <= pins_before
    report = project.report()
    assert report[connector]["result"] == "not built" and report[connector]["reason"] == "interrupted (SIGINT)"
    # The re-run builds it.
    project.inv("build-connectors", "-c", connector, "--force")
    assert project.report()[connector]["result"] == "built"


class SilentProxy:
    """Accepts connections on 127.0.0.1 and never answers: a download that stalls."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self):
        for connection in self.held:
            connection.close()
        self.server.close()


def test_a_stalled_download_fails_at_the_no_output_timeout_naming_it(project, docker_api):
    proxy = SilentProxy()
    dockerfile = project.root / "images" / "connectors" / "Dockerfile"
    original = dockerfile.read_text()
    # A download through the proxy in the image stage; the token keeps BuildKit from reusing a cached result.
    stall = (f"RUN echo {uuid.uuid4().hex} && python3 -c \"import urllib.request; "
             "urllib.request.urlopen('https://pypi.org/simple/', timeout=600)\"\n")
    dockerfile.write_text(original.replace("FROM ${PARENT_IMAGE} AS os\nUSER root\n",
                                           "FROM ${PARENT_IMAGE} AS os\nUSER root\n" + stall, 1))
    try:
        started = time.monotonic()
        completed = project.inv("build-connectors", "-c", CONNECTOR, check=False, timeout=600,
                                env={"HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}",
                                     "https_proxy": f"http://127.0.0.1:{proxy.port}",
                                     "INVOKE_FACTORY_BUILD_NO_OUTPUT_TIMEOUT": "20"})
        elapsed = time.monotonic() - started
    finally:
        dockerfile.write_text(original)
        proxy.close()
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "the no-output timeout fired: nothing printed for 20s" in output
    result = project.report()[CONNECTOR]
    assert result["result"] == "failed" and result["cause"] == "build printed nothing for too long"
    assert elapsed < 300
    assert _build_processes() == []
