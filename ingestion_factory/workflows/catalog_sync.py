"""`inv catalog`: connector directories derived from the framework as installed in its base image.

Three steps, each testable alone:
  probe   runs inventory_probe.py inside the base image (no network) -> Inventory
  derive  decides, per source, the directory, the fragment and the generated connector.toml keys
  sync    writes images/connectors/<dir>/, keeping what a person changed (a three-way merge against
          what the previous sync wrote, recorded in images/connectors/.catalog/<framework>.json)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import tomlkit
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ..engine.docker_engine import ContainerFailed, Engine, ImageMissing
from ..errors import ConfigError, FactoryError
from ..files import write_atomically
from ..model import versions as versions_mod
from ..model.catalog import CONNECTOR_SETTINGS, FRAGMENT, NAME_PATTERN, SYNC_STATE_DIR, tomllib
from ..settings import Framework, Settings

STATE_DIR = SYNC_STATE_DIR
# Extras that bundle many connectors or serve development, never one source's driver.
UMBRELLA_EXTRAS = {"all", "all-dev-env", "slim", "dev", "test", "test-unit", "e2e-test", "playwright", "docs"}
TOML_HEADER = (
    "Written by `inv catalog` from the framework's own metadata.\n"
    "Edit freely: `inv catalog` only updates the keys it wrote that nobody changed since."
)
FRAGMENT_HEADER = "# Written by `inv catalog`: the framework's extra for this source. Edits are kept.\n"


def normalize(name: str) -> str:
    return canonicalize_name(name)


@dataclass(frozen=True)
class Source:
    kind: str  # "database", "dashboard", ... (OpenMetadata) or "source" (DataHub)
    name: str
    plugin_module: str
    uses_sources: tuple[str, ...] = ()  # other sources' packages it imports ("database/mysql")
    driver_modules: tuple[str, ...] = ()  # module-level imports the base cannot satisfy
    optional_modules: tuple[str, ...] = ()  # the same, imported inside functions


@dataclass(frozen=True)
class Inventory:
    framework: str
    package: str
    version: str
    python: str
    extras: dict[str, tuple[str, ...]]
    installed: frozenset[str]
    sources: tuple[Source, ...]

    @classmethod
    def from_json(cls, framework: str, data: dict) -> Inventory:
        return cls(
            framework=framework,
            package=data["package"],
            version=data["version"],
            python=data["python"],
            extras={normalize(k): tuple(v) for k, v in data["extras"].items()},
            installed=frozenset(normalize(n) for n in data["installed"]),
            sources=tuple(
                Source(kind=s["kind"], name=s["name"], plugin_module=s["plugin_module"],
                       uses_sources=tuple(s.get("uses_sources", ())),
                       driver_modules=tuple(s.get("driver_modules", ())),
                       optional_modules=tuple(s.get("optional_modules", ())))
                for s in data["sources"]
            ),
        )


@dataclass(frozen=True)
class Derived:
    """What the framework says one connector directory holds."""

    directory: str
    source: Source
    extras: tuple[str, ...]
    fragment: str  # requirements.txt text
    settings: dict = field(hash=False)  # the connector.toml keys the catalog writes


class Change(Enum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    KEPT = "kept hand edits"
    GONE = "gone from the framework"
    REMOVED = "removed"
    MISSING = "listed but not in the framework"

    @property
    def writes(self) -> bool:
        return self in (Change.ADDED, Change.UPDATED, Change.REMOVED)


@dataclass(frozen=True)
class SyncEntry:
    directory: str
    change: Change
    detail: str = ""


# ------------------------------------------------------------------------------------------- probe


def probe(framework: Framework, image: str, engine: Engine) -> Inventory:
    """Run the inventory script in the framework's base image (`image`), without network."""
    if not framework.source_root:
        raise ConfigError(f"framework {framework.name!r} has no source_root",
                          f"set source_root under [tool.ingestion-factory.frameworks.{framework.name}]")
    script = (Path(__file__).parents[1] / "resources" / "inventory_probe.py").read_text()
    missing = ConfigError(
        f"the base image {image} is not in the engine",
        f"inv catalog reads the framework from it: run `inv build-base --framework {framework.name}` first",
    )
    # Looked up first: containers.run pulls a missing image (from Docker Hub, for a local name) and fails there.
    if engine.inspect(image) is None:
        raise missing
    try:
        output = engine.run_output(
            image, ["python", "-c", script, framework.package, framework.source_layout, framework.source_root])
    except ImageMissing:  # removed between the look-up and the run
        raise missing from None
    except ContainerFailed as exc:
        stderr = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise FactoryError(f"reading {framework.package} inside {image} failed", "\n".join(stderr)) from None
    try:
        return Inventory.from_json(framework.name, json.loads(output))
    except (ValueError, KeyError) as exc:
        raise FactoryError(f"the inventory read from {image} is not what inv catalog expects: {exc}") from None


