"""SBOMs: the CycloneDX document every image carries (written in its build), read back and checked.

The build's `sbom` stage runs images/sbom/make_sbom.py, which lists the image's Python packages
(cyclonedx-py) and Debian packages (dpkg) at SBOM_PATH. After the smoke test the builder reads it
back with the lock the image installed, and an SBOM whose Python packages are not exactly the
lock's fails the build. `inv sbom` reads it from any image.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.utils import canonicalize_name

from ..errors import ConfigError, FactoryError
from ..files import write_atomically
from ..model.failures import Cause, Diagnosis, StepFailed
from ..model.plan import LABEL_SBOM, LOCK_PATH, SBOM_PATH
from .lock import PACKAGE_LINE

ORIGIN = "io.ingestion-factory:package-manager"  # the property make_sbom.py marks components with


@dataclass(frozen=True)
class SbomSummary:
    python: dict[str, str]  # canonical name -> version
    debian: dict[str, str]
    path: Path | None = None  # where a copy was written


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


def mismatch(sbom_python: dict[str, str], locked: dict[str, str]) -> list[str]:
    """How the SBOM's Python packages differ from the lock's: empty when they are the same set."""
    problems = []
    for name in sorted(sbom_python.keys() | locked.keys()):
        have, want = sbom_python.get(name), locked.get(name)
        if have == want:
            continue
        if want is None:
            problems.append(f"{name} {have} is installed but not in the lock")
        elif have is None:
            problems.append(f"{name} {want} is locked but not installed")
        else:
            problems.append(f"{name} is {have}, the lock says {want}")
    return problems


def read_files(api, image: str, paths: list[str]) -> dict[str, bytes | None]:
    """Files from an image, without running it (a created container, read through the engine's archive API)."""
    from docker.errors import NotFound  # the docker SDK loads when the engine is used, not at start-up

    container = api.containers.create(image, ["true"], network_mode="none")
    try:
        found: dict[str, bytes | None] = {}
        for path in paths:
            try:
                stream, _ = container.get_archive(path)
            except NotFound:  # the image has no such file
                found[path] = None
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
                member = archive.next()
                extracted = archive.extractfile(member) if member else None
                found[path] = extracted.read() if extracted else None
        return found
    finally:
        container.remove(force=True)


def _read_against_lock(api, image: str, sbom_path: str) -> tuple[bytes | None, SbomSummary, list[str]]:
    """The SBOM an image holds (None when it has none), its packages, and how they differ from the lock it carries."""
    files = read_files(api, image, [sbom_path, LOCK_PATH])
    raw = files[sbom_path]
    if raw is None:
        return None, SbomSummary({}, {}), []
    document = json.loads(raw)
    summary = SbomSummary(packages(document, "pip"), packages(document, "dpkg"))
    locked = files[LOCK_PATH]
    problems = mismatch(summary.python, lock_packages(locked.decode())) if locked is not None else []
    return raw, summary, problems


def verify_image(api, image_id: str, name: str, output_dir: Path | None) -> SbomSummary:
    """The builder's check after the smoke test: the image's SBOM lists exactly its lock's packages."""
    raw, summary, problems = _read_against_lock(api, image_id, SBOM_PATH)
    if raw is None:
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH, f"the image has no SBOM at {SBOM_PATH}"))
    if problems:
        raise StepFailed(Diagnosis(Cause.SBOM_MISMATCH, f"the SBOM differs from the lock: {problems[0]}",
                                   tuple(problems[:15])))
    if output_dir is None:
        return summary
    path = output_dir / f"{name}.cdx.json"
    write_atomically(path, raw)
    return replace(summary, path=path)


def export(api, ref: str, output: Path | None) -> tuple[bytes, SbomSummary]:
    """`inv sbom`: the SBOM of an image in the engine, checked against the lock it carries."""
    try:
        image = api.images.get(ref)
    except Exception:
        raise ConfigError(f"no image {ref} in the engine", "build it first: inv build-connectors -c NAME") from None
    if LABEL_SBOM not in (image.labels or {}):
        raise ConfigError(f"{ref} carries no SBOM (no {LABEL_SBOM} label): it was built before SBOMs",
                          "rebuild it: inv build-connectors -c NAME --force")
    path = image.labels[LABEL_SBOM]
    raw, summary, problems = _read_against_lock(api, image.id, path)
    if raw is None:
        raise FactoryError(f"{ref} names its SBOM {path} but has no such file")
    if problems:
        raise FactoryError(f"the SBOM of {ref} differs from its lock: {'; '.join(problems[:5])}")
    if output is not None:
        write_atomically(output, raw)
    return raw, replace(summary, path=output)
