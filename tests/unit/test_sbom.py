"""The SBOM check: an image's Python components must be exactly its lock's packages."""

from __future__ import annotations

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