# ------------------------------------------------------------------------------------------ derive


def _distribution(requirement: str) -> str:
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:  # metadata we cannot parse names nothing we can match
        return ""


def _extra_for_modules(inventory: Inventory, modules: tuple[str, ...]) -> str | None:
    """The smallest extra that brings a distribution named like one of the modules (pymongo -> mongo)."""
    names = set()
    for module in modules:
        parts = module.split(".")
        names.update({normalize(parts[0]), normalize("-".join(parts[:2]))})
    candidates = []
    for extra, requirements in inventory.extras.items():
        if extra in UMBRELLA_EXTRAS:
            continue
        distributions = {_distribution(r) for r in requirements}
        if (distributions & names) - inventory.installed:
            candidates.append((len(distributions), extra))
    return min(candidates)[1] if candidates else None


def _own_extras(inventory: Inventory, framework: Framework, source: Source) -> tuple[str, ...]:
    """The extras a source needs, judged from its own name, its imports, then the sources it builds on."""
    if source.name in framework.catalog_extras:
        return tuple(normalize(e) for e in framework.catalog_extras[source.name])
    for extra in inventory.extras:
        if extra not in UMBRELLA_EXTRAS and extra.replace("-", "") == source.name.replace("-", "").replace("_", ""):
            return (extra,)
    found = _extra_for_modules(inventory, source.driver_modules + source.optional_modules)
    return (found,) if found else ()


def derive(inventory: Inventory, framework: Framework) -> list[Derived]:
    """One Derived per selected source, in source order."""
    unknown = sorted({normalize(e) for extras in framework.catalog_extras.values() for e in extras}
                     - set(inventory.extras))
    if unknown:
        raise ConfigError(
            f"catalog_extras of framework {framework.name!r} names extras {inventory.package} "
            f"{inventory.version} does not have: {', '.join(unknown)}",
            f"its extras: {', '.join(sorted(inventory.extras))}",
        )
    sources = {f"{s.kind}/{s.name}": s for s in inventory.sources}
    extras = {key: _own_extras(inventory, framework, s) for key, s in sources.items()}
    # A source with nothing of its own that builds on exactly one other source (mariadb on mysql,
    # timescale on postgres) needs that source's extra.
    for key, source in sources.items():
        if not extras[key] and source.name not in framework.catalog_extras:
            leaves = [used for used in source.uses_sources if used in sources]
            if len(leaves) == 1:
                extras[key] = extras[leaves[0]]
    selected = [s for s in sources.values() if not framework.catalog_sources or s.name in framework.catalog_sources]
    return [_derived(inventory, framework, s, extras[f"{s.kind}/{s.name}"]) for s in selected]


def _derived(inventory: Inventory, framework: Framework, source: Source, extras: tuple[str, ...]) -> Derived:
    package = inventory.package
    if extras:
        fragment = FRAGMENT_HEADER + f"{package}[{','.join(extras)}]\n"
    else:
        fragment = ("# Written by `inv catalog`: this source has no extra of its own (it talks to a REST API\n"
                    "# with what the base already has). Edits are kept.\n"
                    f"{package}\n")
    drivers: dict[str, str] = {}
    for module in sorted(source.driver_modules, key=len):
        drivers.setdefault(module.split(".")[0], module)
    what = f"{source.kind} source {source.name!r}" if source.kind != "source" else f"source {source.name!r}"
    settings = {
        "description": f"{package} {what}",
        "framework": framework.name,
        "source": source.name,
        "check_modules": [source.plugin_module, *sorted(drivers.values())],
    }
    return Derived(directory=framework.catalog_prefix + source.name, source=source, extras=extras,
                   fragment=fragment, settings=settings)


# -------------------------------------------------------------------------------------------- sync


