"""Settings: defaults from pyproject.toml, then invoke.yaml / INVOKE_FACTORY_* env, then flags.

Invoke already layers invoke.yaml and the environment over the collection's
defaults, so this module only reads the pyproject defaults and turns the merged
mapping into a typed, validated object.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .errors import ConfigError
from .platforms import parse_all

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT_TABLE = "ingestion-factory"
# In tags that are not PEP 440 versions: "2.0-rc1", "nightly-dev", "1.0.beta" (not "devops" or "march").
PRERELEASE_TOKEN = re.compile(r"(?:^|[.\-_])(?:rc|alpha|beta|dev|pre|a|b)\d*(?:$|[.\-_])")
HOST_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSD
)


@dataclass(frozen=True)
class Framework:
    """An ingestion framework a family of images is built on."""

    name: str
    package: str
    version: str  # the version these images are built for: one of `versions`, the default unless chosen
    base_image: str
    modules: tuple[str, ...] = ()
    # How `inv catalog` finds the framework's sources in its base image (see catalog_sync).
    source_layout: str = "modules"  # "modules": a package per source; "entry-points": a plugin group
    source_root: str = ""  # the sources package, or the entry-point group
    catalog_prefix: str = ""  # connector directory = prefix + source name
    catalog_sources: tuple[str, ...] = ()  # sources to give an image; empty: every source
    catalog_extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # source -> extras, where
    # the framework's names do not say it
    # Every supported version, newest first; the default (built, tagged `latest` and the commit) is the newest
    # unless `version` names another. Each has its own base, catalog and locks (model/versions.py).
    versions: tuple[str, ...] = ()
    default_version: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def supported(self) -> tuple[str, ...]:
        return self.versions or (self.version,)

    @property
    def supported_default_first(self) -> tuple[str, ...]:
        default = self.default_version or self.version
        return (default, *(v for v in self.supported if v != default))

    @property
    def is_default_version(self) -> bool:
        """The default version's images get `latest` and the commit tag; the others only their version."""
        return self.version == (self.default_version or self.version)

    def at(self, version: str) -> Framework:
        return replace(self, version=version)


@dataclass(frozen=True)
class Settings:
    root: Path
    registry: str = ""
    namespace: str = "openmetadata"
    tag: str = ""
    python_image: str = "python:3.11-slim-bookworm"
    # What every lock is resolved for: the images' Python minor version and platform (glibc 2.36: bookworm).
    python_version: str = "3.11"
    lock_platform: str = "x86_64-manylinux_2_36"
    framework: str = "openmetadata"
    jobs: int = 2
    ca_bundle: str = "auto"
    output_dir: str = "build"
    debian_suite: str = "bookworm"
    debian_mirror: str = "http://deb.debian.org/debian"  # the suite and its -updates suite
    debian_security_mirror: str = "http://deb.debian.org/debian-security"  # the -security suite
    # What every Release file of those mirrors must be signed with (package debian-archive-keyring).
    debian_keyring: str = "/usr/share/keyrings/debian-archive-keyring.gpg"
    examples_link: str = "/tmp/openmetadata/examples"
    demo_connector: str = "datahub-sqlite"
    demo_config: str = "examples/datahub/sqlite.yml"
    frameworks: Mapping[str, Framework] = field(default_factory=dict)
    # Registry whose `inputs-<hash>` tags stand in for builds (inv build-connectors --cache-from); "" is off.
    cache_from: str = ""
    # Platforms images are built, pushed and listed for (platforms.py); foreign ones run under QEMU.
    platforms: tuple[str, ...] = ("linux/amd64",)
    # How a foreign platform's packages are installed: "cross" (the build platform installs that
    # platform's wheels), "emulated" (pip/uv run under QEMU), "auto" (cross unless a package lacks a wheel).
    foreign_install: str = "auto"
    # Seconds one image's build may take, and may go without printing a line (a stalled download);
    # the failure names which one fired. 0 turns one off.
    build_timeout: float = 3600
    build_no_output_timeout: float = 900
    # Signed provenance (docs/trust.md): the private key `inv push` signs with ("" is off; its passphrase
    # comes from FACTORY_SIGNING_PASSPHRASE or --passphrase-file), and the public keys trusted when images
    # are taken in (--cache-from, inv unbundle, inv verify); paths relative to the project.
    signing_key: str = ""
    trusted_keys: tuple[str, ...] = ()

    @property
    def target_platforms(self):
        return parse_all(self.platforms)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def output_path(self) -> Path:
        return self.root / self.output_dir

    @property
    def examples_dir(self) -> Path:
        return self.root / "examples"

    def framework_named(self, name: str) -> Framework:
        try:
            return self.frameworks[name]
        except KeyError:
            known = ", ".join(sorted(self.frameworks)) or "none"
            raise ConfigError(
                f"unknown framework {name!r}",
                f"known frameworks: {known} (declared under [tool.{PYPROJECT_TABLE}.frameworks])",
            ) from None

    def repository(self, image_name: str) -> str:
        """Full repository name, with registry when one is set: [registry/]namespace/image."""
        parts = [p for p in (self.registry, self.namespace, image_name) if p]
        return "/".join(parts)

    def with_overrides(self, **overrides: Any) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **clean) if clean else self

    def resolved_ca_bundle(self) -> Path | None:
        """The CA bundle for builds: an explicit path, the host's, or None when disabled."""
        if not self.ca_bundle:
            return None
        if self.ca_bundle != "auto":
            path = Path(self.ca_bundle).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"CA bundle {path} does not exist",
                    "point factory.ca_bundle (or --ca-bundle) at a PEM file, or set it to '' to disable",
                )
            return path
        candidates = [os.environ.get("SSL_CERT_FILE", ""), *HOST_CA_BUNDLES]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                return Path(candidate)
        return None


