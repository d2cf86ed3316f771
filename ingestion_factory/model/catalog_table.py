"""The catalog table in docs/catalog.md: per framework, one row per connector and a column per supported version.

A cell says whether the version has the connector: the size it adds over its parent and "verified" once a build
report measured it, "not built yet", or "unavailable: <why>" (the version has no such source, or its lock failed).
The identity (connectors, sources, versions, availability) comes from the catalogs alone, so a test can hold the
page to them; sizes and statuses come from the last build report when it has them, otherwise the page keeps its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .catalog import Catalog, ImageSpec
from .results import BuildStatus, human_size

START = "<!-- catalog-table:start (written by `inv catalog`; sizes and status from the last build report) -->"
END = "<!-- catalog-table:end -->"
PAGE = Path("docs/catalog.md")  # relative to the repository: the page that holds the table
NOT_BUILT = "not built yet"
TABLE_TITLE = re.compile(r"^\*\*(?P<framework>[a-z0-9_-]+)\*\*")
ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<rest>.*) \|$")

Cells = dict[tuple[str, str], str]  # (connector, version) -> "18.0 MB, verified", "failed in the last build", ...


def measured(report_path: Path, catalogs: list[Catalog]) -> Cells:
    """(connector, version) -> what the last build report says of its default-platform image."""
    try:
        results = json.loads(report_path.read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    # The table is about the default platform's images; a multi-platform report has a row per platform.
    results = [r for r in results if isinstance(r, dict) and r.get("platform", "linux/amd64") == "linux/amd64"]
    parents = {(spec.name, spec.version): spec.parent for catalog in catalogs for spec in catalog}
    sizes = {(r.get("name"), _tag(r)): r.get("size") or 0 for r in results}
    cells: Cells = {}
    for result in results:
        key = (result.get("name"), _tag(result))
        status = result.get("result")
        if status in (BuildStatus.BUILT.value, BuildStatus.PULLED.value, BuildStatus.UP_TO_DATE.value):
            parent_size = sizes.get((parents.get(key), key[1]))
            added = human_size(result["size"] - parent_size) if result.get("size") and parent_size else ""
            cells[key] = f"{added}, verified" if added else "verified"
        elif status == BuildStatus.FAILED.value:
            cells[key] = "failed in the last build"
    return cells


def _tag(result: dict[str, Any]) -> str:  # one image of a build report, as parsed JSON
    return str(result.get("ref", "")).rpartition(":")[2]


def previous(page_text: str) -> Cells:
    """(connector, version) -> the cell as the page's tables have it."""
    cells: Cells = {}
    versions: list[str] = []
    for line in _section(page_text).splitlines():
        line = line.strip()
        if line.startswith("| connector |"):
            versions = [c.strip() for c in line.strip("|").split("|")][2:]
            continue
        match = ROW.match(line)
        if match and versions:
            values = [c.strip() for c in match["rest"].split(" | ")][1:]
            for version, value in zip(versions, values, strict=False):  # a row may have fewer cells
                cells[(match["name"], version)] = value
    return cells


def render(catalogs: list[Catalog], cells: Cells) -> str:
    """One table per framework, its versions newest first, one row per connector any version has."""
    frameworks: dict[str, dict[str, Catalog]] = {}  # framework -> version -> a catalog holding it
    for catalog in catalogs:
        for spec in catalog.bases:
            frameworks.setdefault(spec.framework.name, {}).setdefault(spec.version, catalog)
    parts = []
    for name in sorted(frameworks, key=lambda f: (f != "openmetadata", f)):
        by_version = frameworks[name]
        versions = sorted(by_version, key=_version_key, reverse=True)
        package = next(iter(by_version.values())).base_for(name).framework.package
        specs: dict[str, ImageSpec] = {}
        for version in versions:
            for spec in by_version[version].connectors:
                if spec.framework.name == name:
                    specs.setdefault(spec.name, spec)
        lines = [f"**{name}** ({package}, {len(versions)} version{'s' if len(versions) > 1 else ''}; "
                 "a cell: size added over the parent, or why the version has no such image)\n\n",
                 "| connector | source | " + " | ".join(versions) + " |\n",
                 "|---|---|" + "---|" * len(versions) + "\n"]
        for connector in sorted(specs):
            row = []
            for version in versions:
                catalog = by_version[version]
                image = catalog.images.get(connector)
                if image is None:
                    row.append("broken: see `inv list`" if connector in catalog.broken else "-")
                elif image.unavailable:
                    row.append(f"{BuildStatus.UNAVAILABLE.value}: {image.unavailable}")
                else:
                    row.append(cells.get((connector, version), NOT_BUILT))
            source = specs[connector].source
            lines.append(f"| `{connector}` | {_cell(source)} | " + " | ".join(_cell(c) for c in row) + " |\n")
        parts.append("".join(lines))
    broken = sorted({name for catalog in catalogs for name in catalog.broken})
    if broken:
        parts.append("Broken directories (see `inv list`): " + ", ".join(f"`{n}`" for n in broken) + "\n")
    return "\n".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "/").split())


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def update_page(page: Path, catalogs: list[Catalog], *report_paths: Path) -> bool:
    """Rewrite the tables between the markers; True when the page changed. Reports: oldest first."""
    text = page.read_text() if page.is_file() else ""
    if START not in text or END not in text:
        return False
    cells = previous(text)
    for report_path in report_paths:
        cells.update(measured(report_path, catalogs))
    table = render(catalogs, cells)
    updated = text[:text.index(START) + len(START)] + "\n" + table + text[text.index(END):]
    if updated != text:
        page.write_text(updated)
    return updated != text


def is_current(page_text: str, catalogs: list[Catalog]) -> bool:
    """The page's tables list exactly the catalogs' connectors, versions and availability (sizes aside)."""
    return _section(page_text).strip() == render(catalogs, previous(page_text)).strip()


def _section(text: str) -> str:
    if START not in text or END not in text:
        return ""
    return text[text.index(START) + len(START):text.index(END)]