def state_path(settings: Settings, framework: Framework) -> Path:
    return settings.images_dir / "connectors" / STATE_DIR / f"{framework.name}.json"


def _read_state(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("connectors", {})
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON", "restore it from git, or delete it to adopt every "
                          "directory as hand-made") from None


def sync(settings: Settings, framework: Framework, inventory: Inventory, derived: list[Derived], *,
         prune: bool = False, dry_run: bool = False, other_versions: dict[str, str] | None = None) -> list[SyncEntry]:
    """Bring images/connectors/ in line with the framework; returns what changed per directory.

    `other_versions`: directory -> the other supported versions that still ship its source; such a
    directory is never pruned (its images are still built for those versions)."""
    connectors_dir = settings.images_dir / "connectors"
    state_file = state_path(settings, framework)
    previous = _read_state(state_file)
    # Names from the probe's output and from the state file become paths that are written and
    # (with --prune) removed: every one must be a plain directory name before anything is touched.
    for directory, origin in [(item.directory, "the framework's inventory") for item in derived] + \
            [(directory, str(state_file)) for directory in previous]:
        _require_directory_name(directory, origin)
    entries: list[SyncEntry] = []
    new_state: dict[str, dict] = {}
    for item in derived:
        entry, recorded = _sync_one(connectors_dir / item.directory, item, previous.get(item.directory), dry_run)
        entries.append(entry)
        new_state[item.directory] = recorded
    present = {item.directory for item in derived}
    for directory in sorted(set(previous) - present):
        entries.append(_gone(connectors_dir / directory, previous[directory], inventory, prune, dry_run,
                             (other_versions or {}).get(directory, "")))
        if entries[-1].change is Change.GONE:
            new_state[directory] = previous[directory]
    names = {s.name for s in inventory.sources}
    for wanted in framework.catalog_sources:
        if wanted not in names:
            entries.append(SyncEntry(framework.catalog_prefix + wanted, Change.MISSING,
                                     f"catalog_sources names {wanted!r}; {inventory.package} {inventory.version} "
                                     "has no such source"))
    if not dry_run:
        write_atomically(state_file, json.dumps(
            {"package": inventory.package, "version": inventory.version, "connectors": new_state},
            indent=1, sort_keys=True) + "\n")
    return entries


def _require_directory_name(name: object, origin: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{origin} names the connector directory {name!r}, which is not a valid image name; "
                          "nothing was changed", "names are lowercase letters, digits and single - _ . separators; "
                          "restore the state file from git if it was edited")


def _sync_one(directory: Path, item: Derived, previous: dict | None, dry_run: bool) -> tuple[SyncEntry, dict]:
    fragment_file, toml_file = directory / FRAGMENT, directory / CONNECTOR_SETTINGS
    existed = directory.is_dir()
    previous = previous or {}
    kept: list[str] = []
    changed: list[str] = []

    current_fragment = fragment_file.read_text() if fragment_file.is_file() else None
    fragment = current_fragment
    if current_fragment is None or current_fragment == previous.get(FRAGMENT):
        fragment = item.fragment
    elif current_fragment != item.fragment:
        kept.append(FRAGMENT)
    if fragment != current_fragment:
        changed.append(FRAGMENT)

    current_text = toml_file.read_text() if toml_file.is_file() else None
    document = tomlkit.parse(current_text) if current_text is not None else _new_document()
    current = tomllib.loads(current_text) if current_text is not None else {}
    generated_before = previous.get(CONNECTOR_SETTINGS, {})
    for key, value in item.settings.items():
        written_before = key in generated_before
        if key not in current and written_before:
            kept.append(key)  # a person removed it: that is an edit too
        elif key not in current or (written_before and current[key] == generated_before[key]):
            if current.get(key) != value:
                document[key] = value
        elif current[key] != value:
            kept.append(key)
    for key, value in generated_before.items():
        if key not in item.settings and current.get(key) == value:
            del document[key]
    text = tomlkit.dumps(document)
    if text != current_text:
        changed.append(CONNECTOR_SETTINGS)

    if changed and not dry_run:
        directory.mkdir(parents=True, exist_ok=True)
        if fragment != current_fragment:
            write_atomically(fragment_file, fragment)
        if text != current_text:
            write_atomically(toml_file, text)
    recorded = {FRAGMENT: item.fragment, CONNECTOR_SETTINGS: item.settings}
    name = directory.name
    if not existed:
        return SyncEntry(name, Change.ADDED, _describe(item)), recorded
    if changed:
        detail = "wrote " + ", ".join(changed) + (f"; kept the person's {', '.join(kept)}" if kept else "")
        return SyncEntry(name, Change.UPDATED, detail), recorded
    if kept:
        return SyncEntry(name, Change.KEPT, "the person's " + ", ".join(kept)), recorded
    return SyncEntry(name, Change.UNCHANGED), recorded


