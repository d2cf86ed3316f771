"""Known vulnerabilities, offline: OSV records (https://ossf.github.io/osv-schema/) matched to SBOM components.

OSV publishes every ecosystem as a zip of one JSON record per advisory
(https://osv-vulnerabilities.storage.googleapis.com/<ecosystem>/all.zip); `inv audit --osv` reads such
zips, or directories of the records, without any network. A component is affected when a record names
its ecosystem and package and its version is in one of the record's ECOSYSTEM (or SEMVER) ranges or in
its `versions` list. Versions are ordered the ecosystem's way: PEP 440 for PyPI, dpkg for Debian.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian.debian_support import Version as DebianVersion
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion
from packaging.version import Version as PythonVersion

from ..documents import DocumentError, MiB, load_json
from ..errors import ConfigError

PYPI = "PyPI"
DEBIAN = "Debian"
# One advisory is a few kB (those that list every affected version, a few hundred); a record is read
# only this far, so a zip member that unpacks to gigabytes is refused, not unpacked.
MAX_RECORD_BYTES = 8 * MiB

Record = dict[str, Any]  # an OSV record (or a part of one) as parsed JSON: its shape is the schema's, not checked
VersionKey = DebianVersion | PythonVersion  # one ecosystem's keys are only compared among themselves


@dataclass(frozen=True)
class Component:
    """An SBOM component, as OSV names it: ecosystem ("PyPI", "Debian:12"), package, version."""

    ecosystem: str
    name: str
    version: str
    bom_ref: str = ""


@dataclass(frozen=True)
class Finding:
    """One advisory affecting one component."""

    component: Component
    id: str
    aliases: tuple[str, ...]
    summary: str
    fixed: tuple[str, ...]  # the versions that fix it, where the record says


def _order(ecosystem: str) -> Callable[[str], VersionKey]:
    """The version ordering of an ecosystem (its sort key); anything unparsable sorts as unknown (None)."""
    if ecosystem.split(":")[0] == DEBIAN:
        return DebianVersion
    return PythonVersion


def _key(ecosystem: str, version: str) -> VersionKey | None:
    try:
        return _order(ecosystem)(version)
    except (InvalidVersion, ValueError):
        return None


def _name(ecosystem: str, name: str) -> str:
    return canonicalize_name(name) if ecosystem == PYPI else name


def in_range(version: str, events: list[Record], ecosystem: str) -> bool:
    """Whether `version` is inside one ECOSYSTEM/SEMVER range, evaluated as the OSV schema says: the events in
    version order ("introduced": "0" first); an `introduced` at or below it opens, a `fixed` at or below it
    closes, a `last_affected` below it closes."""
    have = _key(ecosystem, version)
    if have is None:
        return False
    opening, points = False, []
    for event in events:
        for kind, value in event.items():
            if kind == "introduced" and value == "0":
                opening = True
            elif kind in ("introduced", "fixed", "last_affected"):
                point = _key(ecosystem, value)
                if point is not None:  # an unparsable event cannot be placed; it is left out
                    points.append((point, kind))
    affected = opening
    for point, kind in sorted(points, key=lambda item: item[0]):
        if kind == "introduced" and have >= point:
            affected = True
        elif kind == "fixed" and have >= point:
            affected = False
        elif kind == "last_affected" and have > point:
            affected = False
    return affected


def affects(record: Record, component: Component) -> tuple[bool, tuple[str, ...]]:
    """Whether the record affects the component, and the fixed versions it names for that package."""
    hit, fixed = False, []
    for entry in record.get("affected", []):
        package = entry.get("package", {})
        if package.get("ecosystem") != component.ecosystem:
            continue
        if _name(component.ecosystem, package.get("name", "")) != _name(component.ecosystem, component.name):
            continue
        if component.version in entry.get("versions", []):
            hit = True
        for span in entry.get("ranges", []):
            if span.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue  # GIT ranges name commits, which an installed package does not carry
            events = span.get("events", [])
            fixed += [event["fixed"] for event in events if "fixed" in event]
            if in_range(component.version, events, component.ecosystem):
                hit = True
    return hit, tuple(dict.fromkeys(fixed))


class Database:
    """OSV records indexed by (ecosystem, package name), read from directories or zips of JSON files."""

    def __init__(self, records: Iterable[Record]):
        self.records = 0
        self._by_package: dict[tuple[str, str], list[Record]] = {}
        for record in records:
            self.records += 1
            for entry in record.get("affected", []):
                package = entry.get("package", {})
                ecosystem = package.get("ecosystem", "")
                key = (ecosystem, _name(ecosystem, package.get("name", "")))
                bucket = self._by_package.setdefault(key, [])
                if not bucket or bucket[-1] is not record:
                    bucket.append(record)

    @classmethod
    def load(cls, sources: Iterable[Path]) -> Database:
        return cls(record for source in sources for record in read_records(source))

    def findings(self, component: Component) -> list[Finding]:
        found = []
        for record in self._by_package.get((component.ecosystem, _name(component.ecosystem, component.name)), []):
            if record.get("withdrawn"):
                continue
            hit, fixed = affects(record, component)
            if hit:
                found.append(Finding(component, record["id"], tuple(record.get("aliases", [])),
                                     record.get("summary", "") or record.get("details", "")[:120], fixed))
        return found


def read_records(source: Path) -> Iterator[Record]:
    """Every OSV record in a directory (recursively) or a zip, each file one JSON record."""
    if not source.exists():
        raise ConfigError(f"--osv {source} does not exist", "give a directory or zip of OSV JSON records "
                          "(e.g. https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip)")
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.suffix == ".zip":
                yield from read_records(path)
            elif path.suffix == ".json":
                with path.open("rb") as handle:
                    yield _parse(handle.read(MAX_RECORD_BYTES + 1), str(path))
        return
    if not zipfile.is_zipfile(source):
        raise ConfigError(f"--osv {source} is neither a directory nor a zip")
    with zipfile.ZipFile(source) as archive:
        for member in archive.namelist():
            if member.endswith(".json"):
                with archive.open(member) as handle:
                    yield _parse(handle.read(MAX_RECORD_BYTES + 1), f"{source}:{member}")


def _parse(data: bytes, where: str) -> Record:
    """One OSV record; more than MAX_RECORD_BYTES (`data` holds at most one byte more), nesting deeper than
    documents.MAX_DEPTH, or no JSON is bad input naming the file."""
    try:
        record = load_json(data, what=where, limit=MAX_RECORD_BYTES)
    except DocumentError as exc:
        raise ConfigError(str(exc), "give OSV's own records (docs/audit.md says where to get them)") from None
    if not isinstance(record, dict) or "id" not in record:
        raise ConfigError(f"{where} is not an OSV record (no id)")
    return record


def vex(findings: Iterable[Finding], *, subject: str = "", version: str = "") -> Record:
    """A CycloneDX 1.6 VEX document of the findings: each `in_triage`, ready for a person to record
    `not_affected` (with a justification) where an advisory does not apply."""
    vulnerabilities: dict[str, Record] = {}
    for finding in findings:
        entry = vulnerabilities.setdefault(finding.id, {
            "bom-ref": finding.id,
            "id": finding.id,
            "source": {"name": "OSV", "url": f"https://osv.dev/vulnerability/{finding.id}"},
            "references": [{"id": alias, "source": {"name": "NVD" if alias.startswith("CVE-") else "OSV"}}
                           for alias in finding.aliases],
            "description": finding.summary,
            "recommendation": (f"upgrade {finding.component.name} to {' or '.join(finding.fixed)}"
                               if finding.fixed else "no fixed version published"),
            "analysis": {"state": "in_triage"},
            "affects": [],
        })
        ref = finding.component.bom_ref or f"{finding.component.ecosystem}:{finding.component.name}"
        if all(item["ref"] != ref for item in entry["affects"]):
            entry["affects"].append({"ref": ref, "versions": [{"version": finding.component.version,
                                                               "status": "affected"}]})
    document = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                "vulnerabilities": [vulnerabilities[key] for key in sorted(vulnerabilities)]}
    if subject:
        document["metadata"] = {"component": {"type": "container", "name": subject,
                                              **({"version": version} if version else {}),
                                              "bom-ref": f"image:{subject}"}}
    return document
