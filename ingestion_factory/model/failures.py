"""Why a build or a smoke test failed, said the way the failing tool said it.

A failure becomes a Diagnosis: its kind (Cause), one line for the table, the tool's own
explanation (uv's resolver, apt, main.py --check), and the command that failed, shown last
because it is long and the same every time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from ..errors import FactoryError

EXPLANATION_LINES = 15  # enough for uv's resolver story; the full log has the rest
COMMAND_CHARS = 160


class Cause(Enum):
    PACKAGE_NOT_FOUND = "package not found"
    HASH_MISMATCH = "hash does not match the lock"
    SBOM_MISMATCH = "SBOM does not match the lock"
    PIN_CONFLICT = "version conflict with the parent's pins"
    FRAMEWORK_CHANGE = "would change the framework version"
    VERSION_CONFLICT = "version conflict"
    NETWORK = "network or TLS failure"
    DEBIAN_PACKAGE_NOT_FOUND = "Debian package not found"
    BUILD_STEP = "build step failed"
    PLUGIN_IMPORT = "plugin import failed"
    SMOKE_TEST = "smoke test failed"
    SMOKE_TIMEOUT = "smoke test timed out"
    BUILD_TIMEOUT = "build timed out"
    NO_OUTPUT_TIMEOUT = "build printed nothing for too long"
    INTERRUPTED = "interrupted"
    ENGINE = "Docker engine error"
    UNEXPECTED = "unexpected error"


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    reason: str  # one line, for the table and the error summary
    explanation: tuple[str, ...] = ()  # the failing tool's own words
    command: str = ""  # what failed; last, because it is long

    @property
    def details(self) -> tuple[str, ...]:
        return self.explanation + ((f"failed command: {self.command}",) if self.command else ())


class StepFailed(FactoryError):
    """A build, verify or tag step that failed, with its diagnosis."""

    def __init__(self, diagnosis: Diagnosis, hint: str | None = None):
        super().__init__(diagnosis.reason, hint)
        self.diagnosis = diagnosis


def diagnose(exc: BaseException) -> Diagnosis:
    """Any error of a build -> verify -> tag run as a Diagnosis."""
    if isinstance(exc, StepFailed):
        return exc.diagnosis
    return Diagnosis(Cause.UNEXPECTED, f"{type(exc).__name__}: {exc}")  # a disk filled up, a bug...


# --- BuildKit logs -------------------------------------------------------------------------------

# "#8 0.206 text" is output of step 8; "#8 [stage-1 3/3] RUN ..." its header; "#8 ERROR: ..." its end.
STEP_LINE = re.compile(r"^#(?P<step>\d+) (?P<rest>.*)$")
STEP_OUTPUT = re.compile(r"^\d+\.\d+(?: (?P<text>.*))?$")
STEP_HEADER = re.compile(r"^\[(?P<stage>[^\]]+)\] (?P<command>.*)$")
EXIT_CODE = re.compile(r"exit code: (\d+)")
# Where a tool starts saying what went wrong: uv (×, error:), pip (ERROR:), apt (E:, W:, Err:).
MESSAGE_START = re.compile(r"^\s*(?:×|error:|ERROR:|E:|W:|Err:)")

NETWORK_MARKERS = (
    "failed to fetch", "error sending request", "dns error", "failed to lookup address", "connection refused",
    "connect error", "timed out", "network is unreachable", "tls handshake", "invalid peer certificate",
    "certificate verify failed", "unknownissuer", "sslerror", "newconnectionerror", "proxyerror",
    "max retries exceeded", "temporary failure resolving", "could not resolve", "could not connect to",
    "unable to connect",
)
TLS_MARKERS = ("certificate", "tls", "ssl", "unknownissuer")
# uv explains a failure as a chain, outermost first: "Caused by: ..." or "├─▶ ..." / "╰─▶ ...".
CAUSE_CHAIN = re.compile(r"^\s*(?:Caused by:|[├╰]─▶)\s*")
URL = re.compile(r"https?://[^\s`'\")]+")
DEBIAN_MISSING = re.compile(
    r"E: (?:Unable to locate package (?P<a>\S+)|Package '(?P<b>[^']+)' has no installation candidate"
    r"|Couldn't find any package by (?:glob|regex) '(?P<c>[^']+)'|Version '[^']+' for '(?P<d>[^']+)' was not found)"
)
PACKAGE_MISSING = re.compile(
    r"Because (?P<registry>\S+) was not found in the package registry"
    r"|there is no version of (?P<version>\S+?)(?: and |,|$)"
    r"|No matching distribution found for (?P<pip>\S+)"
)
# "... depends on numpy<2 and numpy==2.4.6 ..." or "you require x==1 and x==2": the second is the parent's pin.
PIN_CLASH = re.compile(
    r"(?P<package>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?(?P<wanted>(?:[<>=!~]=?[^\s,]+)(?:,\s*[<>=!~]=?[^\s,]+)*)"
    r" and (?P=package)==(?P<pinned>[^\s,]+)"
)
# uv: "Hash mismatch for `six==1.17.0`" (a lock edited by hand, or a file the index changed).
HASH_MISMATCH = re.compile(r"Hash mismatch for `(?P<package>[^`]+)`")
RESOLVER_STORY = re.compile(r"(Because .*?unsatisfiable\.|Because .*?cannot be used\.)")


@dataclass(frozen=True)
class _Step:
    command: str  # "[stage-1 3/3] RUN ..." as BuildKit names it
    output: tuple[str, ...]
    error: str

    @property
    def text(self) -> str:
        """The output as one line: uv wraps its sentences, package names included."""
        return " ".join(" ".join(self.output).split())


def read_build_log(lines: Iterable[str], framework_package: str = "") -> Diagnosis:
    """Diagnose a failed BuildKit build from its plain-progress output."""
    lines = list(lines)
    step = _failing_step(lines)
    for rule in (_hash_mismatch, _network, _debian_package_missing, _package_missing, _version_conflict):
        diagnosis = rule(step, framework_package)
        if diagnosis:
            return diagnosis
    exit_code = EXIT_CODE.search(step.error)
    what = f"build step exited {exit_code.group(1)}" if exit_code else "build failed"
    last = next((line.strip() for line in reversed(step.output) if line.strip()), step.error)
    return Diagnosis(Cause.BUILD_STEP, f"{what}: {last}", _explanation(step.output), _short(step.command))


def _failing_step(lines: list[str]) -> _Step:
    headers: dict[str, str] = {}
    outputs: dict[str, list[str]] = {}
    failed, error = None, ""
    for line in lines:
        match = STEP_LINE.match(line.rstrip("\n"))
        if not match:
            continue
        step, rest = match["step"], match["rest"]
        if rest.startswith("ERROR: "):
            failed, error = step, rest.removeprefix("ERROR: ")
        elif (output := STEP_OUTPUT.match(rest)) is not None:
            outputs.setdefault(step, []).append(output["text"] or "")
        elif (header := STEP_HEADER.match(rest)) is not None:
            headers[step] = f"[{header['stage']}] {header['command']}"
    if failed is None:
        # Failed before any step ran (a Dockerfile error, a missing parent): BuildKit's own error lines.
        errors = tuple(line.strip() for line in lines if re.match(r"^\s*(?:ERROR|error|failed to solve)", line))
        return _Step("", errors, errors[-1] if errors else "")
    return _Step(headers.get(failed, ""), tuple(outputs.get(failed, ())), error)


def _explanation(output: tuple[str, ...]) -> tuple[str, ...]:
    """From where the tool starts explaining to the end; the last lines when it never says."""
    start = next((i for i, line in enumerate(output) if MESSAGE_START.match(line)), None)
    chosen = output[start:] if start is not None else output[-10:]
    return tuple(line.rstrip() for line in chosen[:EXPLANATION_LINES])


def _short(command: str) -> str:
    command = " ".join(command.split())
    return command if len(command) <= COMMAND_CHARS else command[: COMMAND_CHARS - 1] + "…"


def _hash_mismatch(step: _Step, framework_package: str) -> Diagnosis | None:
    match = HASH_MISMATCH.search(step.text)
    if not match:
        return None
    reason = (f"hash mismatch for {match['package']}: the file downloaded is not the one the lock pins "
              "(a lock edited by hand, or a file changed on the index); run `inv lock` to re-resolve")
    return Diagnosis(Cause.HASH_MISMATCH, reason, _explanation(step.output), _short(step.command))


def _network(step: _Step, framework_package: str) -> Diagnosis | None:
    hits = [line.strip() for line in step.output if any(m in line.lower() for m in NETWORK_MARKERS)]
    if not hits:
        return None
    chain = [CAUSE_CHAIN.sub("", line) for line in step.output if CAUSE_CHAIN.match(line)]
    root = chain[-1] if chain else hits[0]  # uv's innermost cause; apt and pip say it first
    url = URL.search(" ".join(hits))
    reason = f"network or TLS failure{f' fetching {url.group(0)}' if url else ''}: {root}"
    if any(marker in root.lower() for marker in TLS_MARKERS):
        reason += " (behind a TLS-intercepting proxy? give its CA with --ca-bundle)"
    return Diagnosis(Cause.NETWORK, reason, _explanation(step.output), _short(step.command))


def _debian_package_missing(step: _Step, framework_package: str) -> Diagnosis | None:
    names = [next(name for name in match.groups() if name) for match in DEBIAN_MISSING.finditer(step.text)]
    if not names:
        return None
    reason = f"Debian package not found: {', '.join(dict.fromkeys(names))} (check os_packages in connector.toml)"
    apt_says = tuple(line.strip() for line in step.output if line.startswith("E:"))
    return Diagnosis(Cause.DEBIAN_PACKAGE_NOT_FOUND, reason, apt_says, _short(step.command))


def _package_missing(step: _Step, framework_package: str) -> Diagnosis | None:
    match = PACKAGE_MISSING.search(step.text)
    if not match:
        return None
    if match["registry"]:
        reason = f"package not found: {match['registry']} was not found in the package registry"
    elif match["version"]:
        reason = f"package not found: there is no version of {match['version']}"
    else:
        reason = f"package not found: no matching distribution for {match['pip']}"
    if "requirements.lock" in step.command:
        reason += " (the lock pins a version the index no longer has: run `inv lock --upgrade-package NAME`)"
    return Diagnosis(Cause.PACKAGE_NOT_FOUND, reason, _explanation(step.output), _short(step.command))


def read_resolver_output(text: str, framework_package: str = "") -> Diagnosis:
    """Diagnose uv's output outside a build (`inv lock`): the same rules, the pins being the parent's lock's."""
    step = _Step("uv pip compile", tuple(line for line in text.splitlines() if line.strip()), "")
    for rule in (_network, _package_missing):
        diagnosis = rule(step, framework_package)
        if diagnosis:
            return replace(diagnosis, command="")
    diagnosis = _version_conflict(step, framework_package, pinned_by="the parent's lock")
    if diagnosis:
        return replace(diagnosis, command="")
    first = next((line.strip() for line in step.output), "uv said nothing")
    return Diagnosis(Cause.UNEXPECTED, first, _explanation(step.output))


