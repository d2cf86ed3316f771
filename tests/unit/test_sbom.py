"""The SBOM check: an image's Python components must be exactly its lock's packages."""

from __future__ import annotations

import json
import time

import pytest
from fake_engine import FakeEngine

from ingestion_factory.errors import FactoryError
from ingestion_factory.model.failures import Cause, StepFailed
from ingestion_factory.workflows import sbom

LOCK = """# inputs: sha256:00
six==1.17.0 \\
    --hash=sha256:aa
PyYAML==6.0.2 \\
    --hash=sha256:bb
"""


def component(name, version, origin):
    return {"name": name, "version": version, "properties": [{"name": sbom.ORIGIN, "value": origin}]}


def test_components_are_told_apart_by_origin():
    document = {"components": [component("PyYAML", "6.0.2", "pip"), component("libc6", "2.36-9", "dpkg"),
                               component("six", "1.17.0", "pip")]}
    assert sbom.packages(document, "pip") == {"pyyaml": "6.0.2", "six": "1.17.0"}
    assert sbom.packages(document, "dpkg") == {"libc6": "2.36-9"}


def test_the_same_set_has_no_mismatch():
    assert sbom.mismatch({"pyyaml": "6.0.2", "six": "1.17.0"}, sbom.lock_packages(LOCK)) == []


def test_every_difference_is_named():
    installed = {"pyyaml": "6.0.1", "pip": "24.0"}
    assert sbom.mismatch(installed, sbom.lock_packages(LOCK)) == [
        "pip 24.0 is installed but not in the lock",
        "pyyaml is 6.0.1, the lock says 6.0.2",
        "six 1.17.0 is locked but not installed",
    ]


# --- the checks on an image, against a fake engine that serves its files --------------------------


def engine_with(files: dict) -> FakeEngine:
    """An engine with one image, labelled with its SBOM's path, holding `files` (path -> bytes)."""
    engine = FakeEngine()
    engine.add("sha256:" + "a" * 64, {"io.ingestion-factory.sbom": sbom.SBOM_PATH}, ["ns/ingestion-connector-mysql:1"],
               files=files)
    return engine


SBOM = json.dumps({"components": [component("six", "1.17.0", "pip"), component("PyYAML", "6.0.2", "pip")]}).encode()


def test_an_image_whose_sbom_is_its_lock_passes_and_a_copy_is_written(tmp_path):
    engine = engine_with({sbom.SBOM_PATH: SBOM, sbom.LOCK_PATH: LOCK.encode()})
    summary = sbom.verify_image(engine, "sha256:" + "a" * 64, "mysql", tmp_path)
    assert summary.python == {"six": "1.17.0", "pyyaml": "6.0.2"}
    assert summary.path == tmp_path / "mysql.cdx.json" and summary.path.read_bytes() == SBOM


