"""Catalog: every image the repository defines, read and validated from images/.

Layout:
  images/base/Dockerfile                 the base of every framework family
  images/base/frameworks/<fw>/           requirements.txt + constraints.txt per framework, and a directory
                                         per supported version (model/versions.py)
  images/connectors/Dockerfile           the shared connector Dockerfile
  images/connectors/<name>/              one image per directory:
      requirements.txt                   the requirements fragment (required)
      connector.toml                     optional settings, see ConnectorSettings
      Dockerfile                         optional, replaces the shared one
      locks/<version>.lock               its lock for each framework version (`inv lock`)

A catalog is for one version per framework: the settings' selected one (settings.with_framework_version).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import ConfigError
from ..files import is_temporary
from ..platforms import Platform
from ..platforms import parse as parse_platform
from ..settings import Framework, Settings
from . import versions as versions_mod
from .graph import parents_first
from .lockfile import is_lock
from .runtime_modules import runtime_redaction  # the runtime's secret rule: the one its log masking uses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BASE = "base"
CONNECTOR = "connector"
SYNC_STATE_DIR = ".catalog"  # images/connectors/.catalog/<framework>.json: what `inv catalog` last wrote
FRAGMENT = "requirements.txt"
CONNECTOR_SETTINGS = "connector.toml"
IMAGE_PREFIX = "ingestion-connector-"
CONNECTOR_KEYS = {"framework", "parent", "source", "check_modules", "os_packages", "build_packages", "description",
                  "build_args", "unavailable", "notes", "unavailable_platforms"}
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# Debian policy 5.6.1: lowercase letters, digits, + - . ; at least two characters, starting alphanumeric.
# Nothing else (no space, quote, $ ; | * ...) can reach the shell that installs them.
DEBIAN_PACKAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# Build arguments a connector.toml must not set: those the factory's Dockerfiles declare (the builder
# sets them: parent image, packages, install mode, identity) are added from the Dockerfiles themselves;
# these BuildKit reads on its own (the frontend image, proxies the build's downloads go through, platforms).
BUILDKIT_BUILD_ARGS = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
                                 "https_proxy", "ftp_proxy", "no_proxy", "all_proxy", "BUILDPLATFORM", "BUILDOS",
                                 "BUILDARCH", "BUILDVARIANT", "TARGETPLATFORM", "TARGETOS", "TARGETARCH",
                                 "TARGETVARIANT", "FRAMEWORK_EXTRAS"})
BUILD_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARG_LINE = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def reserved_build_args(*dockerfiles: Path) -> frozenset[str]:
    """Every build argument the factory sets or BuildKit reads: never a connector.toml's to choose."""
    declared = {name for path in dockerfiles if path.is_file() for name in _ARG_LINE.findall(path.read_text())}
    return frozenset(declared) | BUILDKIT_BUILD_ARGS


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: where its inputs are and what it is built FROM."""

    name: str  # catalog key: "base", "base-datahub", "mysql", "datahub-postgres"
    kind: str  # BASE or CONNECTOR
    image_name: str  # "ingestion-connector-mysql"
    framework: Framework
    dockerfile: Path
    context: Path
    parent: str | None = None  # catalog key of the image built FROM (None: the Python image)
    fragment: Path | None = None
    requirements: tuple[str, ...] = ()
    source: str = ""
    check_modules: tuple[str, ...] = ()
    os_packages: tuple[str, ...] = ()  # Debian packages the image keeps (runtime libraries, binaries)
    build_packages: tuple[str, ...] = ()  # Debian packages only a build stage gets (compilers, -dev)
    build_args: tuple[tuple[str, str], ...] = ()
    # A base: the framework's extras its available connectors install. Only its lock is resolved with them
    # (see lock.targets); the image is what that lock pins, so they are not an input of the image itself.
    extras: tuple[str, ...] = ()
    description: str = ""
    unavailable: str = ""  # why this connector cannot be built here; empty when it can
    # (platform, reason) for platforms this connector cannot exist on, e.g. ("linux/arm64", "no aarch64 driver")
    unavailable_platforms: tuple[tuple[str, str], ...] = ()
    declared_framework: str | None = None  # what connector.toml says, before parents are resolved
    input_files: tuple[Path, ...] = field(default=(), compare=False)
    lock: Path | None = None  # the lock it installs, for its framework's selected version

    @property
    def version(self) -> str:
        return self.framework.version


@dataclass(frozen=True)
class Catalog:
    images: dict[str, ImageSpec]
    # Connector directories that cannot be built, with the reason; the others still can.
    broken: dict[str, ConfigError] = field(default_factory=dict)

    def unavailable_on(self, spec: ImageSpec, platform: Platform) -> str:
        """Why `spec` cannot be built for `platform` (its own entry or an ancestor's); "" when it can."""
        current: ImageSpec | None = spec
        while current is not None:
            reason = dict(current.unavailable_platforms).get(str(platform), "")
            if reason:
                return reason if current is spec else f"parent {current.name}: {reason}"
            current = self.images.get(current.parent) if current.parent else None
        return ""

    def __iter__(self) -> Iterator[ImageSpec]:
        return iter(self.images.values())

    def __getitem__(self, name: str) -> ImageSpec:
        return self.images[name]

    def __contains__(self, name: object) -> bool:
        return name in self.images

    @property
    def connectors(self) -> list[ImageSpec]:
        return [spec for spec in self if spec.kind == CONNECTOR]

    @property
    def available_connectors(self) -> list[ImageSpec]:
        return [spec for spec in self.connectors if not spec.unavailable]

    @property
    def bases(self) -> list[ImageSpec]:
        return [spec for spec in self if spec.kind == BASE]

    def base_for(self, framework: str) -> ImageSpec:
        for spec in self.bases:
            if spec.framework.name == framework:
                return spec
        raise ConfigError(f"no base image for framework {framework!r}")

    def resolve(self, names: list[str] | None) -> list[str]:
        """Catalog keys for names given by a user (connector dir names or image names)."""
        if not names:
            return [spec.name for spec in self.available_connectors]
        resolved = []
        for raw in names:
            name = raw.removeprefix(IMAGE_PREFIX)
            if name in self.broken:
                raise self.broken[name]
            if name not in self.images:
                known = ", ".join(sorted([s.name for s in self.connectors] + list(self.broken)))
                close = [s.name for s in self.connectors if name in s.name or s.name in name]
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"unknown connector {raw!r}", f"{hint}known connectors: {known}")
            spec = self.images[name]
            if spec.unavailable:
                where = (f"images/base/frameworks/{spec.framework.name}/{spec.version}/catalog.toml; `inv list` shows "
                         "the versions that have it") if spec.unavailable.startswith("not in ") else \
                    f"images/connectors/{name}/{CONNECTOR_SETTINGS}"
                raise ConfigError(f"connector {name!r} is unavailable: {spec.unavailable}", f"see {where}")
            resolved.append(name)
        return list(dict.fromkeys(resolved))

    @property
    def parents(self) -> dict[str, str | None]:
        """Each image's parent key (None: the Python image): the build graph, for graph.parents_first."""
        return {name: spec.parent for name, spec in self.images.items()}


