"""SBOMs: the CycloneDX document every image carries (written in its build), read back and checked.

The build's `sbom` stage runs images/sbom/make_sbom.py, which lists the image's Python packages
(cyclonedx-py) and Debian packages (dpkg) at SBOM_PATH. After the smoke test the builder reads it
back with the lock the image installed, and an SBOM whose Python packages are not exactly the
lock's fails the build; distributions the base left out on purpose (pip, setuptools: listed at
REMOVED_PATH by images/base/prune.py) are the only locked packages allowed to be absent, and no image
may contain pip. `inv sbom` reads it from any image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from packaging.utils import canonicalize_name

from ..documents import DocumentError, MiB, load_json
from ..engine.docker_engine import Engine
from ..errors import ConfigError, FactoryError
from ..files import write_atomically
from ..model.failures import Cause, Diagnosis, StepFailed
from ..model.plan import LABEL_SBOM, LOCK_PATH, SBOM_PATH
from .lock import PACKAGE_LINE

ORIGIN = "io.ingestion-factory:package-manager"  # the property make_sbom.py marks components with
REMOVED_PATH = "/opt/ingestion-factory/removed-packages.txt"  # one distribution a line, written by prune.py
# No image can install packages at run time: neither pip in the virtualenv nor Debian's, nor the pip
# wheel with which `python3 -m venv` would set up a pip of its own.
FORBIDDEN_PYTHON = ("pip",)
FORBIDDEN_DEBIAN = ("python3-pip", "python3-pip-whl")
# An image's SBOM is a few hundred kB (every Python and Debian package, once); an image from a registry
# cache or a bundle carries whatever SBOM its maker put in, so it is read within bounds.
MAX_SBOM_BYTES = 32 * MiB


class SbomUnreadable(FactoryError):
    """An SBOM read back that is too large, nested too deep, not JSON, or no CycloneDX object (exit 1)."""


@dataclass(frozen=True)
class SbomSummary:
    python: dict[str, str]  # canonical name -> version
    debian: dict[str, str]
    path: Path | None = None  # where a copy was written


def read_document(raw: bytes, where: str) -> dict:
    """The CycloneDX document of an SBOM read back (from an image, or the copy of one), within bounds."""
    try:
        document = load_json(raw, what=f"the SBOM of {where}", limit=MAX_SBOM_BYTES)
    except DocumentError as exc:
        raise SbomUnreadable(str(exc), "rebuild the image, or take it from a source you trust") from None
    if not isinstance(document, dict):
        raise SbomUnreadable(f"the SBOM of {where} is a JSON {type(document).__name__}, not a CycloneDX document")
    return document


def packages(document: dict, origin: str) -> dict[str, str]:
    """Components of one origin ("pip" or "dpkg") as name -> version."""
    found = {}
    for component in document.get("components", []):
        properties = {p.get("name"): p.get("value") for p in component.get("properties", [])}
        if properties.get(ORIGIN) == origin:
            name = canonicalize_name(component["name"]) if origin == "pip" else component["name"]
            found[name] = component.get("version", "")
    return found


def lock_packages(text: str) -> dict[str, str]:
    return {canonicalize_name(m["name"]): m["version"] for line in text.splitlines() if (m := PACKAGE_LINE.match(line))}


def removed_packages(text: str) -> frozenset[str]:
    return frozenset(canonicalize_name(line.strip()) for line in text.splitlines() if line.strip())


def mismatch(sbom_python: dict[str, str], locked: dict[str, str], removed: frozenset[str] = frozenset()) -> list[str]:
    """How the SBOM's Python packages differ from the lock's: empty when they are the same set, but for
    the locked packages the image says it left out (which must then be absent)."""
    problems = []
    for name in sorted(sbom_python.keys() | locked.keys()):
        have, want = sbom_python.get(name), locked.get(name)
        if name in removed:
            if have is not None:
                problems.append(f"{name} {have} is installed but the image lists it as removed")
            continue
        if have == want:
            continue
        if want is None:
            problems.append(f"{name} {have} is installed but not in the lock")
        elif have is None:
            problems.append(f"{name} {want} is locked but not installed")
        else:
            problems.append(f"{name} is {have}, the lock says {want}")
    return problems


def _read_against_lock(engine: Engine, image: str, sbom_path: str) -> tuple[bytes | None, SbomSummary, list[str] | None]:
    """The SBOM an image holds (None when it has none), its packages, and how they differ from the lock it
    carries (None when it carries no lock: nothing to check the SBOM against, which is a failure too)."""
    files = engine.read_files(image, [sbom_path, LOCK_PATH, REMOVED_PATH])
    raw = files[sbom_path]
    if raw is None:
        return None, SbomSummary({}, {}), []
    document = read_document(raw, image[:19] if image.startswith("sha256:") else image)
    summary = SbomSummary(packages(document, "pip"), packages(document, "dpkg"))
    locked = files[LOCK_PATH]
    removed = removed_packages(files[REMOVED_PATH].decode()) if files[REMOVED_PATH] is not None else frozenset()
    problems = mismatch(summary.python, lock_packages(locked.decode()), removed) if locked is not None else None
    return raw, summary, problems


def forbidden(summary: SbomSummary) -> list[str]:
    """Package installers the image contains (none may: nothing is installed at run time)."""
    return ([f"{name} {summary.python[name]} is installed: no image may contain pip"
             for name in FORBIDDEN_PYTHON if name in summary.python]
            + [f"Debian's {name} {summary.debian[name]} is installed: no image may contain pip"
               for name in FORBIDDEN_DEBIAN if name in summary.debian])


def verify_image(engine: Engine, image_id: str, name: str, output_dir: Path | None) -> SbomSummary:
    """The builder's check after the smoke test: the image's SBOM lists exactly its lock's packages."""
    try:
        raw, summary, problems = _read_against_lock(engine, image_id, SBOM_PATH)
    except SbomUnreadable as exc:  # as any other SBOM that is not what it should be: the image fails its check
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH, exc.message)) from None
    if raw is None:
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH, f"the image has no SBOM at {SBOM_PATH}"))
    if problems is None:
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH,
                                   f"{name} has no lock at {LOCK_PATH}: its SBOM cannot be checked"))
    if problems:
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH, f"the SBOM differs from the lock: {problems[0]}",
                                   tuple(problems[:15])))
    if installers := forbidden(summary):
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH, installers[0], tuple(installers)))
    if output_dir is None:
        return summary
    path = output_dir / f"{name}.cdx.json"
    write_atomically(path, raw)
    return replace(summary, path=path)


def export(engine: Engine, ref: str, output: Path | None) -> tuple[bytes, SbomSummary]:
    """`inv sbom`: the SBOM of an image in the engine, checked against the lock it carries."""
    image = engine.inspect(ref)
    if image is None:
        raise ConfigError(f"no image {ref} in the engine", "build it first: inv build-connectors -c NAME")
    if LABEL_SBOM not in (image.labels or {}):
        raise ConfigError(f"{ref} carries no SBOM (no {LABEL_SBOM} label): it was built before SBOMs",
                          "rebuild it: inv build-connectors -c NAME --force")
    path = image.labels[LABEL_SBOM]
    raw, summary, problems = _read_against_lock(engine, image.id, path)
    if raw is None:
        raise FactoryError(f"{ref} names its SBOM {path} but has no such file")
    if problems is None:
        raise FactoryError(f"{ref} has no lock at {LOCK_PATH}: its SBOM cannot be checked against it",
                           "rebuild it: inv build-connectors -c NAME --force")
    if problems:
        raise FactoryError(f"the SBOM of {ref} differs from its lock: {'; '.join(problems[:5])}")
    if output is not None:
        write_atomically(output, raw)
    return raw, replace(summary, path=output)
