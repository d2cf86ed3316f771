"""Locks: every Python package of an image, pinned with hashes, resolved once by `inv lock`.

One lock per image and framework version, committed next to its inputs (model/versions.py):
  images/sbom/requirements.lock                          the SBOM generator (a build-stage tool)
  images/base/frameworks/<fw>/<version>/requirements.lock  a base: the framework and everything it needs
  images/connectors/<name>/locks/<version>.lock           a connector: its parent's lock plus the fragment

A framework version's overrides (uv's `--overrides`: a requirement of the framework replaced or dropped)
apply to the base and every connector of that version; its constraints to the base, and through the base's
exact pins to every connector. Both are named in the lock's header, which every image carries.

A lock is uv's `pip compile --generate-hashes` output for the images' Python and platform, under a
short header. The header's `inputs` digest covers what the resolution depended on (requirements,
constraints, Python, platform, the parent lock's packages), so `inv lock --check` tells a stale lock
without asking any index. Builds install exactly the lock (`uv pip sync --require-hashes`): no resolution.

A lock's identity is its content digest: its pins and hashes, not its header. Children record it and
image input hashes count it, so a re-lock that pins the same packages (a base whose catalog gained an
extra that moves nothing) keeps every child lock current and every image up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import lru_cache
from graphlib import TopologicalSorter
from pathlib import Path

from packaging.utils import canonicalize_name

from ..errors import ConfigError
from ..files import write_atomically
from ..model import versions as versions_mod
from ..model.catalog import BASE, Catalog, framework_drift, parse_fragment
from ..model.failures import Cause, read_resolver_output
from ..model.lockfile import LOCK_NAME, PACKAGE_LINE, content_digest
from ..model.results import StepResult, StepStatus
from ..settings import Settings
from ..status import Status

SBOM_TOOL = "sbom-tool"
# Bump when the way locks are resolved changes in a way their inputs do not show.
RECIPE_VERSION = "1"
# Old sdists import pkg_resources, which setuptools 81 removed (the connector Dockerfile says the same).
BUILD_CONSTRAINTS = "setuptools<81\n"
# The other platform a lock records wheel coverage for (issue: arm64 images).
OTHER_PLATFORM = "aarch64-manylinux_2_36"
HEADER_LINE = re.compile(r"^# (?P<key>[a-z][a-z0-9-]*): (?P<value>.*)$")
UV_TIMEOUT_S = 900
NEEDS_WHEEL = re.compile(r"Wheels are required for `(?P<name>[^`]+)`")


class LockState(Status):
    """How a committed lock compares with its inputs (`inv lock --check`, and before every build)."""

    CURRENT = "current", "green"
    MISSING = "missing", "bold red"
    STALE = "inputs changed", "yellow"
    PARENT_STALE = "parent lock changed", "yellow"
    OTHER_PYTHON = "for another Python", "bold red"
    INVALID = "invalid", "bold red"


class LockStatus(StepStatus):
    """What `inv lock` did to one lock."""

    CREATED = "created", "green"
    UPDATED = "updated", "green"
    UNCHANGED = "unchanged", "dim"
    FAILED = "failed", "bold red"
    NOT_LOCKED = "not locked", "yellow"  # its parent's lock failed

    @property
    def failed(self) -> bool:
        return self in (LockStatus.FAILED, LockStatus.NOT_LOCKED)


@dataclass(frozen=True)
class LockTarget:
    """What one lock is resolved from."""

    name: str  # catalog key, or SBOM_TOOL
    image: str  # what the header names: "ingestion-connector-mysql"
    path: Path
    parent: str | None  # the lock this one is resolved under (a connector's parent image)
    requirements: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    # A base: its framework's extras the catalog's connectors use, resolved jointly first so that the
    # packages the base shares with them are at versions they all accept (see the base Dockerfile).
    joint_request: str = ""
    framework_package: str = ""  # named when a resolution clash is on the framework itself
    drift: str | None = None  # why the fragment would move the framework off the base's version
    overrides: tuple[str, ...] = ()  # the framework version's uv overrides (overrides.txt)
    version: str = ""  # the framework version it is for ("" for the SBOM tool)

    def inputs(self, settings: Settings, parent_digest: str | None) -> str:
        header: dict = {
            "recipe": RECIPE_VERSION,
            "image": self.image,
            "python": settings.python_version,
            "platform": settings.lock_platform,
            "requirements": list(self.requirements),
            "constraints": list(self.constraints),
            "joint": self.joint_request,
            "parent-lock": parent_digest,
        }
        if self.overrides:  # absent when there are none, so locks without overrides kept their inputs digest
            header["overrides"] = list(self.overrides)
        return "sha256:" + hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LockFile:
    path: Path
    header: dict[str, str]
    packages: dict[str, str]  # canonical name -> version
    digest: str  # content_digest: what children record and the image's lock-digest label

    @property
    def pins(self) -> str:
        return "".join(f"{name}=={version}\n" for name, version in sorted(self.packages.items()))


@dataclass(frozen=True)
class LockCheck:
    name: str
    path: Path
    state: LockState
    detail: str = ""
    version: str = ""  # the framework version of the lock ("" for the SBOM tool)

    @property
    def current(self) -> bool:
        return self.state is LockState.CURRENT


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        if self.old is None:
            return f"+ {self.name} {self.new}"
        if self.new is None:
            return f"- {self.name} {self.old}"
        return f"{self.name}: {self.old} -> {self.new}"


@dataclass(frozen=True, kw_only=True)
class LockResult(StepResult):
    """What `inv lock` did to one lock (its entry in lock-latest.json: JSON_KEYS)."""

    JSON_KEYS = ("name", "path", "status", "message=detail", "packages", "changes=change_lines")

    path: Path
    status: LockStatus
    changes: tuple[PackageChange, ...] = ()
    packages: int = 0
    warnings: tuple[str, ...] = ()
    details: tuple[str, ...] = ()  # for failures: uv's own explanation
    same_content: bool = False  # re-written with the same pins and hashes: its identity did not move
    transient: bool = False  # failed because the index did not answer, not because of what it said

    @property
    def change_lines(self) -> list[str]:
        return [str(change) for change in self.changes]


# --- what to lock ------------------------------------------------------------------------------------


def sbom_dir(settings: Settings) -> Path:
    return settings.images_dir / "sbom"


def lock_path(catalog: Catalog, name: str, settings: Settings) -> Path:
    if name == SBOM_TOOL:
        return sbom_dir(settings) / LOCK_NAME
    lock = catalog[name].lock
    assert lock is not None, f"{name} has no lock path"
    return lock


def version_overrides(settings: Settings, framework) -> tuple[str, ...]:
    """The uv overrides of a framework version (images/base/frameworks/<fw>/<version>/overrides.txt)."""
    path = versions_mod.version_dir(settings.images_dir, framework) / versions_mod.OVERRIDES
    if not path.is_file():
        return ()
    return parse_fragment(path, _shown(path, settings), allow_empty=True)


def targets(catalog: Catalog, settings: Settings, only_framework: str | None = None) -> dict[str, LockTarget]:
    """A lock target for the SBOM tool and every image that can be built, parents before children
    (`only_framework`: that framework's images only, as for another version of it)."""
    found: dict[str, LockTarget] = {}
    tool_requirements = sbom_dir(settings) / "requirements.txt"
    if not tool_requirements.is_file():
        raise ConfigError(f"{tool_requirements.relative_to(settings.root)} is missing",
                          "it lists the SBOM generator every build runs (cyclonedx-bom)")
    found[SBOM_TOOL] = LockTarget(SBOM_TOOL, "the SBOM generator", lock_path(catalog, SBOM_TOOL, settings), None,
                                  parse_fragment(tool_requirements, tool_requirements.relative_to(settings.root)))
    for spec in catalog:
        if spec.unavailable or only_framework not in (None, spec.framework.name):
            continue
        path = lock_path(catalog, spec.name, settings)
        overrides = version_overrides(settings, spec.framework)
        if spec.kind == BASE:
            framework_dir = versions_mod.framework_dir(settings.images_dir, spec.framework)
            requirements = (spec.framework.requirement, *_optional_fragment(framework_dir / "requirements.txt",
                                                                            settings))
            constraints = version_constraints(settings, spec.framework)
            extras = ",".join(spec.extras)
            joint = spec.framework.requirement.replace("==", f"[{extras}]==", 1) if extras else ""
            found[spec.name] = LockTarget(spec.name, spec.image_name, path, None, requirements, constraints, joint,
                                          spec.framework.package, overrides=overrides, version=spec.version)
        else:
            found[spec.name] = LockTarget(spec.name, spec.image_name, path, spec.parent, spec.requirements,
                                          framework_package=spec.framework.package, drift=framework_drift(spec),
                                          overrides=overrides, version=spec.version)
    return found


def resolution(settings: Settings, framework) -> dict[str, list[str]]:
    """What a framework version resolves differently from a plain `pip install` of it: its constraints and uv
    overrides ({} when none). Builds name it in the SBOM and a label; the attestation carries the label."""
    found = {"constraints": list(version_constraints(settings, framework)),
             "overrides": list(version_overrides(settings, framework))}
    return {key: lines for key, lines in found.items() if lines}


def version_constraints(settings: Settings, framework) -> tuple[str, ...]:
    """The framework's constraints, then its selected version's own (their order is part of the inputs digest)."""
    return (*_optional_fragment(versions_mod.framework_dir(settings.images_dir, framework) / versions_mod.CONSTRAINTS,
                                settings),
            *_optional_fragment(versions_mod.version_dir(settings.images_dir, framework) / versions_mod.CONSTRAINTS,
                                settings))


def _optional_fragment(path: Path, settings: Settings) -> tuple[str, ...]:
    return parse_fragment(path, _shown(path, settings), allow_empty=True) if path.is_file() else ()


def select(all_targets: dict[str, LockTarget], names: Iterable[str] | None) -> list[str]:
    """The named locks and the locks they are resolved under, parents first; every lock when none are named."""
    if not names:
        return list(_order(all_targets, all_targets))
    chosen: set[str] = set()
    for name in names:
        key = name.removeprefix("ingestion-connector-")
        if key not in all_targets:
            raise ConfigError(f"no lock {name!r}", "name a connector or base (`inv list`), or sbom-tool")
        while key is not None and key not in chosen:
            chosen.add(key)
            key = all_targets[key].parent
    return [name for name in _order(all_targets, all_targets) if name in chosen]


def _order(all_targets: dict[str, LockTarget], names: Iterable[str]) -> Iterable[str]:
    graph = {name: [all_targets[name].parent] if all_targets[name].parent else [] for name in names}
    return TopologicalSorter(graph).static_order()


# --- reading and checking ------------------------------------------------------------------------------


def read(path: Path) -> LockFile | None:
    """The lock at `path`, None when there is none; a ConfigError when it is not a lock."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    text = data.decode("utf-8", errors="replace")
    header: dict[str, str] = {}
    packages: dict[str, str] = {}
    unhashed = []
    current = None
    for line in text.splitlines():
        if not packages and (match := HEADER_LINE.match(line)):
            header[match["key"]] = match["value"].strip()
        elif match := PACKAGE_LINE.match(line):
            current = canonicalize_name(match["name"])
            packages[current] = match["version"]
            if "--hash=" not in line and not line.rstrip().endswith("\\"):
                unhashed.append(current)
    if "inputs" not in header or not packages:
        raise ConfigError(f"{path} is not a lock written by `inv lock`", "delete it and run `inv lock`")
    if unhashed:
        raise ConfigError(f"{path}: {', '.join(unhashed)} pinned without --hash", "locks pin every package with its hashes; run `inv lock`")
    return LockFile(path, header, packages, content_digest(text))


def check(all_targets: dict[str, LockTarget], settings: Settings, names: Iterable[str] | None = None) -> list[LockCheck]:
    """How each selected lock compares with its inputs, parents first. Reads files only: no index is asked."""
    results: dict[str, LockCheck] = {}
    digests: dict[str, str | None] = {}
    for name in select(all_targets, names):
        target = all_targets[name]
        shown = _shown(target.path, settings)
        try:
            lock = read(target.path)
        except ConfigError as error:
            results[name], digests[name] = LockCheck(name, target.path, LockState.INVALID, error.message,
                                                     target.version), None
            continue
        digests[name] = lock.digest if lock else None
        parent = results.get(target.parent) if target.parent else None
        if lock is None:
            state, detail = LockState.MISSING, f"{shown} does not exist"
        elif lock.header.get("python") != settings.python_version:
            state, detail = LockState.OTHER_PYTHON, (
                f"{shown} is for Python {lock.header.get('python', '?')}; the images run Python "
                f"{settings.python_version} (factory.python_version)")
        elif parent is not None and digests.get(target.parent) is None:
            state, detail = LockState.PARENT_STALE, f"the lock of {target.parent} must be written first"
        # A parent that is merely stale does not make its children stale: only a re-lock that moves its
        # packages does (then `parent-lock` differs), so a header-only re-lock leaves them current.
        elif lock.header["inputs"] != target.inputs(settings, digests.get(target.parent)):
            if target.parent and lock.header.get("parent-lock") != digests.get(target.parent):
                state, detail = LockState.PARENT_STALE, (f"the packages of {target.parent}'s lock changed since "
                                                         f"{shown} was written")
            else:
                state, detail = LockState.STALE, f"{_inputs_named(target)} changed since {shown} was written"
        else:
            state, detail = LockState.CURRENT, f"{len(lock.packages)} packages"
        results[name] = LockCheck(name, target.path, state, detail, target.version)
    return list(results.values())


def fix_command(checks: Iterable[LockCheck]) -> str:
    """What makes these locks current again: `inv lock -c a -c b` when the same locks are stale in every
    version named (inv lock covers every version), else one `... --version V` per version."""
    by_version: dict[str, list[str]] = {}
    for check_ in checks:
        if not check_.current:
            by_version.setdefault(check_.version, []).append(check_.name)
    tool = by_version.pop("", [])  # the SBOM tool's lock belongs to no version
    if not by_version or len({tuple(names) for names in by_version.values()}) == 1 and len(by_version) > 1:
        names = tool + next(iter(by_version.values()), [])
        return "inv lock" + _named(names)
    commands = []
    for index, (version, names) in enumerate(by_version.items()):
        commands.append("inv lock" + _named((tool if index == 0 else []) + names) + f" --version {version}")
    return "; ".join(commands)


def _named(names: list[str]) -> str:
    """` -c a -c b`; nothing for many (the whole version reads better; current locks are left as they are)."""
    unique = list(dict.fromkeys(names))
    return "" if len(unique) > 8 else "".join(f" -c {name}" for name in unique)


def require_current(all_targets: dict[str, LockTarget], settings: Settings, names: Iterable[str]) -> dict[str, LockFile]:
    """The locks of these images, or a ConfigError (before anything is built) naming the stale ones."""
    checks = check(all_targets, settings, names)
    bad = [c for c in checks if not c.current]
    if bad:
        lines = "; ".join(f"{c.name}: {c.state} ({c.detail})" for c in bad)
        raise ConfigError(f"{len(bad)} lock(s) do not match their inputs: {lines}", f"run: {fix_command(bad)}")
    return {c.name: read(c.path) for c in checks}  # type: ignore[misc]


def _inputs_named(target: LockTarget) -> str:
    if target.name == SBOM_TOOL:
        return "requirements.txt"
    if target.parent is None:
        return "the framework version, requirements.txt, constraints.txt, the catalog's extras or factory.python_version"
    return "requirements.txt (or factory.python_version)"


def _shown(path: Path, settings: Settings) -> str:
    try:
        return str(path.relative_to(settings.root))
    except ValueError:
        return str(path)


# --- resolving ----------------------------------------------------------------------------------------

# uv's command line (without the uv binary) -> the completed process; injectable for tests.
Resolver = Callable[[list[str], dict], subprocess.CompletedProcess]


@lru_cache(maxsize=1)
def uv_binary() -> str:
    """The uv the tool's environment installed (the `uv` dependency puts it next to python), else PATH's."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        raise ConfigError("uv is not installed", "reinstall the tool: .venv/bin/pip install -e .")
    return found


def run_uv(args: list[str], env: dict) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([uv_binary(), *args], env=env, capture_output=True, text=True, timeout=UV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise LockFailed(f"uv did not finish within {UV_TIMEOUT_S} s (is the package index reachable?)",
                         transient=True) from None
    except OSError as exc:
        raise LockFailed(f"cannot run uv: {exc}") from None


class LockFailed(Exception):
    """uv could not resolve a lock: the diagnosis in one line, then uv's own explanation."""

    def __init__(self, reason: str, explanation: tuple[str, ...] = (), *, transient: bool = False):
        super().__init__(reason)
        self.explanation = explanation
        self.transient = transient  # the index did not answer (network, TLS, timeout): trying again may work


class Locker:
    """Writes locks parents first, `jobs` at a time; a lock is replaced only once it is complete."""

    def __init__(self, settings: Settings, all_targets: dict[str, LockTarget], *, resolver: Resolver = run_uv,
                 upgrade: bool = False, upgrade_packages: Iterable[str] = (),
                 on_progress: Callable[[str, str], None] | None = None):
        self.settings = settings
        self.targets = all_targets
        self.resolver = resolver
        self.upgrade = upgrade
        self.upgrade_packages = tuple(canonicalize_name(p) for p in upgrade_packages)
        self.on_progress = on_progress or (lambda name, text: None)
        self.env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", NO_COLOR="1")
        ca_bundle = settings.resolved_ca_bundle()
        if ca_bundle:
            self.env["SSL_CERT_FILE"] = str(ca_bundle)
        self._lock = threading.Lock()
        self._verdicts: dict[tuple[str, str, str], bool] = {}  # (platform, name, version) -> needs a source build

    def run(self, names: list[str], *, upgrade_names: Iterable[str] | None = None, jobs: int = 2) -> list[LockResult]:
        """Lock `names` (parents first). `upgrade_names`: the ones --upgrade applies to (default: all)."""
        upgrade_names = set(names if upgrade_names is None else upgrade_names)
        results: dict[str, LockResult] = {}
        graph = {name: {self.targets[name].parent} & set(names) for name in names}
        sorter = TopologicalSorter(graph)
        sorter.prepare()
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lock") as pool:
            running = {}
            while sorter.is_active():
                for name in sorter.get_ready():
                    parent = self.targets[name].parent
                    if parent in results and results[parent].status.failed:
                        results[name] = LockResult(name=name, path=self.targets[name].path,
                                                   status=LockStatus.NOT_LOCKED, detail=f"the lock of {parent} failed")
                        sorter.done(name)
                        continue
                    running[pool.submit(self._lock_one, name, name in upgrade_names)] = name
                if not running:
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    results[name] = future.result()
                    sorter.done(name)
        return [results[name] for name in names]

    def newest(self, name: str) -> dict[str, str]:
        """What a fresh resolution of this lock's inputs picks (as `--upgrade` would), writing nothing:
        `inv audit`'s answer to "which locked packages could move"."""
        target = self.targets[name]
        parent = self._parent_lock(target)
        try:
            old = read(target.path)
        except ConfigError:
            old = None
        with tempfile.TemporaryDirectory(prefix="factory-newest-") as scratch:
            body, _ = self._compile(target, parent, old, True, Path(scratch))
        return {canonicalize_name(m["name"]): m["version"] for line in body.splitlines() if (m := PACKAGE_LINE.match(line))}

    def newest_release(self, package: str) -> str | None:
        """The newest release of one package for the images' Python and platform, its dependencies aside
        (None when the index has none): a framework's next version."""
        with tempfile.TemporaryDirectory(prefix="factory-release-") as scratch:
            source, output = Path(scratch) / "in.txt", Path(scratch) / "out.txt"
            source.write_text(f"{package}\n")
            completed = self.resolver([*self._common(), "--no-deps", "--output-file", str(output), str(source)],
                                      self.env)
            if completed.returncode != 0 or not output.is_file():
                return None
            return next((m["version"] for line in output.read_text().splitlines()
                         if (m := PACKAGE_LINE.match(line))), None)

    def _lock_one(self, name: str, upgrading: bool) -> LockResult:
        target = self.targets[name]
        started = time.monotonic()
        try:
            result = self._resolve(target, upgrading)
        except LockFailed as failure:
            result = LockResult(name=name, path=target.path, status=LockStatus.FAILED, detail=str(failure),
                                details=failure.explanation, transient=failure.transient)
        except ConfigError as error:
            result = LockResult(name=name, path=target.path, status=LockStatus.FAILED, detail=error.message)
        except Exception as exc:  # an OSError writing it, a broken resolver: this lock fails, the others' stay
            result = LockResult(name=name, path=target.path, status=LockStatus.FAILED,
                                detail=f"{type(exc).__name__}: {exc}")
        self.on_progress(name, str(result.status))
        return replace(result, duration_s=round(time.monotonic() - started, 1))

    def _parent_lock(self, target: LockTarget) -> LockFile | None:
        if target.parent is None:
            return None
        parent = read(self.targets[target.parent].path)
        if parent is None:
            raise ConfigError(f"the lock of {target.parent} is missing")
        return parent

    def _resolve(self, target: LockTarget, upgrading: bool) -> LockResult:
        try:
            old = read(target.path)
        except ConfigError:
            old = None  # not a lock: replaced by a real one
        parent = self._parent_lock(target)
        inputs = target.inputs(self.settings, parent.digest if parent else None)
        wanted = set(self.upgrade_packages)
        current = old is not None and old.header.get("inputs") == inputs and old.header.get("python") == \
            self.settings.python_version
        if current and not (upgrading and (self.upgrade or wanted & old.packages.keys())):
            return LockResult(name=target.name, path=target.path, status=LockStatus.UNCHANGED, detail="current",
                              packages=len(old.packages))
        if target.drift:  # exact, and before asking the index
            raise LockFailed(target.drift)
        self.on_progress(target.name, "resolving")
        with tempfile.TemporaryDirectory(prefix="factory-lock-") as scratch:
            work = Path(scratch)
            body, warnings = self._compile(target, parent, old, upgrading, work)
        new_packages = {canonicalize_name(m["name"]): m["version"]
                        for line in body.splitlines() if (m := PACKAGE_LINE.match(line))}
        self.on_progress(target.name, "checking wheels")
        source_only = self._source_only(new_packages, self.settings.lock_platform)
        other_source_only = self._source_only(new_packages, OTHER_PLATFORM)
        text = self._document(target, inputs, parent, body, source_only, other_source_only, warnings)
        changes = diff(old.packages if old else {}, new_packages)
        if old is not None and target.path.read_text() == text:
            return LockResult(name=target.name, path=target.path, status=LockStatus.UNCHANGED,
                              detail="re-resolved: nothing changed", packages=len(new_packages), warnings=warnings)
        write_atomically(target.path, text)
        status = LockStatus.CREATED if old is None else LockStatus.UPDATED
        same_content = old is not None and old.digest == content_digest(text)
        message = f"{len(new_packages)} packages" + ("; only its inputs changed" if same_content else "")
        return LockResult(name=target.name, path=target.path, status=status, detail=message, changes=tuple(changes),
                          packages=len(new_packages), warnings=warnings, same_content=same_content)

    def _common(self) -> list[str]:
        return ["pip", "compile", "--python-version", self.settings.python_version,
                "--python-platform", self.settings.lock_platform, "--no-header", "--no-annotate", "--quiet"]

    def _upgrade_flags(self, upgrading: bool) -> list[str]:
        if not upgrading:
            return []
        if self.upgrade:
            return ["--upgrade"]
        return [flag for package in self.upgrade_packages for flag in ("--upgrade-package", package)]

    def _uv(self, args: list[str], target: LockTarget) -> None:
        completed = self.resolver(args, self.env)
        if completed.returncode != 0:
            diagnosis = read_resolver_output(completed.stderr or completed.stdout, target.framework_package)
            raise LockFailed(diagnosis.reason, diagnosis.explanation, transient=diagnosis.cause is Cause.NETWORK)

    def _compile(self, target: LockTarget, parent: LockFile | None, old: LockFile | None, upgrading: bool,
                 work: Path) -> tuple[str, tuple[str, ...]]:
        """uv's hashed resolution of the target, preferring the versions of the old lock."""
        requirements = work / "requirements.in"
        requirements.write_text("".join(f"{line}\n" for line in target.requirements))
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{line}\n" for line in target.constraints))
        build_constraints = work / "build-constraints.txt"
        build_constraints.write_text(BUILD_CONSTRAINTS)
        output = work / "lock.txt"
        preferences = old.path.read_text() if old and not (upgrading and self.upgrade) else ""
        inputs = [str(requirements)]
        sets = ["--constraints", str(constraints), "--build-constraints", str(build_constraints)]
        if target.overrides:
            overrides = work / "overrides.txt"
            overrides.write_text("".join(f"{line}\n" for line in target.overrides))
            sets += ["--overrides", str(overrides)]
        warnings: tuple[str, ...] = ()
        if parent is not None:
            # Under the parent's exact pins, which are also requirements: the framework cannot drift
            # and the child's lock is the image's complete package set.
            pins = work / "parent-pins.txt"
            pins.write_text(parent.pins)
            inputs.insert(0, str(pins))
            sets += ["--constraints", str(pins)]
        if target.joint_request:
            joint_in, joint = work / "joint.in", work / "joint.txt"
            joint_in.write_text(target.joint_request + "\n")
            joint.write_text(preferences)
            try:
                self._uv([*self._common(), *self._upgrade_flags(upgrading), *sets, str(joint_in),
                          str(requirements), "--output-file", str(joint)], target)
                sets += ["--constraints", str(joint)]
            except LockFailed as failure:
                warnings = (f"the catalog's extras cannot be resolved together, so the base is locked without "
                            f"them: {failure}",)
        output.write_text(preferences)
        self._uv([*self._common(), *self._upgrade_flags(upgrading), "--generate-hashes", *sets, *inputs,
                  "--output-file", str(output)], target)
        return output.read_text(), warnings

    def _source_only(self, packages: dict[str, str], platform: str) -> tuple[str, ...]:
        """The packages of a lock with no wheel for `platform` (built from source there).

        uv is asked to take each pinned version from wheels only, and names one refusal at a time.
        Verdicts are kept for the run: a connector only asks about the packages its parent lacks.
        """
        with self._lock:
            unknown = {name: version for name, version in packages.items()
                       if (platform, name, version) not in self._verdicts}
        if unknown:
            needs_source = self._ask_wheels(unknown, platform)
            if needs_source is not None:
                with self._lock:
                    for name, version in unknown.items():
                        self._verdicts[(platform, name, version)] = name in needs_source
            else:
                return ("? (uv could not tell)",)
        with self._lock:
            return tuple(sorted(name for name, version in packages.items() if self._verdicts[(platform, name, version)]))

    def _ask_wheels(self, packages: dict[str, str], platform: str) -> set[str] | None:
        allowed: set[str] = set()
        with tempfile.TemporaryDirectory(prefix="factory-wheels-") as scratch:
            source = Path(scratch) / "pins.txt"
            source.write_text("".join(f"{name}=={version}\n" for name, version in sorted(packages.items())))
            for _ in range(len(packages) + 1):
                binary_only = ",".join(name for name in sorted(packages) if name not in allowed)
                args = ["pip", "compile", "--python-version", self.settings.python_version, "--python-platform",
                        platform, "--no-deps", "--quiet", "--output-file", str(Path(scratch) / "out.txt"), str(source)]
                if binary_only:
                    args += ["--only-binary", binary_only]
                completed = self.resolver(args, self.env)
                if completed.returncode == 0:
                    return allowed
                match = NEEDS_WHEEL.search(" ".join((completed.stderr or "").split()))
                if not match or canonicalize_name(match["name"]) in allowed:
                    return None
                allowed.add(canonicalize_name(match["name"]))
        return None

    def _document(self, target: LockTarget, inputs: str, parent: LockFile | None, body: str,
                  source_only: tuple[str, ...], other_source_only: tuple[str, ...], warnings: tuple[str, ...]) -> str:
        fix = "inv lock" + (f" -c {target.name} --version {target.version}" if target.name != SBOM_TOOL
                            else " -c sbom-tool")
        lines = [
            f"# Lock of {target.image}: every Python package it installs, pinned with hashes.",
            f"# Written by `{fix}` (uv pip compile); do not edit: change its inputs and run that again.",
            f"# python: {self.settings.python_version}",
            f"# platform: {self.settings.lock_platform}",
            f"# inputs: {inputs}",
        ]
        if parent is not None:
            lines.append(f"# parent-lock: {parent.digest}")
        lines.append(f"# built-from-source: {', '.join(source_only) or 'none (a wheel for every package)'}")
        lines.append(f"# {OTHER_PLATFORM.split('-')[0]}-built-from-source: "
                     f"{', '.join(other_source_only) or 'none (a wheel for every package)'}")
        # What differs from a plain `pip install` of the framework: read into the SBOM and the attestation.
        if target.constraints:
            lines.append(f"# constraints: {json.dumps(list(target.constraints))}")
        if target.overrides:
            lines.append(f"# overrides: {json.dumps(list(target.overrides))}")
        if warnings:
            lines.append("# warning: the catalog's extras could not be resolved together")
        return "\n".join(lines) + "\n" + body


def diff(old: dict[str, str], new: dict[str, str]) -> list[PackageChange]:
    """What moved between two locks' packages, by name."""
    return [PackageChange(name, old.get(name), new.get(name)) for name in sorted(old.keys() | new.keys())
            if old.get(name) != new.get(name)]