def discover(settings: Settings) -> Catalog:
    """Read images/ into a validated Catalog, or raise ConfigError naming the bad file."""
    images_dir = settings.images_dir
    base_dir = images_dir / "base"
    if not (base_dir / "Dockerfile").is_file():
        raise ConfigError(f"{base_dir / 'Dockerfile'} is missing", "the base image needs images/base/Dockerfile")
    images: dict[str, ImageSpec] = {}
    broken: dict[str, ConfigError] = {}
    for framework in settings.frameworks.values():
        spec = _base_spec(settings, framework)
        images[spec.name] = spec
    connectors_dir = images_dir / "connectors"
    shared_dockerfile = connectors_dir / "Dockerfile"
    reserved = reserved_build_args(base_dir / "Dockerfile", shared_dockerfile)
    if connectors_dir.is_dir():
        for directory in sorted(p for p in connectors_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                spec = _connector_spec(settings, directory, shared_dockerfile, reserved)
            except ConfigError as error:
                # One bad directory must not stop the other connectors from building.
                broken[directory.name] = error
                continue
            if spec.name in images:
                raise ConfigError(f"connector {spec.name!r} clashes with a base image name")
            images[spec.name] = spec
    _drop_children_of_broken(images, broken)
    _resolve_parents(images, settings)
    _apply_version_unavailability(images, settings)
    _pass_unavailability_down(images)
    _give_bases_their_extras(images)
    return Catalog(images, broken)


def framework_extras(spec: ImageSpec) -> set[str]:
    """The extras of its own framework a connector's fragment installs: mysql for `openmetadata-ingestion[mysql]`."""
    package = canonicalize_name(spec.framework.package)
    return {extra for line in spec.requirements
            for requirement in [Requirement(line)]
            if canonicalize_name(requirement.name) == package
            for extra in requirement.extras}


def _give_bases_their_extras(images: dict[str, ImageSpec]) -> None:
    """Each base resolves its framework with every extra its available connectors install (see the base
    Dockerfile), so the pins it passes down suit them all."""
    for name, base in list(images.items()):
        if base.kind != BASE:
            continue
        extras = set()
        for spec in images.values():
            if spec.kind == CONNECTOR and not spec.unavailable and spec.framework.name == base.framework.name:
                extras |= framework_extras(spec)
        if extras:
            images[name] = replace(base, extras=tuple(sorted(extras)))


def _apply_version_unavailability(images: dict[str, ImageSpec], settings: Settings) -> None:
    """A connector its framework's selected version cannot have (no such source there, or its lock failed:
    images/base/frameworks/<fw>/<version>/catalog.toml) is unavailable in this catalog, with that reason.
    Its framework is known only now (a child takes its parent's), and so is the lock it installs."""
    catalogs = {name: versions_mod.read_catalog(settings.images_dir, framework)
                for name, framework in settings.frameworks.items()}
    generated = {name: generated_directories(settings.images_dir, name) for name in settings.frameworks}
    for name, spec in list(images.items()):
        if spec.kind != CONNECTOR:
            continue
        lock = versions_mod.connector_lock(spec.context, spec.framework)
        inputs = tuple(p for p in spec.input_files if not is_lock(p) or p.parent != lock.parent) + (
            (lock,) if lock.is_file() else ())
        fw = spec.framework
        reason = catalogs[fw.name].reason(name, spec.source, name in generated[fw.name])
        images[name] = replace(spec, lock=lock, input_files=inputs, unavailable=spec.unavailable or (
            f"not in {fw.package} {fw.version}: {reason}" if reason else ""))


def generated_directories(images_dir: Path, framework: str) -> frozenset[str]:
    """The connector directories `inv catalog` wrote for a framework (its sync state's record)."""
    path = images_dir / "connectors" / SYNC_STATE_DIR / f"{framework}.json"
    try:
        return frozenset(json.loads(path.read_text()).get("connectors", {}))
    except (OSError, ValueError, AttributeError):
        return frozenset()


def _pass_unavailability_down(images: dict[str, ImageSpec]) -> None:
    """A connector built FROM an unavailable one cannot be built either: it is unavailable too, with a
    reason naming its parent, so build, list and lock all pass over it the same way."""
    for name in parents_first({n: s.parent for n, s in images.items()}):
        spec = images[name]
        parent = images.get(spec.parent) if spec.parent else None
        if parent is not None and parent.unavailable and not spec.unavailable:
            images[name] = replace(spec, unavailable=f"built FROM {parent.name}, which is unavailable: "
                                                     f"{parent.unavailable}")


def _drop_children_of_broken(images: dict[str, ImageSpec], broken: dict[str, ConfigError]) -> None:
    changed = True
    while changed:
        changed = False
        for name, spec in list(images.items()):
            if spec.parent in broken:
                broken[name] = ConfigError(f"connector {name!r} is built FROM {spec.parent!r}, which is broken",
                                           broken[spec.parent].render())
                del images[name]
                changed = True


def base_key(framework: Framework) -> str:
    return framework.base_image.removeprefix(IMAGE_PREFIX)


def _base_spec(settings: Settings, framework: Framework) -> ImageSpec:
    root = settings.root
    base_dir = settings.images_dir / "base"
    framework_dir = versions_mod.framework_dir(settings.images_dir, framework)
    version_dir = versions_mod.version_dir(settings.images_dir, framework)
    if not framework_dir.is_dir():
        raise ConfigError(
            f"framework {framework.name!r} has no directory {framework_dir.relative_to(root)}",
            "add requirements.txt and constraints.txt there",
        )
    runtime = sorted((root / "runtime").glob("*.py"))
    if not (root / "runtime" / "main.py").is_file():
        raise ConfigError("runtime/main.py is missing", "every image runs `python main.py`")
    # The SBOM generator's lock and script travel in every base, and connectors run them from there.
    sbom_tool = sorted(p for p in (settings.images_dir / "sbom").glob("*") if p.is_file() and not is_temporary(p))
    # The framework's own files and its selected version's (not another version's, nor the list of what
    # that version's catalog lacks, which changes no base).
    framework_files = sorted(p for p in [*framework_dir.glob("*"), *version_dir.glob("*")]
                             if p.is_file() and not is_temporary(p) and p.name != versions_mod.VERSION_CATALOG)
    # prune.py decides what the base leaves out, layer.py what its layers hold (both travel in it for connector builds).
    inputs = [base_dir / "Dockerfile", base_dir / "prune.py", base_dir / "layer.py", *framework_files, *runtime,
              *sbom_tool]
    return ImageSpec(
        name=base_key(framework),
        kind=BASE,
        image_name=framework.base_image,
        framework=framework,
        dockerfile=base_dir / "Dockerfile",
        context=root,
        requirements=(framework.requirement,),
        check_modules=framework.modules,
        description=f"{framework.package} {framework.version} and runtime/main.py",
        input_files=tuple(inputs),
        lock=versions_mod.base_lock(settings.images_dir, framework),
    )


def _connector_spec(settings: Settings, directory: Path, shared_dockerfile: Path,
                    reserved: frozenset[str] = BUILDKIT_BUILD_ARGS) -> ImageSpec:
    name = directory.name
    where = directory.relative_to(settings.root)
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"connector directory {where} is not a valid image name",
            "use lowercase letters, digits and single - _ . separators",
        )
    fragment = directory / FRAGMENT
    if not fragment.is_file():
        raise ConfigError(f"{where} has no {FRAGMENT}", "every connector directory holds a requirements fragment")
    requirements = parse_fragment(fragment, where / FRAGMENT)
    options = _read_connector_settings(directory / CONNECTOR_SETTINGS, where / CONNECTOR_SETTINGS)
    dockerfile = directory / "Dockerfile" if (directory / "Dockerfile").is_file() else shared_dockerfile
    if not dockerfile.is_file():
        raise ConfigError(f"{where} has no Dockerfile and {shared_dockerfile.relative_to(settings.root)} is missing")
    framework_name = options.get("framework")
    framework = settings.framework_named(framework_name) if framework_name else None
    os_packages = tuple(options.get("os_packages", ()))
    build_packages = tuple(options.get("build_packages", ()))
    for package in os_packages + build_packages:
        if not DEBIAN_PACKAGE_PATTERN.fullmatch(package):
            raise ConfigError(f"{where / CONNECTOR_SETTINGS}: {package!r} is not a Debian package name")
    build_args = _checked_build_args(options.get("build_args", {}), reserved, where / CONNECTOR_SETTINGS)
    # Every file of the directory: a connector's own Dockerfile may COPY any of them.
    inputs = [dockerfile, *sorted(p for p in directory.rglob("*")
                                  if p.is_file() and "__pycache__" not in p.parts and not is_temporary(p))]
    return ImageSpec(
        name=name,
        kind=CONNECTOR,
        image_name=IMAGE_PREFIX + name,
        # Until parents are resolved: a connector built FROM another takes its parent's framework.
        framework=framework or settings.framework_named(settings.framework),
        dockerfile=dockerfile,
        context=directory,
        parent=options.get("parent") or None,
        declared_framework=framework_name,
        fragment=fragment,
        requirements=requirements,
        source=str(options.get("source", name)),
        check_modules=tuple(options.get("check_modules", ())),
        os_packages=os_packages,
        build_packages=build_packages,
        build_args=tuple(sorted((str(k), str(v)) for k, v in build_args.items())),
        description=str(options.get("description", "")),
        unavailable=str(options.get("unavailable", "")).strip(),
        unavailable_platforms=_unavailable_platforms(options.get("unavailable_platforms", {}),
                                                     where / CONNECTOR_SETTINGS),
        input_files=tuple(inputs),
    )


