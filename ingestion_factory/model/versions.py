"""A framework version as files: each supported version adds one directory and one lock per connector.

  images/base/frameworks/<fw>/requirements.txt, constraints.txt     what every version installs and obeys
  images/base/frameworks/<fw>/<version>/                             one directory per supported version:
      constraints.txt    pins this version needs (optional; each with its reason in a comment)
      overrides.txt      uv overrides: requirements of the framework replaced or dropped, with the reason
      requirements.lock  the base's lock
      catalog.toml       the sources this version ships, and connectors it cannot have with the reason
                         (written by `inv catalog --version`; hand-written reasons are kept)
  images/connectors/<name>/locks/<version>.lock                      a connector's lock for that version

Adding a version is `inv catalog --version V`; dropping one is taking it out of the framework's `versions`
setting (its files can stay or go).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..files import write_atomically
from ..settings import Framework
from .lockfile import LOCK_NAME, LOCK_SUFFIX

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCKS_DIR = "locks"
VERSION_CATALOG = "catalog.toml"
CONSTRAINTS = "constraints.txt"
OVERRIDES = "overrides.txt"
LOCK_FAILED = "lock failed: "  # the reasons `inv catalog --version` writes itself (and re-decides each run)


@dataclass(frozen=True)
class VersionCatalog:
    """What one framework version has: its sources (None: never probed) and the connectors it cannot have."""

    sources: frozenset[str] | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    def reason(self, name: str, source: str, generated: bool) -> str:
        """Why this version cannot have connector `name` (its framework's source `source`); "" when it can.
        Only directories `inv catalog` generated are judged by the source list: a hand-made connector's
        `source` need not be one of the framework's."""
        if name in self.unavailable:
            return self.unavailable[name]
        if generated and self.sources is not None and source not in self.sources:
            return f"it has no source {source!r}"
        return ""


def framework_dir(images_dir: Path, framework: Framework) -> Path:
    return images_dir / "base" / "frameworks" / framework.name


def version_dir(images_dir: Path, framework: Framework) -> Path:
    """Where the selected version's base lock, constraints, overrides and catalog live."""
    return framework_dir(images_dir, framework) / framework.version


def base_lock(images_dir: Path, framework: Framework) -> Path:
    return version_dir(images_dir, framework) / LOCK_NAME


def connector_lock(directory: Path, framework: Framework) -> Path:
    return directory / LOCKS_DIR / f"{framework.version}{LOCK_SUFFIX}"


def read_catalog(images_dir: Path, framework: Framework) -> VersionCatalog:
    """The selected version's catalog.toml (an empty VersionCatalog when there is none)."""
    path = version_dir(images_dir, framework) / VERSION_CATALOG
    if not path.is_file():
        return VersionCatalog()
    shown = path.relative_to(images_dir.parent) if path.is_relative_to(images_dir.parent) else path
    hint = f"fix it, or write it again: inv catalog --framework {framework.name} --version {framework.version}"
    try:
        data = tomllib.loads(path.read_text())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{shown} is not valid TOML: {exc}", hint) from None
    sources = data.get("sources")
    if sources is not None and (not isinstance(sources, list) or not all(isinstance(v, str) for v in sources)):
        raise ConfigError(f"{shown}: sources must be a list of source names", hint)
    table = data.get("unavailable", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise ConfigError(f"{shown}: [unavailable] must map connector names to reasons", hint)
    return VersionCatalog(None if sources is None else frozenset(sources),
                          {str(name): reason.strip() for name, reason in table.items()})


def write_catalog(images_dir: Path, framework: Framework, catalog: VersionCatalog) -> Path:
    """Write the selected version's catalog.toml: sorted, one source and one connector per line."""
    path = version_dir(images_dir, framework) / VERSION_CATALOG
    lines = [f"# {framework.package} {framework.version}: the sources it ships, and the connectors it cannot have",
             f"# with the reason. Written by `inv catalog --framework {framework.name} --version {framework.version}`,",
             "# which re-decides the reasons that start with \"lock failed\" and keeps any other you add by hand."]
    if catalog.sources is not None:
        lines.append("sources = [")
        lines += [f"    {_quoted(source)}," for source in sorted(catalog.sources)]
        lines.append("]")
    lines.append("")
    lines.append("[unavailable]")
    lines += [f"{_key(name)} = {_quoted(reason)}" for name, reason in sorted(catalog.unavailable.items())]
    write_atomically(path, "\n".join(lines) + "\n")
    return path


def _key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else _quoted(name)


def _quoted(text: str) -> str:
    return '"' + " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"') + '"'