def _version_conflict(step: _Step, framework_package: str, pinned_by: str = "the parent image") -> Diagnosis | None:
    text = step.text
    if "No solution found" not in text and "unsatisfiable" not in text:
        return None
    clashes = list(PIN_CLASH.finditer(text))
    on_framework = [m for m in clashes if m["package"].lower() == framework_package.lower()]
    if on_framework:
        match = on_framework[0]
        cause = Cause.FRAMEWORK_CHANGE
        reason = (f"the fragment would change the framework version: it needs {match['package']}{match['wanted']} "
                  f"but {pinned_by} pins {match['package']}=={match['pinned']}")
    elif clashes:
        match = clashes[0]
        cause = Cause.PIN_CONFLICT
        reason = (f"version conflict with the parent's pins: the fragment needs {match['package']}{match['wanted']} "
                  f"but {pinned_by} pins {match['package']}=={match['pinned']}")
    else:
        story = RESOLVER_STORY.search(text)
        cause = Cause.VERSION_CONFLICT
        reason = f"version conflict: {story.group(1) if story else 'the resolver found no solution'}"
    return Diagnosis(cause, reason, _explanation(step.output), _short(step.command))


# --- the smoke test ------------------------------------------------------------------------------

PLUGIN_MISSING_EXIT = 3  # main.py's exit code for a framework, plugin or module that does not import


def read_smoke_output(exit_code: int, output: str, command: str) -> Diagnosis:
    """Diagnose a `python main.py --check` that exited non-zero."""
    lines = output.splitlines()
    summary = _summary(lines)
    said = summary.get("reason", "")
    if exit_code == PLUGIN_MISSING_EXIT:
        missing = tuple(line for line in lines if line.startswith("MISSING"))
        return Diagnosis(Cause.PLUGIN_IMPORT, f"plugin import failed in the smoke test: {said or 'exit 3'}",
                         missing or tuple(lines[-10:]), command)
    reason = f"smoke test exited {exit_code}" + (f": {said}" if said else "")
    return Diagnosis(Cause.SMOKE_TEST, reason, tuple(lines[-EXPLANATION_LINES:]), command)


def _summary(lines: list[str]) -> dict[str, Any]:  # main.py's JSON, as parsed
    """main.py's last line is a JSON summary; anything else means it never got that far."""
    try:
        summary = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}