def _checked_build_args(table: dict[str, Any], reserved: frozenset[str], shown: Path) -> dict[str, str]:
    """build_args that can neither override the factory's own arguments nor carry a secret.

    Build arguments are recorded in the image's history (`docker history`) and in the build log,
    so a secret passed this way is published with the image.
    """
    checked = {}
    for name, value in table.items():
        if not BUILD_ARG_NAME.match(name):
            raise ConfigError(f"{shown}: build_args: {name!r} is not a valid build argument name")
        if name in reserved or name.startswith("BUILDKIT_"):
            raise ConfigError(f"{shown}: build_args: {name} is set by the factory (or read by BuildKit) and "
                              "cannot be overridden", "use os_packages, build_packages, parent or check_modules "
                              "for what they cover; remove the key otherwise")
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{shown}: build_args: {name} must be a string, number or boolean")
        text = str(value)
        if runtime_redaction.is_secret_field(name) or runtime_redaction.secrets_in_value(text):
            raise ConfigError(f"{shown}: build_args: {name} looks like a secret; build arguments are stored in "
                              "the image's history and the build log for anyone to read",
                              "give secrets to the container at run time, or to the build as a BuildKit secret")
        checked[name] = text
    return checked


def _unavailable_platforms(table: object, shown: Path) -> tuple[tuple[str, str], ...]:
    """`{ "linux/arm64" = "reason" }` as (platform name, reason) pairs, platform names normalized."""
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise ConfigError(f"{shown}: unavailable_platforms must be a table of platform = \"reason\"")
    try:
        return tuple(sorted((parse_platform(key).name, value.strip()) for key, value in table.items()))
    except ConfigError as exc:
        raise ConfigError(f"{shown}: unavailable_platforms: {exc.message}", exc.hint) from None


