"""The catalog table in docs/catalog.md: one row per connector, from the catalog and the last build report.

The identity columns (connector, framework, source, unavailable reason) come from the catalog alone,
so a test can hold the page to the catalog; the size and status columns come from the last build
report when there is one, and otherwise stay as the page had them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .catalog import Catalog
from .results import BuildStatus, human_size

START = "<!-- catalog-table:start (written by `inv catalog`; sizes and status from the last build report) -->"
END = "<!-- catalog-table:end -->"
PAGE = Path("docs/catalog.md")  # relative to the repository: the page that holds the table
HEADER = ("| connector | framework | source | added over the base | status |\n"
          "|---|---|---|---:|---|\n")
ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| [^|]* \| [^|]* \| (?P<added>[^|]*) \| (?P<status>.*) \|$")


def measured(report_path: Path, catalog: Catalog) -> dict[str, tuple[str, str]]:
    """name -> (size added over the parent, status) from a build report; {} when there is none."""
    try:
        results = json.loads(report_path.read_text())["images"]
    except (OSError, ValueError, KeyError):
        return {}
    # The table is about the default platform's images; a multi-platform report has a row per platform.
    results = [r for r in results if r.get("platform", "linux/amd64") == "linux/amd64"]
    sizes = {r["name"]: r.get("size") or 0 for r in results}
    rows = {}
    for result in results:
        status = result.get("result")
        if status in (BuildStatus.BUILT.value, BuildStatus.PULLED.value, BuildStatus.UP_TO_DATE.value):
            rows[result["name"]] = ("", "verified")
        elif status == BuildStatus.FAILED.value:
            rows[result["name"]] = ("-", "failed in the last build")
        parent = catalog[result["name"]].parent if result["name"] in catalog else None
        if result["name"] in rows and result.get("size") and sizes.get(parent):
            rows[result["name"]] = (human_size(result["size"] - sizes[parent]), rows[result["name"]][1])
    return rows


def previous(page_text: str) -> dict[str, tuple[str, str]]:
    """name -> (size, status) as the page's table has them."""
    rows = {}
    for line in _section(page_text).splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match["name"]] = (match["added"].strip(), match["status"].strip())
    return rows


def render(catalog: Catalog, cells: dict[str, tuple[str, str]]) -> str:
    lines = [HEADER]
    for spec in sorted(catalog.connectors, key=lambda s: (s.framework.name != "openmetadata", s.name)):
        size, status = cells.get(spec.name, ("", "not built yet"))
        if spec.unavailable:
            size, status = "-", f"{BuildStatus.UNAVAILABLE.value}: {spec.unavailable}"
        source = spec.source.replace("|", "/")
        lines.append(f"| `{spec.name}` | {spec.framework.name} | {source} | {size or '-'} | "
                     f"{status.replace('|', '/')} |\n")
    for name in sorted(catalog.broken):
        lines.append(f"| `{name}` | ? | ? | - | broken: see `inv list` |\n")
    return "".join(lines)


def update_page(page: Path, catalog: Catalog, report_path: Path) -> bool:
    """Rewrite the table between the markers; True when the page changed."""
    text = page.read_text()
    if START not in text or END not in text:
        return False
    cells = previous(text)
    for name, (size, status) in measured(report_path, catalog).items():
        cells[name] = (size or cells.get(name, ("", ""))[0], status)
    table = render(catalog, cells)
    updated = text[:text.index(START) + len(START)] + "\n" + table + text[text.index(END):]
    if updated != text:
        page.write_text(updated)
    return updated != text


def is_current(page_text: str, catalog: Catalog) -> bool:
    """The page's table lists exactly the catalog's connectors with their identity (sizes aside)."""
    return _section(page_text).strip() == render(catalog, previous(page_text)).strip()


def _section(text: str) -> str:
    if START not in text or END not in text:
        return ""
    return text[text.index(START) + len(START):text.index(END)]