def test_an_image_without_a_lock_fails_the_check_naming_the_image(tmp_path):
    engine = engine_with({sbom.SBOM_PATH: SBOM})
    with pytest.raises(StepFailed) as failed:
        sbom.verify_image(engine, "sha256:" + "a" * 64, "mysql", tmp_path)
    assert failed.value.diagnosis.cause is Cause.SBOM_MISMATCH
    assert failed.value.message == f"mysql has no lock at {sbom.LOCK_PATH}: its SBOM cannot be checked"
    assert not (tmp_path / "mysql.cdx.json").exists()
    with pytest.raises(FactoryError, match=f"^ns/ingestion-connector-mysql:1 has no lock at {sbom.LOCK_PATH}"):
        sbom.export(engine, "ns/ingestion-connector-mysql:1", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


# --- what the base leaves out on purpose, and no pip -------------------------------------------------

LOCK_WITH_TOOLS = LOCK + "pip==26.3 \\\n    --hash=sha256:cc\nsetuptools==80.10.2 \\\n    --hash=sha256:dd\n"


def test_a_locked_package_the_image_lists_as_removed_may_be_absent_but_not_present():
    locked = sbom.lock_packages(LOCK_WITH_TOOLS)
    removed = sbom.removed_packages("pip\nSetuptools\n")
    assert sbom.mismatch({"pyyaml": "6.0.2", "six": "1.17.0"}, locked, removed) == []
    assert sbom.mismatch({"pyyaml": "6.0.2", "six": "1.17.0", "setuptools": "80.10.2"}, locked, removed) == [
        "setuptools 80.10.2 is installed but the image lists it as removed"]
    assert sbom.mismatch({"pyyaml": "6.0.2", "six": "1.17.0"}, locked) == [
        "pip 26.3 is locked but not installed", "setuptools 80.10.2 is locked but not installed"]


def test_an_image_with_the_tools_left_out_passes(tmp_path):
    engine = engine_with({sbom.SBOM_PATH: SBOM, sbom.LOCK_PATH: LOCK_WITH_TOOLS.encode(),
                         sbom.REMOVED_PATH: b"pip\nsetuptools\n"})
    assert sbom.verify_image(engine, "sha256:" + "a" * 64, "datahub", None).python == {"six": "1.17.0",
                                                                                        "pyyaml": "6.0.2"}


def test_an_image_with_pip_fails_even_when_its_lock_has_pip(tmp_path):
    with_pip = json.dumps({"components": [component("six", "1.17.0", "pip"), component("PyYAML", "6.0.2", "pip"),
                                          component("pip", "26.3", "pip"),
                                          component("setuptools", "80.10.2", "pip")]}).encode()
    engine = engine_with({sbom.SBOM_PATH: with_pip, sbom.LOCK_PATH: LOCK_WITH_TOOLS.encode()})
    with pytest.raises(StepFailed, match="^pip 26.3 is installed: no image may contain pip$"):
        sbom.verify_image(engine, "sha256:" + "a" * 64, "datahub", None)
    debian_pip = json.dumps({"components": [component("six", "1.17.0", "pip"), component("PyYAML", "6.0.2", "pip"),
                                            component("python3-pip", "23.0.1+dfsg-1", "dpkg")]}).encode()
    engine = engine_with({sbom.SBOM_PATH: debian_pip, sbom.LOCK_PATH: LOCK.encode()})
    with pytest.raises(StepFailed, match="^Debian's python3-pip 23.0.1"):
        sbom.verify_image(engine, "sha256:" + "a" * 64, "mysql", None)
    pip_wheel = json.dumps({"components": [component("six", "1.17.0", "pip"), component("PyYAML", "6.0.2", "pip"),
                                           component("python3-pip-whl", "23.0.1+dfsg-1", "dpkg")]}).encode()
    engine = engine_with({sbom.SBOM_PATH: pip_wheel, sbom.LOCK_PATH: LOCK.encode()})
    with pytest.raises(StepFailed, match="^Debian's python3-pip-whl 23.0.1"):
        sbom.verify_image(engine, "sha256:" + "a" * 64, "mysql", None)


# --- an SBOM nested too deep, too large or no document: the image's check fails, in one line ---------------


@pytest.mark.parametrize("raw, says", [
    (b"[" * (1024 * 1024), "is nested deeper than 100 levels"),
    (b" " * (2 * 1024 * 1024 + 1), "is larger than 2 MiB, the most that is read of it"),
    (b"[1, 2]", "is a JSON list, not a CycloneDX document"),
], ids=["1 MiB nested", "oversize", "a list"])
def test_an_sbom_nested_too_deep_or_too_large_fails_the_check_and_inv_sbom(tmp_path, monkeypatch, raw, says):
    assert sbom.MAX_SBOM_BYTES == 32 * 1024 * 1024
    monkeypatch.setattr(sbom, "MAX_SBOM_BYTES", 2 * 1024 * 1024)  # as 32 MiB would be, with less memory
    engine = engine_with({sbom.SBOM_PATH: raw, sbom.LOCK_PATH: LOCK.encode()})
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        sbom.verify_image(engine, "sha256:" + "a" * 64, "mysql", tmp_path)
    assert time.monotonic() - started < 2
    assert failed.value.diagnosis.cause is Cause.SBOM_MISMATCH
    assert failed.value.message == f"the SBOM of sha256:aaaaaaaaaaaa {says}"
    with pytest.raises(sbom.SbomUnreadable, match=says) as refused:
        sbom.export(engine, "ns/ingestion-connector-mysql:1", tmp_path / "out.json")
    assert refused.value.exit_code == 1 and not (tmp_path / "out.json").exists()
