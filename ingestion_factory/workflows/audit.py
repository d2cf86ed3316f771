"""`inv audit`: what could be fixed in each image, read from the image's own SBOM.

- Debian: installed packages the suite, <suite>-updates or <suite>-security has a newer version of
  (engine/debian_archive.py: signature-checked indexes);
- Python: locked packages a fresh resolution of the image's lock inputs moves (the resolver's answer,
  under the same constraints and parent pins), and, marked apart, a newer release of the framework;
- with OSV records (model/osv.py): the advisories that match a component's ecosystem, name and version.

The SBOM is the copy in build/reports/sbom/<name>.cdx.json when there, else read from the image.
Resolutions are cached under build/cache/audit/ for an hour, keyed by the lock they start from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..engine import debian_archive
from ..engine.debian_archive import DebianUpdate
from ..errors import ConfigError, FactoryError
from ..files import write_atomically
from ..model import catalog as catalog_mod
from ..model import osv
from ..model import plan as plan_mod
from ..model.results import StepResult, StepStatus
from ..settings import Settings
from . import lock as lock_mod

PYTHON_IMAGE = "python-image"  # the row of the Python image every base starts FROM
RESOLUTION_MAX_AGE_S = 3600
ORIGIN = "io.ingestion-factory:package-manager"


class AuditStatus(StepStatus):
    CLEAN = "nothing to fix", "green"
    FIXABLE = "fixes available", "yellow"
    NOT_BUILT = "not built", "dim"

    @property
    def failed(self) -> bool:
        return self is AuditStatus.FIXABLE  # what `inv audit` exits 1 for


@dataclass(frozen=True)
class PythonUpdate:
    name: str
    installed: str
    newest: str
    framework: bool = False  # the framework itself: a new supported version (`inv catalog --version`), not a lock
    command: str = ""  # for the framework: the command that adds the release as a supported version


@dataclass(frozen=True, kw_only=True)
class ImageAudit(StepResult):
    """What `inv audit` found for one image (its report entry is as_json's: the updates named as the report has
    always named them)."""

    ref: str
    status: AuditStatus
    source: str = ""  # where the SBOM was read
    debian: tuple[DebianUpdate, ...] = ()
    python: tuple[PythonUpdate, ...] = ()
    vulnerabilities: tuple[osv.Finding, ...] = ()
    components: tuple[osv.Component, ...] = ()
    osv_checked: bool = False

    @property
    def fixable_python(self) -> tuple[PythonUpdate, ...]:
        return tuple(update for update in self.python if not update.framework)

    @property
    def fixable_vulnerabilities(self) -> tuple[osv.Finding, ...]:
        return tuple(finding for finding in self.vulnerabilities if finding.fixed)

    @property
    def fixable(self) -> bool:
        return bool(self.debian or self.fixable_python or self.fixable_vulnerabilities)

    def summary(self) -> str:
        if self.status is AuditStatus.NOT_BUILT:
            return f"{self.name}: not built ({self.detail})"
        framework = [u for u in self.python if u.framework]
        parts = [f"{len(self.debian)} Debian update(s)", f"{len(self.fixable_python)} Python update(s)"]
        if framework:
            update = framework[0]
            parts.append(f"framework {update.installed} -> {update.newest} released"
                         + (f" (add it: {update.command})" if update.command else ""))
        if self.osv_checked:
            advisories = {f.id for f in self.vulnerabilities}
            fixed = {f.id for f in self.fixable_vulnerabilities}
            parts.append(f"{len(advisories)} known advisor{'y' if len(advisories) == 1 else 'ies'} "
                         f"({len(fixed)} with a fixed version)")
        return f"{self.name}: {self.status}: " + ", ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name, "ref": self.ref, "status": str(self.status), "sbom": self.source,
            "detail": self.detail,
            "debian": [{"package": u.name, "installed": u.installed, "fixed": u.fixed, "suite": u.suite}
                       for u in self.debian],
            "python": [{"package": u.name, "installed": u.installed, "newest": u.newest, "framework": u.framework}
                       for u in self.python],
            "vulnerabilities": [{"id": f.id, "aliases": list(f.aliases), "ecosystem": f.component.ecosystem,
                                 "package": f.component.name, "version": f.component.version,
                                 "fixed": list(f.fixed), "summary": f.summary} for f in self.vulnerabilities],
        }


# catalog key -> the SBOM document, or None when the image is not built; injectable for tests.
SbomReader = Callable[[str], "tuple[dict, str] | None"]
# the Python image -> its Debian packages (name -> (version, architecture)) and where they were read (its
# lock, images/python/debian.lock, or the image's dpkg database when there is no lock), or None.
DpkgReader = Callable[[], "tuple[dict[str, tuple[str, str]], str] | None"]


@dataclass
class Auditor:
    settings: Settings
    archive: debian_archive.Archive
    read_sbom: SbomReader
    read_python_image: DpkgReader | None = None
    locker: lock_mod.Locker | None = None  # None: no Python resolution (tests, or --no-python)
    osv_db: osv.Database | None = None
    jobs: int = 2
    fresh: bool = False
    _newest_framework: dict[str, str | None] = field(default_factory=dict)

    def run(self, names: list[str], *, python_image: bool = True) -> list[ImageAudit]:
        catalog = catalog_mod.discover(self.settings)
        results = [self._python_image()] if python_image and self.read_python_image else []
        documents, unreadable = {}, {}
        for name in names:
            try:
                documents[name] = self.read_sbom(name)
            except FactoryError as error:  # e.g. an image built before SBOMs: a row, not the end of the audit
                documents[name], unreadable[name] = None, error.message
        built = [name for name in names if documents[name] is not None]
        newest = self._resolve_all(built) if self.locker else {}
        for name in names:
            spec = catalog[name]
            ref = plan_mod.image_ref(spec, self.settings)
            if documents[name] is None:
                results.append(ImageAudit(name=name, ref=ref, status=AuditStatus.NOT_BUILT,
                                          detail=unreadable.get(name, "no SBOM copy and no image")))
                continue
            document, source = documents[name]
            results.append(self._image(name, ref, spec, document, source, newest))
        return results

    # --- one image -----------------------------------------------------------------------------------

    def _image(self, name, ref, spec, document, source, newest) -> ImageAudit:
        components = sbom_components(document)
        installed_python = {c.name: c.version for c in components if c.ecosystem == osv.PYPI}
        debian = self._debian_updates([(c.name, c.version, c.bom_ref) for c in components if c.ecosystem != osv.PYPI])
        python = []
        for package, version in sorted(self._newest_for(name, newest).items()):
            have = installed_python.get(package)
            if have is not None and _newer(version, have):
                python.append(PythonUpdate(package, have, version))
        framework = spec.framework.package
        released = self._framework_release(framework)
        have = installed_python.get(canonicalize_name(framework))
        # A release newer than every supported version (an older image's newer release is supported already).
        newest_supported = max(spec.framework.supported, key=_version_key)
        if released and have and _newer(released, have) and _newer(released, newest_supported):
            python.append(PythonUpdate(canonicalize_name(framework), have, released, framework=True,
                                       command=f"inv catalog --framework {spec.framework.name} --version {released}"))
        osv_components = self._osv_components(components)
        findings = tuple(f for c in osv_components for f in self.osv_db.findings(c)) if self.osv_db else ()
        audit = ImageAudit(name=name, ref=ref, status=AuditStatus.CLEAN, source=source, debian=tuple(debian),
                           python=tuple(python), vulnerabilities=findings, components=tuple(osv_components),
                           osv_checked=self.osv_db is not None)
        return _with_status(audit)

    def _python_image(self) -> ImageAudit:
        ref = self.settings.python_image
        found = self.read_python_image()
        if found is None:
            return ImageAudit(name=PYTHON_IMAGE, ref=ref, status=AuditStatus.NOT_BUILT,
                              detail="no lock, and not in the engine")
        installed, source = found[0], found[1]
        default = _default_arch(self.settings)
        grouped = debian_archive.by_architecture(((n, v, a) for n, (v, a) in installed.items()), default)
        debian = [u for arch, packages in grouped.items() for u in self.archive.updates(packages, arch)]
        components = [osv.Component(_debian_ecosystem(self.settings), n, v, f"pkg:deb/debian/{n}@{v}")
                      for n, (v, _) in sorted(installed.items())]
        osv_components = self._osv_components(components)
        findings = tuple(f for c in osv_components for f in self.osv_db.findings(c)) if self.osv_db else ()
        return _with_status(ImageAudit(name=PYTHON_IMAGE, ref=ref, status=AuditStatus.CLEAN, source=source,
                                       debian=tuple(debian), vulnerabilities=findings,
                                       components=tuple(osv_components), osv_checked=self.osv_db is not None))

    def _debian_updates(self, packages: list[tuple[str, str, str]]) -> list[DebianUpdate]:
        by_arch: dict[str, dict[str, str]] = {}
        for name, version, purl in packages:
            by_arch.setdefault(_purl_arch(purl) or _default_arch(self.settings), {})[name] = version
        return [u for arch, installed in sorted(by_arch.items()) for u in self.archive.updates(installed, arch)]

    def _osv_components(self, components: Iterable[osv.Component]) -> list[osv.Component]:
        """Debian advisories name source packages: binary names are mapped through the archive's index."""
        mapped = []
        for component in components:
            if component.ecosystem.startswith(osv.DEBIAN) and self.osv_db is not None:
                arch = _purl_arch(component.bom_ref) or _default_arch(self.settings)
                source = self.archive.source_of(component.name, arch)
                version = component.version.rsplit("+b", 1)[0]  # a binNMU's binary version: the source's
                mapped.append(osv.Component(component.ecosystem, source, version, component.bom_ref))
            else:
                mapped.append(component)
        return mapped

    # --- Python resolutions --------------------------------------------------------------------------

    def _newest_for(self, name: str, newest: dict[str, dict[str, str]]) -> dict[str, str]:
        """The image's own resolution, plus its parents' for the packages it inherits from them."""
        merged: dict[str, str] = {}
        key: str | None = name
        while key is not None and self.locker is not None:
            for package, version in newest.get(key, {}).items():
                merged.setdefault(package, version)
            key = self.locker.targets[key].parent if key in self.locker.targets else None
        return merged

    def _resolve_all(self, names: list[str]) -> dict[str, dict[str, str]]:
        assert self.locker is not None
        known = [n for n in names if n in self.locker.targets]
        if not known:  # select() reads "none named" as "all"
            return {}
        wanted = lock_mod.select(self.locker.targets, known)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="audit") as pool:
            return dict(zip(wanted, pool.map(self._resolve_cached, wanted), strict=True))

    def _resolve_cached(self, name: str) -> dict[str, str]:
        assert self.locker is not None
        target = self.locker.targets[name]
        lock = lock_mod.read(target.path)
        parent = lock_mod.read(self.locker.targets[target.parent].path) if target.parent else None
        key = f"{lock.digest if lock else ''} {parent.digest if parent else ''}"
        cached = self.settings.output_path / "cache" / "audit" / f"python-{name}.json"
        if not self.fresh:
            try:
                data = json.loads(cached.read_text())
                if data["key"] == key and time.time() - data["time"] < RESOLUTION_MAX_AGE_S:
                    return data["newest"]
            except (OSError, ValueError, KeyError):
                pass
        try:
            newest = self.locker.newest(name)
        except lock_mod.LockFailed as failure:
            raise FactoryError(f"resolving the newest packages for {name} failed: {failure}",
                               "check that the package index is reachable (`inv lock --check` needs no index)") from None
        write_atomically(cached, json.dumps({"key": key, "time": time.time(), "newest": newest}))
        return newest

    def _framework_release(self, package: str) -> str | None:
        if self.locker is None:
            return None
        if package not in self._newest_framework:
            self._newest_framework[package] = self.locker.newest_release(package)
        return self._newest_framework[package]


