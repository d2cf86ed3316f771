"""Where an image's bytes go: run inside the image (`python - < footprint.py`), prints JSON.

Stdlib only (it runs with the image's own interpreter). Sizes are apparent sizes of regular files,
each inode counted once. Reported: the top-level directories of the root filesystem and of /usr,
/usr/lib and /usr/share; the virtualenv's top-level directories and its largest site-packages
entries grouped by distribution; and how many bytes each kind of prunable content takes (bytecode,
test suites, static libraries, debug sections of shared objects, ...), so a removal is measured
before it is made.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections import defaultdict
from pathlib import Path

VENV = Path(os.environ.get("VIRTUAL_ENV") or "/opt/venv")
TOP_PACKAGES = 25
TEST_DIRS = {"tests", "test", "testing"}
DOC_DIRS = {"doc", "docs", "examples"}
SOURCE_SUFFIXES = {".c", ".h", ".cpp", ".hpp", ".pyx", ".pxd", ".pyi"}


def debug_bytes(path: str) -> int:
    """Bytes in an ELF file's .debug_* sections and symbol table (what `strip --strip-debug`/`--strip-unneeded`
    could drop); 0 for anything that is not a readable 64-bit little-endian ELF."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return 0
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            if not shoff or not shnum:
                return 0
            handle.seek(shoff)
            table = handle.read(shentsize * shnum)
            sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
            _, _, _, _, str_off, str_size = sections[shstrndx]
            handle.seek(str_off)
            names = handle.read(str_size)
    except (OSError, struct.error, IndexError):
        return 0
    total = 0
    for name_off, kind, _, _, _, size in sections:
        name = names[name_off:names.index(b"\0", name_off)]
        if kind != 8 and (name.startswith(b".debug") or name in (b".symtab", b".strtab")):  # 8: NOBITS
            total += size
    return total


def walk(root: Path, seen: set):
    for directory, dirs, files in os.walk(root):
        if directory == "/proc" or directory.startswith(("/proc/", "/sys")):
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(directory, name)
            try:
                stat = os.lstat(path)
            except OSError:
                continue
            if not os.path.isfile(path) or os.path.islink(path) or (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            yield path, stat.st_size


def kinds(path: str, size: int) -> list[str]:
    parts = path.split(os.sep)
    found = []
    if path.endswith(".pyc"):
        found.append("bytecode (.pyc)")
    if TEST_DIRS & set(parts[:-1]):
        found.append("test directories")
    if DOC_DIRS & set(parts[:-1]) or "/usr/share/doc/" in path or "/usr/share/man/" in path:
        found.append("documentation")
    if path.endswith(".a"):
        found.append("static libraries (.a)")
    if os.path.splitext(path)[1] in SOURCE_SUFFIXES:
        found.append("C sources, headers, stubs")
    if ".so" in os.path.basename(path):
        found.append("shared objects (.so)")
    if "/usr/share/locale/" in path:
        found.append("locales")
    return found


def distribution_of(site: Path) -> dict[str, str]:
    """Top-level site-packages entry -> distribution name, from every dist-info's RECORD."""
    owner = {}
    for info in site.glob("*.dist-info"):
        name = info.name[:-len(".dist-info")].rsplit("-", 1)[0]
        owner[info.name] = name
        record = info / "RECORD"
        if record.is_file():
            for line in record.read_text(errors="replace").splitlines():
                top = line.split(",", 1)[0].split("/", 1)[0]
                if top and not top.startswith(".."):
                    owner.setdefault(top, name)
    return owner


def main() -> None:
    seen: set = set()
    by_path: dict[str, int] = {}
    kind_bytes: dict[str, int] = defaultdict(int)
    debug_total = 0
    for path, size in walk(Path("/"), seen):
        by_path[path] = size
        for kind in kinds(path, size):
            kind_bytes[kind] += size
        if ".so" in os.path.basename(path) and path.startswith(str(VENV)):
            debug_total += debug_bytes(path)
    kind_bytes["debug sections of venv .so files"] = debug_total

    def sizes_under(prefix: str, depth: int) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        base = prefix.rstrip("/") + "/"
        for path, size in by_path.items():
            if path.startswith(base):
                rest = path[len(base):].split("/")
                key = base + "/".join(rest[:depth]) if len(rest) > depth else base + "(files)"
                out[key] += size
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    site = next(VENV.glob("lib/python3*/site-packages"), None)
    packages: dict[str, int] = defaultdict(int)
    if site is not None:
        owner = distribution_of(site)
        for entry, size in sizes_under(str(site), 1).items():
            top = entry.rsplit("/", 1)[1]
            packages[owner.get(top, top)] += size
    report = {
        "python": sys.version.split()[0],
        "total": sum(by_path.values()),
        "root": sizes_under("/", 1),
        "usr": sizes_under("/usr", 1),
        "usr_lib": sizes_under("/usr/lib", 1),
        "usr_share": sizes_under("/usr/share", 1),
        "venv": sizes_under(str(VENV), 1),
        "venv_lib": sizes_under(str(site), 0) if site else {},
        "packages": dict(sorted(packages.items(), key=lambda item: -item[1])[:TOP_PACKAGES]),
        "largest_files": dict(sorted(by_path.items(), key=lambda item: -item[1])[:TOP_PACKAGES]),
        "kinds": dict(sorted(kind_bytes.items(), key=lambda item: -item[1])),
        "venv_kinds": {},
    }
    venv_kinds: dict[str, int] = defaultdict(int)
    for path, size in by_path.items():
        if path.startswith(str(VENV) + "/"):
            for kind in kinds(path, size):
                venv_kinds[kind] += size
    venv_kinds["debug sections of .so files"] = debug_total
    report["venv_kinds"] = dict(sorted(venv_kinds.items(), key=lambda item: -item[1]))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
