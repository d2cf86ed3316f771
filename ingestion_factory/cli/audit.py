"""`inv audit`: the table, the JSON report, the VEX document and one summary line per image."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..engine import debian_archive, python_image
from ..engine.docker_engine import DockerEngine
from ..files import write_atomically
from ..model import catalog as catalog_mod
from ..model import debian_lock, osv
from ..model import plan as plan_mod
from ..settings import Settings
from ..workflows import audit as audit_mod
from ..workflows import lock as lock_mod
from ..workflows import sbom as sbom_mod
from .commands import console
from .report import styled


def audit(settings: Settings, names: list[str] | None = None, *, json_path: str | None = None,
          osv_sources: list[str] | None = None, vex_path: str | None = None, python: bool = True,
          fresh: bool = False) -> int:
    started = time.monotonic()
    selected = audit_mod.select(settings, names)
    database = audit_mod.read_osv(osv_sources or [])  # bad input fails before any work
    catalog = catalog_mod.discover(settings)
    local = None

    def engine():
        nonlocal local
        if local is None:
            local = DockerEngine()
        return local

    def read_sbom(name: str):
        copy = plan_mod.sbom_copies(settings) / f"{name}.cdx.json"
        if copy.is_file():
            shown = str(copy.relative_to(settings.root) if copy.is_relative_to(settings.root) else copy)
            return sbom_mod.read_document(copy.read_bytes(), shown), shown
        ref = plan_mod.image_ref(catalog[name], settings)
        if engine().inspect(ref) is None:
            return None
        raw, _ = sbom_mod.export(engine(), ref, None)
        return sbom_mod.read_document(raw, ref), ref

    def read_python_image():
        # The lock is what `inv python-image` builds: no engine needed, and the same answer on every machine.
        lock = debian_lock.read(python_image.lock_path(settings))
        package_set = lock.for_architecture(settings.target_platforms[0].debian) if lock else None
        if package_set is not None:
            return package_set.versions(), debian_lock.LOCK_PATH
        image = engine().inspect(settings.python_image)  # no lock: an image pulled or built before it
        if image is None:
            return None
        return python_image.installed_packages(engine(), image.id), "dpkg status"

    include_python_image = not names or audit_mod.PYTHON_IMAGE in (names or [])
    selected = [name for name in selected if name != audit_mod.PYTHON_IMAGE]
    locker = None
    if python:
        targets = lock_mod.targets(catalog, settings)
        locker = lock_mod.Locker(settings, targets, upgrade=True)
    auditor = audit_mod.Auditor(settings, debian_archive.Archive(settings), read_sbom,
                                read_python_image if include_python_image else None, locker, database,
                                jobs=settings.jobs, fresh=fresh)
    results = auditor.run(selected, python_image=include_python_image)
    _print_table(results)
    for result in results:
        console.print(escape(result.summary()), highlight=False)
    code = audit_mod.exit_code(results)
    report = {"duration_s": round(time.monotonic() - started, 2), "exit_code": code,
              "suites": [s.name for s in debian_archive.suites(settings)],
              "upgrade_packages": audit_mod.upgrade_packages(results),
              "images": [r.as_json() for r in results]}
    target = Path(json_path) if json_path else settings.output_path / "reports" / "audit-latest.json"
    write_atomically(target, json.dumps(report, indent=1) + "\n")
    if database is not None:
        vex_target = Path(vex_path) if vex_path else settings.output_path / "reports" / "audit-vex.cdx.json"
        findings = [f for r in results for f in r.vulnerabilities]
        write_atomically(vex_target, json.dumps(osv.vex(findings), indent=1) + "\n")
        console.print(f"VEX ({len(findings)} finding(s), each in_triage until you record a decision): {vex_target}")
    fixable = sum(r.fixable for r in results)
    console.print(f"{fixable} of {len(results)} image(s) have fixes available; report: {target} "
                  f"({time.monotonic() - started:.1f}s)")
    return code


def _print_table(results: list[audit_mod.ImageAudit]) -> None:
    table = Table("image", "status", "Debian fixes", "Python updates", "vulnerabilities", show_lines=False)
    for result in results:
        debian = ", ".join(f"{u.name} {u.fixed}" for u in result.debian[:4]) + (
            f" +{len(result.debian) - 4}" if len(result.debian) > 4 else "")
        python = ", ".join(f"{u.name} {u.newest}" + (" (framework)" if u.framework else "")
                           for u in result.python[:4]) + (f" +{len(result.python) - 4}" if len(result.python) > 4 else "")
        vulns = ", ".join(sorted({f.aliases[0] if f.aliases else f.id for f in result.vulnerabilities})[:4]) + (
            f" +{len(result.vulnerabilities) - 4}" if len(result.vulnerabilities) > 4 else "")
        table.add_row(escape(result.name), styled(result.status), escape(debian) or "-", escape(python) or "-",
                      escape(vulns) or "-")
    console.print(table)

