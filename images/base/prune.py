"""Leave out of a virtualenv what no connector uses at run time (stdlib only; run with the venv's Python).

    prune.py venv VENV --removed FILE [--strip-with ROOT]
                                         packaging tools and test suites out of VENV; FILE lists the
                                         distributions removed (their files and metadata both go); with
                                         ROOT (a root file system holding binutils, a build stage's), the
                                         extension modules lose their debug sections too
    prune.py lock LOCK --removed FILE    LOCK without FILE's distributions, on stdout, for `uv pip sync`
    prune.py compile VENV --installed-since FILE
                                         bytecode for the modules of distributions installed after FILE was
                                         written, as uv's --compile-bytecode writes it (which reads the
                                         whole virtualenv: seconds for a base's 30,000 files)
    prune.py needs-setuptools VENV [--installed-since FILE]
                                         exit 0 when an installed module imports pkg_resources or setuptools
                                         at module level (then setuptools has to stay); with FILE, only the
                                         modules of distributions installed after FILE was written (a
                                         connector's own layer: its parent was checked when it was built)

Packaging tools: pip and wheel always (no image installs packages at run time); setuptools unless a module
imports it or pkg_resources at module level (guarded imports inside functions or try blocks fall back).
Build tools inside runtime packages (BUILD_ONLY: numpy.f2py, numpy.distutils, ...) unless imported at module level.
Test suites: directories named tests/test that no other module imports (OpenMetadata's generated models
have a `tests` package that is code, not a test suite: it is imported, so it stays).
"""

from __future__ import annotations

import argparse
import compileall
import csv
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

TOOLS = ("pip", "wheel", "setuptools")
# The tools' own modules, and setuptools plug-ins that only a build imports.
TOOL_MODULES = {"pip", "wheel", "setuptools", "pkg_resources", "_distutils_hack"}
TEST_DIRS = {"tests", "test"}
# Build tools and test helpers shipped inside runtime distributions (numpy's Fortran wrapper generator and
# its distutils fork, OpenMetadata's pytest helpers): they go unless a module imports them at module level.
BUILD_ONLY = ("numpy/distutils", "numpy/f2py", "_openmetadata_testutils")
BUILD_ONLY_SCRIPTS = ("f2py",)
TOP_LEVEL_TOOL_IMPORT = re.compile(r"^(?:import|from)\s+(pkg_resources|setuptools)\b", re.M)
IMPORT = re.compile(r"^\s*(?:from\s+(\.*[\w.]*)\s+import\s+([\w\s,()*]+)|import\s+([\w.]+))", re.M)


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        sys.exit(f"prune.py: no site-packages under {venv}")
    return found[0]


def distributions(site: Path) -> dict[str, Path]:
    """Normalized distribution name -> its .dist-info directory."""
    return {re.sub(r"[-_.]+", "-", info.name[:-len(".dist-info")].rsplit("-", 1)[0]).lower(): info
            for info in site.glob("*.dist-info")}


def python_files(site: Path, skip=lambda rel: False):
    for directory, dirs, files in os.walk(site):
        rel = Path(directory).relative_to(site)
        dirs[:] = [d for d in dirs if not skip(rel / d) and not d.endswith((".dist-info", "__pycache__"))]
        for name in files:
            if name.endswith(".py"):
                yield rel / name


def is_build_plugin(rel: Path) -> bool:
    """setup.py files, distutils command packages and modules named for setuptools only run in a build."""
    return (rel.name == "setup.py" or "distutils" in rel.parts[:-1] or "setuptools" in rel.stem
            or rel.parts[0] in TOOL_MODULES)


def installed_since(site: Path, since_ns: int, *, tests: bool = False):
    """The Python files (outside test suites, unless tests) of the distributions installed since then, as
    their RECORDs list them: a sync writes a new .dist-info directory for each distribution it installs."""
    for info in site.glob("*.dist-info"):
        record = info / "RECORD"
        if info.stat().st_ctime_ns < since_ns or not record.is_file():
            continue
        for row in csv.reader(record.read_text().splitlines()):
            rel = Path(row[0]) if row else Path()
            if (rel.suffix == ".py" and not rel.is_absolute() and ".." not in rel.parts
                    and (tests or not TEST_DIRS.intersection(rel.parts[:-1]))):
                yield rel


