"""Builds through a BuildKit-capable docker CLI (the SDK cannot do BuildKit builds).

The CA bundle reaches pip/uv as a BuildKit secret (`--mount=type=secret,id=ca`),
so it is never written into a layer or shown by `docker history`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .errors import DockerUnavailable
from .failures import StepFailed, read_build_log

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


def _run(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess | None:
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


class BuildFailed(StepFailed):
    """The build exited non-zero; its diagnosis is read from BuildKit's output."""


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
        outcome = _stream(command, env, request.log_path, on_progress)
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        if outcome.returncode != 0 or not image_id:
            raise BuildFailed(read_build_log(outcome.lines, request.framework_package), f"full log: {request.log_path}")
        return image_id


@dataclass
class _Outcome:
    returncode: int
    lines: list[str]  # all of BuildKit's output: the step that failed may be far from the end


def _stream(command: list[str], env: dict, log_path: Path, on_progress) -> _Outcome:
    lines: list[str] = []
    # Appended, each run under its own header: two runs (other namespaces share build/logs) never
    # truncate each other's log, and an earlier failure's log survives the retry.
    with open(log_path, "a") as log:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"\n===== {started} pid {os.getpid()} =====\n$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            errors="replace",
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            line = line.rstrip("\n")
            lines.append(line)
            if on_progress:
                match = STEP_PATTERN.match(line)
                if match:
                    on_progress(f"step {match.group(1)}/{match.group(2)}: {match.group(3)[:60]}")
        returncode = process.wait()
    return _Outcome(returncode, lines)