def pyproject_defaults(root: Path) -> dict[str, Any]:
    """The [tool.ingestion-factory] table, as a plain dict for Invoke's config."""
    path = root / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return dict(data.get("tool", {}).get(PYPROJECT_TABLE, {}))


def load(mapping: Mapping[str, Any], root: Path) -> Settings:
    """Validate a merged settings mapping (pyproject < invoke.yaml < env) into Settings."""
    data = dict(mapping)
    frameworks = {}
    for name, table in dict(data.pop("frameworks", {}) or {}).items():
        table = dict(table)
        missing = [k for k in ("package", "base_image") if not table.get(k)]
        if not table.get("version") and not table.get("versions"):
            missing.append("versions")
        if missing:
            raise ConfigError(
                f"framework {name!r} lacks {', '.join(missing)}",
                f"set them under [tool.{PYPROJECT_TABLE}.frameworks.{name}]",
            )
        versions, default = _versions(name, table)
        frameworks[name] = Framework(
            name=name,
            package=str(table["package"]),
            version=default,
            base_image=str(table["base_image"]),
            modules=tuple(table.get("modules", ())),
            versions=versions,
            default_version=default,
            **_catalog_fields(name, table),
        )
    known = {f.name for f in Settings.__dataclass_fields__.values()} - {"root", "frameworks"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s): {', '.join(unknown)}",
            f"known settings: {', '.join(sorted(known))}",
        )
    try:
        jobs = int(data.get("jobs", 2))
    except (TypeError, ValueError):
        raise ConfigError(f"jobs must be a whole number, got {data.get('jobs')!r}") from None
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    data["jobs"] = jobs
    for key in TIMEOUT_SETTINGS:
        if key in data:
            data[key] = _seconds(key, data[key])
    if "platforms" in data:
        data["platforms"] = _platform_names(data["platforms"])
    if "trusted_keys" in data:
        data["trusted_keys"] = _paths(data["trusted_keys"], "trusted_keys")
    if str(data.get("foreign_install", "auto")) not in FOREIGN_INSTALLS:
        raise ConfigError(f"foreign_install must be one of {', '.join(FOREIGN_INSTALLS)}, "
                          f"got {data['foreign_install']!r}")
    settings = Settings(root=root, frameworks=frameworks,
                        **{k: str(v) if k not in ("jobs", "platforms", "trusted_keys", *TIMEOUT_SETTINGS) else v
                           for k, v in data.items()})
    if not frameworks:
        raise ConfigError(f"no frameworks declared under [tool.{PYPROJECT_TABLE}.frameworks]")
    settings.framework_named(settings.framework)
    return settings