def compile_installed(site: Path, since_ns: int) -> None:
    """What uv's bytecode step does (its compileall call: default invalidation mode, existing bytecode kept,
    errors ignored like pip's: some wheels vendor Python 2 files), for the new distributions only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rel in sorted(set(installed_since(site, since_ns, tests=True))):
            compileall.compile_file(str(site / rel), force=False, quiet=2)


def needs_setuptools(site: Path, installed_since_ns: int | None = None) -> list[str]:
    """Modules importing pkg_resources/setuptools at module level (unguarded): they fail without setuptools.
    With installed_since_ns, only those of the distributions installed since then."""
    users = []
    files = (python_files(site, skip=lambda rel: rel.name in TEST_DIRS) if installed_since_ns is None
             else installed_since(site, installed_since_ns))
    for rel in files:
        if is_build_plugin(rel):
            continue
        text = (site / rel).read_text(errors="replace")
        if ("pkg_resources" in text or "setuptools" in text) and TOP_LEVEL_TOOL_IMPORT.search(text):
            users.append(str(rel))
    return users


def uninstall(site: Path, info: Path) -> int:
    """Remove a distribution's files as its RECORD lists them, then its metadata; returns bytes freed."""
    freed = 0
    record = info / "RECORD"
    rows = list(csv.reader(record.read_text().splitlines())) if record.is_file() else []
    for row in rows:
        path = (site / row[0]).resolve() if row else None
        if path and path.is_file() and site.parent.parent.parent in path.parents:
            freed += path.stat().st_size
            path.unlink()
            cache = path.parent / "__pycache__"
            for compiled in cache.glob(f"{path.stem}.*.pyc") if path.suffix == ".py" else ():
                freed += compiled.stat().st_size
                compiled.unlink()
    for directory in sorted({(site / row[0]).parent for row in rows if row}, key=lambda p: -len(p.parts)):
        pycache = directory / "__pycache__"
        for empty in (pycache, directory):
            if empty.is_dir() and site in empty.parents and not any(empty.iterdir()):
                empty.rmdir()
    shutil.rmtree(info, ignore_errors=True)
    return freed


