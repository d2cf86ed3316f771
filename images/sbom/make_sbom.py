"""Write the image's CycloneDX SBOM: its Python packages (cyclonedx-py) and its Debian packages (dpkg).

Runs in the build's `sbom` stage with the generator's own virtualenv mounted, never in the image.
The output is reproducible: no timestamp, and a serial number derived from the content.

    make_sbom.py --python /opt/venv/bin/python --name IMAGE --version TAG --output FILE
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Mapping
from urllib.parse import quote

# jsonschema checks the schema's "iri-reference" URLs with rfc3987-syntax, an Earley parser: 2.4 s to
# import and about 0.2 s per URL, 30 s of a 40 s SBOM step. Hidden from jsonschema (it then registers no
# IRI check), and the check below takes its place: RFC 3987 section 3.1 maps an IRI to a URI by
# percent-encoding its non-ASCII characters, and rfc3986-validator's grammar (a regular expression)
# checks that URI.
sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]

from cyclonedx.schema import SchemaVersion  # noqa: E402
from cyclonedx.validation.json import JsonStrictValidator  # noqa: E402
from jsonschema import Draft7Validator, _keywords  # noqa: E402
from packageurl import PackageURL  # noqa: E402
from rfc3986_validator import validate_rfc3986  # noqa: E402

SPEC_VERSION = "1.6"
# Marks where a component came from, so readers (and `inv sbom`) can tell the two apart.
ORIGIN = "io.ingestion-factory:package-manager"


@Draft7Validator.FORMAT_CHECKER.checks("iri-reference", raises=ValueError)
def is_iri_reference(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    as_uri = "".join(char if char.isascii() else quote(char) for char in instance)
    return bool(validate_rfc3986(as_uri, rule="URI_reference"))


def _comparable(value: object) -> object:
    """A hashable stand-in that is equal exactly when jsonschema's `equal` says the values are (True is
    not 1, 1 is 1.0, key order does not count)."""
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, Mapping):
        return ("m", frozenset((key, _comparable(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("l", tuple(_comparable(item) for item in value))
    return ("v", value)  # numbers and null


def unique(container: list) -> bool:
    """uniqueItems in one pass: jsonschema compares objects pair by pair (about 0.7 million comparisons,
    1.6 s, for an image's components and dependencies)."""
    seen = set()
    for item in container:
        key = _comparable(item)
        if key in seen:
            return False
        seen.add(key)
    return True


_keywords.uniq = unique  # read by the uniqueItems keyword at each call; the generator's lock pins jsonschema


def python_bom(python: str) -> dict:
    completed = subprocess.run(
        # --no-validate: main() validates the finished document once (this one would be the same check again).
        [sys.executable, "-m", "cyclonedx_py", "environment", "--no-validate", "--output-reproducible", "--sv", SPEC_VERSION,
         "--of", "JSON", "-o", "-", "--mc-type", "application", python],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"cyclonedx-py failed: {completed.stderr.strip()}")
    bom = json.loads(completed.stdout)
    for component in bom.get("components", []):
        component.setdefault("properties", []).append({"name": ORIGIN, "value": "pip"})
    return bom


def debian_components(admindir: str = "") -> list[dict]:
    # --dpkg-admindir: another root's database (a cross-built image, described on the build platform).
    listing = subprocess.run(
        ["dpkg-query", *([f"--admindir={admindir}"] if admindir else []), "--show", "--showformat", "${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n"],
        capture_output=True, text=True, check=True,
    ).stdout
    components = []
    for line in sorted(listing.splitlines()):
        name, version, architecture, status = line.split("\t")
        if status != "installed":
            continue
        purl = PackageURL(type="deb", namespace="debian", name=name, version=version,
                          qualifiers={"arch": architecture, "distro": "debian-12"}).to_string()
        components.append({
            "bom-ref": purl, "type": "library", "name": name, "version": version, "purl": purl,
            "properties": [{"name": ORIGIN, "value": "dpkg"}],
        })
    return components


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--dpkg-admindir", default="")
    # What the factory resolved differently from a plain `pip install` of the framework (the framework
    # version's constraints and uv overrides), as base64 of a JSON object; recorded as metadata properties.
    parser.add_argument("--resolution", default="")
    args = parser.parse_args()

    bom = python_bom(args.python)
    bom["components"] = sorted(bom.get("components", []) + debian_components(args.dpkg_admindir),
                               key=lambda c: c["bom-ref"])
    bom["metadata"] = {
        "component": {"bom-ref": f"image:{args.name}", "type": "container", "name": args.name,
                      "version": args.version},
        "tools": bom.get("metadata", {}).get("tools", {}),
    }
    if args.resolution:
        resolution = json.loads(base64.b64decode(args.resolution))
        bom["metadata"]["properties"] = [
            {"name": f"ingestion-factory:{key}", "value": line}
            for key in sorted(resolution) for line in resolution[key]]
    content = json.dumps(bom["components"], sort_keys=True).encode()
    bom["serialNumber"] = uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(content).hexdigest()).urn
    text = json.dumps(bom, indent=1, sort_keys=True) + "\n"
    errors = JsonStrictValidator(SchemaVersion.from_version(SPEC_VERSION)).validate_str(text)
    if errors:
        sys.exit(f"the SBOM does not validate as CycloneDX {SPEC_VERSION}: {errors}")
    with open(args.output, "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