FOREIGN_INSTALLS = ("auto", "cross", "emulated")


def _versions(name: str, table: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The supported versions, newest first, and the default: `version` when set, else the newest.

    `versions` is a list, or a comma-separated string (invoke.yaml may give one; Invoke refuses to read a list
    from an INVOKE_FACTORY_* variable, see docs/settings.md)."""
    where = f"[tool.{PYPROJECT_TABLE}.frameworks.{name}]"
    raw = table.get("versions") or [table.get("version")]
    if isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError(f"{where} versions must be a list of version strings, got {raw!r}")
    parsed = {}
    for value in raw:
        text = str(value).strip()
        try:
            parsed[text] = Version(text)
        except InvalidVersion:
            raise ConfigError(f"{where} versions: {text!r} is not a version (PEP 440)") from None
    if len(set(parsed.values())) != len(raw):  # "1.0" and "1.0.0" are one version
        raise ConfigError(f"{where} versions lists a version twice: {', '.join(map(str, raw))}")
    versions = tuple(sorted(parsed, key=parsed.__getitem__, reverse=True))
    default = str(table.get("version") or versions[0]).strip()
    if default not in parsed:
        raise ConfigError(f"{where} version {default!r} (the default) is not one of versions: {', '.join(versions)}",
                          "add it to versions, or leave version out: the newest is the default")
    return versions, default


TIMEOUT_SETTINGS = ("build_timeout", "build_no_output_timeout")


def _seconds(key: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{key} must be a finite number of seconds (0: no limit), got {value!r}")
    return seconds


def _platform_names(value: Any) -> tuple[str, ...]:
    """A list (or a comma-separated string, as env vars give it) of platforms, validated and normalized."""
    if not isinstance(value, (str, list, tuple)):
        raise ConfigError(f"platforms must be a list of platforms, got {value!r}")
    return tuple(p.name for p in parse_all(value))


def _paths(value: Any, name: str) -> tuple[str, ...]:
    """A list of file paths (or a comma-separated string, as env vars give it)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of file paths, got {value!r}")
    return tuple(v for v in value if v)


def _catalog_fields(name: str, table: Mapping[str, Any]) -> dict[str, Any]:
    where = f"[tool.{PYPROJECT_TABLE}.frameworks.{name}]"
    layout = str(table.get("source_layout", "modules"))
    if layout not in ("modules", "entry-points"):
        raise ConfigError(f"{where} source_layout must be 'modules' or 'entry-points', got {layout!r}")
    extras = dict(table.get("catalog_extras", {}) or {})
    for source, names in extras.items():
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where} catalog_extras.{source} must be a list of extra names")
    return {
        "source_layout": layout,
        "source_root": str(table.get("source_root", "")),
        "catalog_prefix": str(table.get("catalog_prefix", "")),
        "catalog_sources": tuple(str(s) for s in table.get("catalog_sources", ()) or ()),
        "catalog_extras": {str(k): tuple(v) for k, v in extras.items()},
    }


def image_tags(version_tag: str, revision: str | None, *, default_version: bool = True) -> list[str]:
    """Every tag an image gets: its version, the git revision, and `latest` unless a pre-release. The
    revision and `latest` belong to the framework's default version: another version's images (1.12 next to
    2.0) get only their version tag, so `latest` and the commit tag never move back to an older framework."""
    tags = [version_tag]
    if not default_version:
        return tags
    if revision and revision not in tags:
        tags.append(revision)
    if not is_prerelease(version_tag):
        tags.append("latest")
    return tags


def is_prerelease(tag: str) -> bool:
    """True for PEP 440 pre/dev releases (1.2.0rc1, 2.0.0.dev3); non-version tags are not."""
    try:
        return Version(tag).is_prerelease
    except InvalidVersion:
        return PRERELEASE_TOKEN.search(tag.lower()) is not None