def module_of(site: Path, rel: Path) -> str:
    parts = list(rel.with_suffix("").parts) if rel.suffix else list(rel.parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(site: Path, skip) -> set[str]:
    """Every module named by an import statement of a file outside the skipped directories, relative
    imports resolved; `from pkg import name` counts as pkg and pkg.name."""
    seen = set()
    for rel in python_files(site, skip):
        text = (site / rel).read_text(errors="replace")
        if "test" not in text:
            continue
        package = module_of(site, rel.parent)
        for source, names, plain in IMPORT.findall(text):
            if plain:
                seen.add(plain)
                continue
            dots = len(source) - len(source.lstrip("."))
            if dots:
                base = package.split(".") if package else []
                base = base[:len(base) - (dots - 1)] if dots > 1 else base
                source = ".".join([*base, source.lstrip(".")]).strip(".")
            seen.add(source)
            for name in re.split(r"[\s,()]+", names):
                if name and name != "*":
                    seen.add(f"{source}.{name}")
    return seen


def prune_tests(site: Path) -> int:
    candidates = [Path(d).relative_to(site) / name for d, dirs, _ in os.walk(site) for name in dirs
                  if name in TEST_DIRS]
    candidates = [c for c in candidates if not any(p in TEST_DIRS for p in c.parts[:-1])]
    if not candidates:
        return 0
    skip_set = set(candidates)
    used = imported_modules(site, skip=lambda rel: rel in skip_set)
    freed = 0
    for candidate in candidates:
        module = module_of(site, candidate)
        if any(name == module or name.startswith(module + ".") for name in used):
            print(f"prune.py: keeping {candidate}: it is imported")
            continue
        path = site / candidate
        freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(path)
    return freed


def prune_build_only(venv: Path, site: Path) -> int:
    present = [Path(relative) for relative in BUILD_ONLY if (site / relative).is_dir()]
    if not present:
        return 0
    inside = set(present)
    importers: dict[Path, list[str]] = {candidate: [] for candidate in present}
    for rel in python_files(site, skip=lambda rel: rel in inside or rel.name in TEST_DIRS):
        text = (site / rel).read_text(errors="replace")
        for candidate in present:
            module = module_of(site, candidate)
            if module in text and re.search(rf"^(?:from|import)\s+{re.escape(module)}\b", text, re.M):
                importers[candidate].append(str(rel))
    freed = 0
    for candidate in present:
        if importers[candidate]:
            print(f"prune.py: keeping {candidate}: imported at module level by {', '.join(importers[candidate][:3])}")
            continue
        path = site / candidate
        freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(path)
    if not (site / "numpy/f2py").exists():
        for script in BUILD_ONLY_SCRIPTS:
            (venv / "bin" / script).unlink(missing_ok=True)
    return freed


def prune_venv(venv: Path, removed_file: Path) -> None:
    site = site_packages(venv)
    dists = distributions(site)
    removed, freed = [], 0
    users = needs_setuptools(site)
    for tool in TOOLS:
        if tool not in dists:
            continue
        if tool == "setuptools" and users:
            print(f"prune.py: keeping setuptools: imported at module level by {', '.join(users[:3])}")
            continue
        freed += uninstall(site, dists[tool])
        removed.append(tool)
    if "setuptools" in removed:
        for leftover in ("distutils-precedence.pth",):
            (site / leftover).unlink(missing_ok=True)
        shutil.rmtree(site / "_distutils_hack", ignore_errors=True)
        shutil.rmtree(site / "pkg_resources", ignore_errors=True)
    for script in ("pip", "pip3", f"pip3.{sys.version_info[1]}", "wheel"):
        (venv / "bin" / script).unlink(missing_ok=True)
    tests = prune_tests(site)
    build_only = prune_build_only(venv, site)
    static = 0
    for archive in site.rglob("*.a"):
        static += archive.stat().st_size
        archive.unlink()
    removed_file.parent.mkdir(parents=True, exist_ok=True)
    removed_file.write_text("".join(f"{name}\n" for name in removed))
    print(f"prune.py: removed {', '.join(removed) or 'no packaging tool'} ({freed / 1e6:.1f} MB), "
          f"test suites {tests / 1e6:.1f} MB, build tools {build_only / 1e6:.1f} MB, "
          f"static libraries {static / 1e6:.1f} MB")


def strip_debug(venv: Path, binutils: Path, batch: int = 200) -> None:
    """`strip --strip-debug` on the extension modules, with the strip of another root file system (its own
    libraries by LD_LIBRARY_PATH: the same glibc). Vendored libraries (*.libs/, patched by auditwheel) are left
    as they are; a file strip cannot read (another architecture's, when cross-built) is named and left too; a
    strip that cannot run at all raises."""
    strip = binutils / "usr" / "bin" / "strip"
    env = {**os.environ, "LD_LIBRARY_PATH": str(binutils / "usr" / "lib" / f"{platform.machine()}-linux-gnu")}
    subprocess.run([str(strip), "--version"], env=env, check=True, stdout=subprocess.DEVNULL)
    modules = sorted(str(path) for path in venv.rglob("*.so") if path.is_file() and not path.is_symlink()
                     and not any(part.endswith(".libs") for part in path.relative_to(venv).parts[:-1]))
    left = []
    for start in range(0, len(modules), batch):
        chunk = modules[start:start + batch]
        if subprocess.run([str(strip), "--strip-debug", *chunk], env=env, capture_output=True).returncode:
            # strip goes on past a file it cannot read: find which ones, one at a time
            left += [module for module in chunk if subprocess.run(
                [str(strip), "--strip-debug", module], env=env, capture_output=True).returncode]
    for module in left:
        print(f"not stripped: {module}")
    print(f"prune.py: stripped debug sections of {len(modules) - len(left)} extension modules")


def filter_lock(lock: Path, removed_file: Path) -> str:
    """The lock's text without the blocks (requirement line and its --hash lines) of removed packages."""
    removed = set(removed_file.read_text().split()) if removed_file.is_file() else set()
    out, skipping = [], False
    for line in lock.read_text().splitlines(keepends=True):
        if line.strip() and not line[0].isspace() and not line.startswith("#"):
            name = re.split(r"[=<>!~ \[;@]", line, maxsplit=1)[0]
            skipping = re.sub(r"[-_.]+", "-", name).lower() in removed
        if not skipping:
            out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    venv = sub.add_parser("venv")
    venv.add_argument("venv", type=Path)
    venv.add_argument("--removed", type=Path, required=True)
    venv.add_argument("--strip-with", type=Path)
    lock = sub.add_parser("lock")
    lock.add_argument("lock", type=Path)
    lock.add_argument("--removed", type=Path, required=True)
    needs = sub.add_parser("needs-setuptools")
    needs.add_argument("venv", type=Path)
    needs.add_argument("--installed-since", type=Path)
    compile_ = sub.add_parser("compile")
    compile_.add_argument("venv", type=Path)
    compile_.add_argument("--installed-since", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "venv":
        prune_venv(args.venv, args.removed)
        if args.strip_with:
            strip_debug(args.venv, args.strip_with)
    elif args.command == "lock":
        sys.stdout.write(filter_lock(args.lock, args.removed))
    elif args.command == "compile":
        compile_installed(site_packages(args.venv), args.installed_since.stat().st_ctime_ns)
    else:
        since = args.installed_since.stat().st_ctime_ns if args.installed_since else None
        users = needs_setuptools(site_packages(args.venv), since)
        for user in users:
            print(user)
        return 0 if users else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
