"""Builds through a BuildKit-capable docker CLI (the SDK cannot do BuildKit builds).

The CA bundle reaches pip/uv as a BuildKit secret (`--mount=type=secret,id=ca`),
so it is never written into a layer or shown by `docker history`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from .. import interrupts
from ..errors import DockerUnavailable
from ..model.failures import Cause, Diagnosis, StepFailed, read_build_log

CLI_CANDIDATES = ("/usr/bin/docker", "docker", "/usr/local/bin/docker")
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
NO_BUILDKIT_HINT = (
    "install the buildx plugin (Debian/Ubuntu: `apt-get install docker-buildx`, or docker-buildx-plugin from "
    "Docker's repository), or use a docker CLI older than 23 that builds with BuildKit natively "
    "(Debian's docker.io 20.10: /usr/bin/docker); set FACTORY_DOCKER_CLI to choose one"
)


@dataclass(frozen=True)
class BuildKitCLI:
    path: str
    version: str
    uses_buildx: bool

    def build_command(self) -> list[str]:
        if self.uses_buildx:
            # --load puts the result in the engine's image store, like a classic build.
            return [self.path, "buildx", "build", "--load"]
        return [self.path, "build"]


def _run(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def probe_cli(path: str) -> BuildKitCLI | None:
    """A BuildKitCLI for this docker binary if it can run BuildKit builds, else None."""
    resolved = shutil.which(path)
    if not resolved:
        return None
    version = _run([resolved, "version", "--format", "{{.Client.Version}}"])
    if version is None or not version.stdout.strip():
        return None
    client_version = version.stdout.strip()
    buildx = _run([resolved, "buildx", "version"])
    if buildx is not None and buildx.returncode == 0:
        return BuildKitCLI(resolved, client_version, uses_buildx=True)
    if native_buildkit(client_version):
        return BuildKitCLI(resolved, client_version, uses_buildx=False)
    return None


def native_buildkit(client_version: str) -> bool:
    """Clients 18.09-22.x run BuildKit builds themselves; 23+ hand them to buildx."""
    match = re.match(r"(\d+)\.(\d+)", client_version)
    if not match:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return (major, minor) >= (18, 9) and major < 23


@lru_cache(maxsize=1)
def find_cli() -> BuildKitCLI:
    """The first BuildKit-capable docker CLI: FACTORY_DOCKER_CLI, then the usual places."""
    chosen = os.environ.get("FACTORY_DOCKER_CLI")
    candidates = (chosen,) if chosen else CLI_CANDIDATES
    tried = []
    for candidate in candidates:
        cli = probe_cli(candidate)
        if cli:
            return cli
        tried.append(candidate)
    raise DockerUnavailable(f"no BuildKit-capable docker CLI found (tried {', '.join(tried)})", NO_BUILDKIT_HINT)


@dataclass(frozen=True)
class BuildRequest:
    dockerfile: Path
    context: Path
    build_args: dict[str, str]
    labels: dict[str, str]
    ca_bundle: Path | None
    log_path: Path
    no_cache: bool = False
    # The framework the parent pins, so a resolver clash on it is named as a framework change.
    framework_package: str = ""
    platform: str = ""  # e.g. linux/arm64; empty: the engine's own
    # Seconds the whole build may take, and may go without printing a line (a stalled download); 0: no limit.
    timeout_s: float = 0
    no_output_timeout_s: float = 0


class BuildFailed(StepFailed):
    """The build exited non-zero; its diagnosis is read from BuildKit's output."""


class BuildInterrupted(StepFailed):
    """The run was interrupted (end_builds): this build was ended, or never started."""


# How long an ended build's docker CLI gets to cancel the build in the engine before it is killed.
END_GRACE_S = 10.0


def end_process(process: subprocess.Popen[str], grace_s: float = END_GRACE_S) -> None:
    """Cancel a build's process group (SIGINT, what the CLI cancels a build on), then kill what is left."""
    for signum, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# The docker build processes of this run, so an interrupt can end every one of them. Each runs in a
# session of its own: a Ctrl-C at the terminal reaches only the factory, which then ends the builds itself
# (SIGINT: the CLI cancels the build in the engine), and no build can start, finish or be tagged behind its back.
BUILDS = interrupts.Running(end_process, lambda why: BuildInterrupted(Diagnosis(Cause.INTERRUPTED, why)))


def end_builds(reason: str) -> None:
    """Interrupt: end every build this process runs, and start none."""
    BUILDS.end_all(reason)


STEP_PATTERN = re.compile(r"^#\d+ \[(?:[\w-]+ )?(\d+)/(\d+)\] (.*)")