def _describe(item: Derived) -> str:
    extras = f"extra {', '.join(item.extras)}" if item.extras else "no extra (the base has its client)"
    return f"{item.source.kind}/{item.source.name}: {extras}"


def _gone(directory: Path, previous: dict, inventory: Inventory, prune: bool, dry_run: bool,
          still_in: str = "") -> SyncEntry:
    why = f"not in {inventory.package} {inventory.version}"
    if not directory.is_dir():
        return SyncEntry(directory.name, Change.REMOVED, why + " (directory already deleted)")
    if still_in:
        return SyncEntry(directory.name, Change.GONE, f"{why}; kept for {still_in}, which ship it")
    untouched = (directory / FRAGMENT).is_file() and (directory / FRAGMENT).read_text() == previous.get(FRAGMENT)
    if prune and untouched and _settings_of(directory) == previous.get(CONNECTOR_SETTINGS):
        if not dry_run:
            shutil.rmtree(directory)
        return SyncEntry(directory.name, Change.REMOVED, why)
    hint = "--prune removes it" if not prune else "kept: a person edited it; delete it by hand"
    return SyncEntry(directory.name, Change.GONE, f"{why}; {hint}")


def _settings_of(directory: Path) -> dict:
    path = directory / CONNECTOR_SETTINGS
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def _new_document():
    document = tomlkit.document()
    for line in TOML_HEADER.splitlines():
        document.add(tomlkit.comment(line))
    return document


# ------------------------------------------------------------------------------------------ versions


@dataclass(frozen=True)
class VersionReport:
    """What `inv catalog --version V` found: the sources against another version's, and the locks."""

    framework: str
    package: str
    version: str
    reference: str  # the version it is compared with ("" when there is none)
    sources: tuple[str, ...]
    appeared: tuple[str, ...]  # sources V has and the reference has not
    vanished: tuple[str, ...]  # sources the reference has and V has not
    failed: dict[str, str] = field(default_factory=dict)  # connector -> why its lock failed
    added_version: bool = False  # V was not a supported version before this run
    started_from: str = ""  # the version whose constraints and overrides a new version started from


def start_version_dir(settings: Settings, framework: Framework, template: Framework) -> list[Path]:
    """A new version's directory, with the constraints and overrides of `template` (another version of the
    same framework) as a starting point; the files written. An existing directory is left as it is."""
    target = versions_mod.version_dir(settings.images_dir, framework)
    if target.is_dir():
        return []
    source = versions_mod.version_dir(settings.images_dir, template)
    written = []
    for name in (versions_mod.CONSTRAINTS, versions_mod.OVERRIDES):
        if (source / name).is_file():
            text = (source / name).read_text()
            note = (f"# Started from {template.version}'s {name} by `inv catalog --version {framework.version}`: "
                    "check that every line still holds.\n")
            write_atomically(target / name, note + text)
            written.append(target / name)
    target.mkdir(parents=True, exist_ok=True)
    return written


def add_supported_version(settings: Settings, framework: Framework) -> Path:
    """Add framework.version to the framework's `versions` in pyproject.toml (newest first, comments kept)."""
    path = settings.root / "pyproject.toml"
    document = tomlkit.parse(path.read_text())
    table = document["tool"]["ingestion-factory"]["frameworks"][framework.name]  # type: ignore[index]
    current = [str(v) for v in table.get("versions", [table.get("version")]) if v]
    wanted = sorted(set(current) | {framework.version}, key=Version, reverse=True)
    table["versions"] = wanted
    if "version" in table and "versions" in table and str(table["version"]) not in wanted:
        del table["version"]
    write_atomically(path, tomlkit.dumps(document))
    return path


def compare_sources(sources: set[str], reference: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(sorted(sources - reference)), tuple(sorted(reference - sources))