def sbom_components(document: dict) -> list[osv.Component]:
    """The SBOM's Python and Debian packages as OSV names them."""
    found = []
    for component in document.get("components", []):
        properties = {p.get("name"): p.get("value") for p in component.get("properties", [])}
        origin = properties.get(ORIGIN)
        if origin == "pip":
            found.append(osv.Component(osv.PYPI, canonicalize_name(component["name"]), component.get("version", ""),
                                       component.get("bom-ref", "")))
        elif origin == "dpkg":
            purl = component.get("purl", "")
            distro = _purl_qualifier(purl, "distro") or "debian-12"
            ecosystem = f"{osv.DEBIAN}:{distro.removeprefix('debian-')}"
            found.append(osv.Component(ecosystem, component["name"], component.get("version", ""), purl))
    return found


def _purl_qualifier(purl: str, key: str) -> str:
    qualifiers = purl.partition("?")[2].partition("#")[0]
    for pair in qualifiers.split("&"):
        name, _, value = pair.partition("=")
        if name == key:
            return value
    return ""


def _purl_arch(purl: str) -> str:
    arch = _purl_qualifier(purl, "arch")
    return "" if arch == "all" else arch


def _default_arch(settings: Settings) -> str:
    return settings.target_platforms[0].debian


def _debian_ecosystem(settings: Settings) -> str:
    release = {"bookworm": "12", "trixie": "13", "bullseye": "11"}.get(settings.debian_suite, settings.debian_suite)
    return f"{osv.DEBIAN}:{release}"