def parse_fragment(path: Path, shown: Path | str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """Requirement lines of a fragment; comments and blanks dropped, each line validated."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{shown} is not UTF-8 text") from None
    requirements = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise ConfigError(
                f"{shown}:{number}: pip options like {line.split()[0]!r} are not allowed in a fragment",
                "list requirements only; indexes and constraints come from the base",
            )
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise ConfigError(f"{shown}:{number}: not a valid requirement: {line!r} ({exc})") from None
        requirements.append(line)
    if not requirements and not allow_empty:
        raise ConfigError(f"{shown} lists no requirements", "add at least one package, e.g. 'pymysql>=1.1'")
    return tuple(requirements)


def _read_connector_settings(path: Path, shown: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{shown} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - CONNECTOR_KEYS)
    if unknown:
        raise ConfigError(f"{shown}: unknown key(s) {', '.join(unknown)}", f"known keys: {', '.join(sorted(CONNECTOR_KEYS))}")
    for key in ("check_modules", "os_packages", "build_packages"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{shown}: {key} must be a list of strings")
    if not isinstance(data.get("build_args", {}), dict):
        raise ConfigError(f"{shown}: build_args must be a table")
    for key in ("unavailable", "notes", "description"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{shown}: {key} must be a string")
    return data


def _resolve_parents(images: dict[str, ImageSpec], settings: Settings) -> None:
    """Point connectors without a parent at their framework's base, inherit frameworks down dependent
    connectors, and reject unknown parents and cycles."""
    for name, spec in list(images.items()):
        if spec.kind != CONNECTOR:
            continue
        parent = spec.parent
        if parent is None:
            images[name] = replace(spec, parent=base_key(spec.framework))
        elif parent not in images or images[parent].kind != CONNECTOR:
            known = ", ".join(sorted(s.name for s in images.values() if s.kind == CONNECTOR))
            raise ConfigError(
                f"connector {name!r} names unknown parent {parent!r}",
                f"parent must be another connector directory: {known}",
            )
    # Children take their parent's framework (a dependent image cannot switch frameworks).
    for name in parents_first({n: s.parent for n, s in images.items()}):
        spec = images[name]
        parent_spec = images[spec.parent] if spec.parent is not None else None  # every connector has one now
        if spec.kind == CONNECTOR and parent_spec is not None and parent_spec.kind == CONNECTOR:
            parent_framework = parent_spec.framework
            declared = spec.declared_framework
            if declared and declared != parent_framework.name:
                raise ConfigError(
                    f"connector {name!r} declares framework {declared!r} but its parent "
                    f"{spec.parent!r} uses {parent_framework.name!r}"
                )
            images[name] = replace(spec, framework=parent_framework)


def framework_drift(spec: ImageSpec) -> str | None:
    """Why a fragment would move the framework off the base's version, or None.

    Caught before building so the message is exact; the base's pins catch the
    indirect cases during the install.
    """
    if spec.kind != CONNECTOR:
        return None
    framework = spec.framework
    for line in spec.requirements:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) != canonicalize_name(framework.package):
            continue
        if requirement.specifier and not requirement.specifier.contains(framework.version, prereleases=True):
            return (f"the fragment would change the framework version: it asks for {line!r} "
                    f"but the base pins {framework.package}=={framework.version}")
    return None