def git_revision(root: Path) -> str | None:
    """Short commit of the working tree, `-dirty` when tracked files changed; None outside git.

    A build from uncommitted changes must not carry the clean commit's tag.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if not sha:
        return None
    return f"{sha}-dirty" if changes else sha


def plain(value: Any) -> Any:
    """Invoke's DataProxy (and nested ones) as plain dicts."""
    if isinstance(value, Mapping) or hasattr(value, "keys"):
        return {key: plain(value[key]) for key in value.keys()}
    return value


# A version names an image tag and a directory: Docker's tag alphabet, so no `+local` or `1!2` epoch.
VERSION_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def supported_spelling(framework: Framework, version: str) -> str | None:
    """The supported version equal to `version` under PEP 440 (2.0.7 is 2.0.7.0), spelled as the settings
    spell it; None when it is not supported."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        return version if version in framework.supported else None
    for known in framework.supported:
        try:
            if Version(known) == wanted:
                return known
        except InvalidVersion:
            continue
    return None


def with_framework_version(settings: Settings, name: str, version: str, *, new: bool = False) -> Settings:
    """The settings with one framework's images at `version`, one of its supported versions (`new`: any
    version, for `inv catalog --version` adding one). A spelling PEP 440 calls equal to a supported version
    is that version."""
    framework = settings.framework_named(name)
    version = str(version).strip()
    known = supported_spelling(framework, version)
    if known is None and not new:
        raise ConfigError(f"{framework.package} {version} is not a supported version of {name} "
                          f"(supported: {', '.join(framework.supported)})",
                          f"add it with: inv catalog --framework {name} --version {version}")
    if known is None:
        try:
            Version(version)
        except InvalidVersion:
            raise ConfigError(f"{version!r} is not a version (PEP 440)") from None
        if not VERSION_TAG.match(version):
            raise ConfigError(f"version {version!r} cannot be an image tag", "a local version (+...) or an epoch "
                              "(N!) is not a release of the framework's package index; give the release")
    frameworks = dict(settings.frameworks)
    frameworks[name] = framework.at(known or version)
    return replace(settings, frameworks=frameworks)


def framework_of_version(settings: Settings, version: str, framework: str | None = None) -> str:
    """The framework `--version V` is about: the one named, else the one that supports V, else the default."""
    if framework:
        return settings.framework_named(framework).name
    owners = [f.name for f in settings.frameworks.values() if supported_spelling(f, version) is not None]
    if len(owners) > 1:
        raise ConfigError(f"version {version} belongs to several frameworks: {', '.join(owners)}",
                          "name one with --framework")
    return owners[0] if owners else settings.framework


ALL_VERSIONS = "all"


def selected_views(settings: Settings, version: str | None, framework: str | None = None,
                   ) -> list[tuple[Settings, str | None]]:
    """What `--version` selects, as version_views gives it: nothing given, the defaults (None: every framework);
    `all`, every supported version (of `framework` only, when named); V, that version of the framework it
    belongs to, and only that framework's images (its name as the varied framework, default version or not)."""
    if not version:
        return [(settings, None)]
    if version == ALL_VERSIONS:
        return version_views(settings, [framework] if framework else None)
    name = framework_of_version(settings, version, framework)
    return [(with_framework_version(settings, name, version), name)]


def version_views(settings: Settings, frameworks: list[str] | None = None) -> list[tuple[Settings, str | None]]:
    """Every supported version as (settings, framework it is about): without `frameworks`, the defaults first
    (None: every framework at its default), then each other version of each framework, alone; with them,
    each version of each named framework, the default first. A task that covers "all versions" loops over
    these and, where a framework is named, touches only that framework's images."""
    if frameworks:
        return [(with_framework_version(settings, name, version), name)
                for name in frameworks for version in settings.framework_named(name).supported_default_first]
    views: list[tuple[Settings, str | None]] = [(settings, None)]
    for framework in settings.frameworks.values():
        for version in framework.supported:
            if version != framework.version:
                views.append((with_framework_version(settings, framework.name, version), framework.name))
    return views