def _newer(candidate: str, installed: str) -> bool:
    try:
        return Version(candidate) > Version(installed)
    except InvalidVersion:
        return candidate != installed


def _version_key(version: str):
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, Version("0"))


def _with_status(audit: ImageAudit) -> ImageAudit:
    return replace(audit, status=AuditStatus.FIXABLE if audit.fixable else AuditStatus.CLEAN)


def exit_code(results: Iterable[ImageAudit]) -> int:
    """0: nothing fixable; 1: a fix is available somewhere (a CI gate)."""
    return 1 if any(result.fixable for result in results) else 0


def upgrade_packages(results: Iterable[ImageAudit]) -> list[str]:
    """The Python packages `inv lock --upgrade-package` should move (the scheduled workflow's relock)."""
    return sorted({u.name for r in results for u in r.fixable_python})


def select(settings: Settings, names: Iterable[str] | None) -> list[str]:
    """Catalog keys to audit: the named ones (with ingestion-connector- or not), else every available one."""
    catalog = catalog_mod.discover(settings)
    if not names:
        return [spec.name for spec in catalog if not spec.unavailable]
    chosen = []
    for name in names:
        if name == PYTHON_IMAGE:
            continue
        key = name.removeprefix(catalog_mod.IMAGE_PREFIX)
        if key not in catalog:
            [key] = catalog.resolve([name])
        chosen.append(key)
    return chosen


def read_osv(sources: Iterable[str]) -> osv.Database | None:
    paths = [Path(source) for source in sources]
    if not paths:
        return None
    database = osv.Database.load(paths)
    if database.records == 0:
        raise ConfigError(f"no OSV records in {', '.join(map(str, paths))}",
                          "give a directory or zip of OSV JSON records (docs/audit.md says where to get them)")
    return database
