"""Inventory of an ingestion framework as installed in a base image (runs INSIDE the image).

`inv catalog` pipes this file to `python -` in the base image (no network) and reads one JSON
document from stdout. Standard library only: it must not import the build tool, and it
imports no connector code (a source whose driver is missing must still be listed).

Usage: python - <package> modules <sources package>        (OpenMetadata: one package per source)
       python - <package> entry-points <entry-point group>  (DataHub: a plugin registry)
"""

import ast
import importlib.metadata as md
import importlib.util
import json
import re
import sys
from pathlib import Path

EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def extras_of(package):
    """{extra: [requirement without its extra marker]} from the package's own metadata."""
    meta = md.metadata(package)
    extras = {normalize(extra): [] for extra in meta.get_all("Provides-Extra") or []}
    for line in md.requires(package) or []:
        requirement, _, marker = line.partition(";")
        found = EXTRA_MARKER.search(marker)
        if not found:
            continue
        rest = EXTRA_MARKER.sub("", marker).strip()
        rest = re.sub(r"^\s*(and|or)\s+|\s+(and|or)\s*$", "", rest).strip(" ()")
        text = requirement.strip() + (f"; {rest}" if rest and rest not in ("and", "or") else "")
        extras.setdefault(normalize(found.group(1)), []).append(text)
    return extras


def installed_distributions():
    return sorted({normalize(dist.metadata["Name"]) for dist in md.distributions() if dist.metadata["Name"]})


def module_imports(directory):
    """Top-level imports of a source package's files: (third-party module-level, internal sources, all)."""
    module_level, anywhere, internal = set(), set(), set()
    for path in sorted(directory.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        top_nodes = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                match = re.match(r"metadata\.ingestion\.source\.(\w+)\.(\w+)", name)
                if match:
                    internal.add(f"{match.group(1)}/{match.group(2)}")
                    continue
                anywhere.add(name)
                if id(node) in top_nodes:
                    module_level.add(name)
    return module_level, internal, anywhere


def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(names):
    """Modules (full dotted names, then their top level) the base cannot import: the driver's."""
    missing = set()
    for name in names:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "metadata":
            continue
        if not importable(top):
            missing.add(name)
    return sorted(missing)


def openmetadata_sources(sources_package):
    top, _, rest = sources_package.partition(".")
    # find_spec of the top level only: importing the package would run the framework's __init__.
    root = Path(importlib.util.find_spec(top).submodule_search_locations[0], *rest.split("."))
    sources = []
    for spec_file in sorted(root.glob("*/*/service_spec.py")):
        directory = spec_file.parent
        kind, name = directory.parent.name, directory.name
        module_level, internal, anywhere = module_imports(directory)
        internal.discard(f"{kind}/{name}")
        plugin = f"{sources_package}.{kind}.{name}"
        sources.append({
            "kind": kind,
            "name": name,
            "plugin_module": f"{plugin}.metadata" if (directory / "metadata.py").is_file() else f"{plugin}.service_spec",
            "service_spec": f"{plugin}.service_spec",
            "uses_sources": sorted(internal),
            "driver_modules": missing_modules(module_level),
            "optional_modules": missing_modules(anywhere - module_level),
        })
    return sources


def datahub_sources(group):
    sources = []
    for entry_point in sorted(md.entry_points(group=group), key=lambda ep: ep.name):
        sources.append({"kind": "source", "name": entry_point.name, "plugin_module": entry_point.module,
                        "class": entry_point.attr, "uses_sources": [], "driver_modules": [],
                        "optional_modules": []})
    return sources


def main(argv):
    package, layout, where = argv[1:4]
    sources = datahub_sources(where) if layout == "entry-points" else openmetadata_sources(where)
    json.dump({
        "package": package,
        "version": md.version(package),
        "python": "{}.{}".format(*sys.version_info[:2]),
        "extras": extras_of(package),
        "installed": installed_distributions(),
        "sources": sources,
    }, sys.stdout, indent=1, sort_keys=True)
    print()  # the engine's log stream drops a last line without its newline
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