def build(request: BuildRequest, on_progress: Callable[[str], None] | None = None) -> str:
    """Run one BuildKit build; return the new image ID. The image gets no tag here."""
    cli = find_cli()
    request.log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="factory-build-") as scratch:
        iidfile = Path(scratch) / "iid"
        command = [
            *cli.build_command(),
            "--progress=plain",
            # Host network: reach package indexes through the host's proxy/DNS set-up.
            "--network=host",
            "--file", str(request.dockerfile),
            "--iidfile", str(iidfile),
        ]
        if request.no_cache:
            command.append("--no-cache")
        if request.platform:
            command += ["--platform", request.platform]
        if request.ca_bundle:
            command += ["--secret", f"id=ca,src={request.ca_bundle}"]
        for key, value in sorted(request.build_args.items()):
            command += ["--build-arg", f"{key}={value}"]
        for key in PROXY_ARGS:
            # Predefined proxy args: Docker keeps them out of the image's history.
            if os.environ.get(key) and key not in request.build_args:
                command += ["--build-arg", key]
        for key, value in sorted(request.labels.items()):
            command += ["--label", f"{key}={value}"]
        command.append(str(request.context))
        env = dict(os.environ, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain")
        outcome = _stream(command, env, request.log_path, on_progress, timeout_s=request.timeout_s,
                          no_output_timeout_s=request.no_output_timeout_s)
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        if BUILDS.ended:
            raise BuildInterrupted(Diagnosis(Cause.INTERRUPTED, BUILDS.ended), f"full log: {request.log_path}")
        if outcome.timed_out:
            raise BuildFailed(outcome.timed_out, f"full log: {request.log_path}")
        if outcome.returncode != 0 or not image_id:
            raise BuildFailed(read_build_log(outcome.lines, request.framework_package), f"full log: {request.log_path}")
        return image_id


@dataclass
class _Outcome:
    returncode: int
    lines: list[str]  # all of BuildKit's output: the step that failed may be far from the end
    timed_out: Diagnosis | None = None  # which timeout ended the build


# Each build appends its run to the image's log under a line starting with this.
LOG_RUN_HEADER = "===== "


def last_run(log: str) -> str:
    """The newest build's part of an appended build log (the whole text if it has no run header)."""
    start = log.rfind("\n" + LOG_RUN_HEADER)
    return log if start < 0 else log[start + 1:]


def _stream(command: list[str], env: dict[str, str], log_path: Path, on_progress: Callable[[str], None] | None,
            *, timeout_s: float = 0, no_output_timeout_s: float = 0) -> _Outcome:
    lines: list[str] = []
    # Appended, each run under its own header: two runs (other namespaces share build/logs) never
    # truncate each other's log, and an earlier failure's log survives the retry.
    with open(log_path, "a") as log:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"\n{LOG_RUN_HEADER}{started} pid {os.getpid()} =====\n$ " + " ".join(command) + "\n")
        log.flush()
        process = BUILDS.start(lambda: subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            errors="replace", start_new_session=True))
        watch = _Watch(process, timeout_s, no_output_timeout_s)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                watch.saw_output()
                log.write(line)
                line = line.rstrip("\n")
                lines.append(line)
                if on_progress:
                    match = STEP_PATTERN.match(line)
                    if match:
                        on_progress(f"step {match.group(1)}/{match.group(2)}: {match.group(3)[:60]}")
            returncode = process.wait()
        finally:
            watch.stop()
            if process.poll() is None:  # this thread was interrupted: the build must not go on without us
                end_process(process)
            BUILDS.forget(process)
        if watch.fired:
            log.write(f"\n{watch.fired.reason}\n")
    return _Outcome(returncode, lines, watch.fired)


class _Watch:
    """Ends a build that runs longer than its timeout, or prints nothing for longer than its no-output timeout."""

    def __init__(self, process: subprocess.Popen[str], timeout_s: float, no_output_timeout_s: float) -> None:
        self.process = process
        self.timeout_s = timeout_s
        self.no_output_timeout_s = no_output_timeout_s
        self.started = self.last_output = time.monotonic()
        self.fired: Diagnosis | None = None
        self._stopped = threading.Event()
        if timeout_s or no_output_timeout_s:
            threading.Thread(target=self._run, name="build-timeout", daemon=True).start()

    def saw_output(self) -> None:
        self.last_output = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(0.5):
            now = time.monotonic()
            if self.timeout_s and now - self.started >= self.timeout_s:
                self.fired = Diagnosis(Cause.BUILD_TIMEOUT, f"the build timeout fired: still running after "
                                       f"{self.timeout_s:g}s (setting build_timeout)")
            elif self.no_output_timeout_s and now - self.last_output >= self.no_output_timeout_s:
                self.fired = Diagnosis(Cause.NO_OUTPUT_TIMEOUT, f"the no-output timeout fired: nothing printed for "
                                       f"{self.no_output_timeout_s:g}s, a stalled download or step "
                                       "(setting build_no_output_timeout)")
            if self.fired:
                end_process(self.process)
                return
