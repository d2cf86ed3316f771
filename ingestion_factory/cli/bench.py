"""Benchmark: build speed, image size, start-up and push cost, measured side by side.

Every figure that has a target is a ratio or a difference of two measurements
taken in the same run, because the machines are shared and noisy. The result
is printed as a table and written as JSON. A measurement that changes an input
changes it in a scratch copy of the project, so a bench killed half-way leaves
the working tree as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..engine import buildkit, verify
from ..engine.daemon import client, remove_tags_under
from ..engine.docker_engine import DockerEngine
from ..engine.streams import stream_error
from ..errors import FactoryError
from ..model import catalog as catalog_mod
from ..model.plan import image_ref
from ..platforms import ARM64, require_emulation
from ..progress import Quiet
from ..settings import Settings
from ..workflows import lock as lock_mod
from ..workflows import push as push_mod
from . import commands

DEFAULT_CONNECTORS = ("mysql", "postgres", "mssql", "snowflake", "kafka", "tableau")
STEP_TABLE_CONNECTOR = "tableau"  # small (2.7 MB over its base): its build time is the factory's own overhead
BENCH_NAMESPACE = "ingestion-bench"
SEED_REPOSITORY = "ingestion-bench-seed"
CATALOG_COLD_TARGET_MIN = 12  # issue 19: the whole catalog, cold, on 2 cores
CACHE_NAMESPACE = "ingestion-bench-cache"  # its own: `--cache` empties it twice
CACHE_CONNECTORS = ("datahub-sqlite",)


@dataclass
class Figure:
    name: str
    value: str
    reference: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Bench:
    settings: Settings
    connectors: list[str]
    console: Console
    figures: list[Figure] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        mark = {True: "met", False: "NOT MET", None: ""}[figure.met]
        self.console.print(f"  {figure.name}: {figure.value}  {figure.reference}  {mark}")


def run(settings: Settings, connectors: list[str] | None, *, cold: bool, push: bool, output: Path,
        console: Console, catalog: bool = False, cache: bool = False, arm64: bool = False,
        scratch: bool = True, sizes: bool = False, baseline: str = "") -> Path:
    """Run every measurement (or, with catalog, the whole-catalog ones); returns the path of the JSON report."""
    api = client()
    if sizes:  # the bases you have (and a baseline namespace's): where the bytes go, start-up; no builds
        bench = Bench(settings, [], console)
        measure_footprint(bench, api, baseline)
        return write(bench, output)
    if cache:
        cache_settings = settings.with_overrides(namespace=CACHE_NAMESPACE, registry="", cache_from="")
        if catalog:  # the whole catalog: every available connector
            connectors = [spec.name for spec in catalog_mod.discover(cache_settings).available_connectors]
        bench = Bench(cache_settings, list(connectors or CACHE_CONNECTORS), console)
        catalog_mod.discover(cache_settings).resolve(bench.connectors)
        measure_cache(bench, api, cold=cold, scratch=scratch)
        return write(bench, output)
    bench_settings = settings.with_overrides(namespace=BENCH_NAMESPACE, registry="")
    if arm64:
        bench = Bench(bench_settings, list(connectors or ARM64_CONNECTORS), console)
        bench.settings = bench_settings.with_overrides(cache_from="")  # both sides build: no registry cache
        measure_arm64(bench, api)
        return write(bench, output)
    if catalog:
        # Cold, in the bench's own namespace (it empties it); warm, on the images you have.
        bench = Bench(bench_settings if cold else settings, [], console)
        measure_catalog(bench, api, cold=cold)
        return write(bench, output)
    bench = Bench(bench_settings, list(connectors or DEFAULT_CONNECTORS), console)
    found = catalog_mod.discover(bench_settings)
    found.resolve(bench.connectors)
    console.print(f"Benchmark on {', '.join(bench.connectors)} (namespace {BENCH_NAMESPACE})")
    try:
        if cold:
            measure_cold_builds(bench, api)
        else:
            commands.build(bench_settings, bench.connectors)
        measure_noop(bench, found)
        measure_one_fragment_changed(bench, found, api)
        measure_lock_install(bench, found)
        measure_sizes(bench, found, api)
        measure_footprint(bench, api)
        measure_startup(bench, found, api)
        if push:
            measure_push(bench, found, api)
    finally:
        remove_tags_under(api, SEED_REPOSITORY)
    return write(bench, output)


# ---------------------------------------------------------------- arm64: cross vs emulated
ARM64_CONNECTORS = ("datahub-sqlite",)
ARM64_MODES = ("cross", "emulated")


def measure_arm64(bench: Bench, api) -> None:
    """The arm64 build of a base and a connector, installed both ways, each in a namespace of its own.

    `--no-cache` makes both sides install (BuildKit's layer cache would otherwise make the second
    side free); uv's download cache is kept for both, so neither side measures the network. Each
    image is smoke-tested under QEMU before it is tagged, so a figure is only ever for a working image.
    """
    require_emulation([ARM64])
    found = catalog_mod.discover(bench.settings)
    found.resolve(bench.connectors)
    bench.console.print(f"[bold]arm64 builds[/] of {', '.join(bench.connectors)} and their base: "
                        f"{' vs '.join(ARM64_MODES)} install")
    results: dict[str, dict] = {}
    for mode in ARM64_MODES:
        settings = bench.settings.with_overrides(namespace=f"{BENCH_NAMESPACE}-arm64-{mode}",
                                                 platforms=(ARM64.name,), foreign_install=mode)
        remove_tags_under(api, settings.namespace)
        started = time.monotonic()
        try:
            commands.build(settings, bench.connectors, no_cache=True)
            failed = ""
        except FactoryError as exc:  # a side that cannot build a working image is reported, not fatal
            failed = exc.message
        wall = time.monotonic() - started
        images = _last_report(settings)
        results[mode] = {"seconds": round(wall, 1), "failed": failed,
                         "images": {name: {key: image.get(key) for key in ("result", "duration_s", "smoke_s", "size")}
                                    for name, image in images.items()}}
        remove_tags_under(api, settings.namespace)
    bench.raw["arm64"] = results
    working = [m for m in ARM64_MODES if not results[m]["failed"]]
    for name in sorted({n for r in results.values() for n in r["images"]}):
        times = {m: results[m]["images"].get(name, {}).get("duration_s") for m in ARM64_MODES}
        smoke = {m: results[m]["images"].get(name, {}).get("smoke_s") for m in ARM64_MODES}
        cross, emulated = times["cross"], times["emulated"]
        bench.add(Figure(f"arm64 build of {name}, verified and tagged (cross-install)", f"{cross}s",
                         f"emulated install {emulated}s", "faster than emulated",
                         None if not (cross and emulated) else cross < emulated,
                         f"x{emulated / cross:.1f}; smoke test under QEMU {smoke['cross']}s / {smoke['emulated']}s"
                         if cross and emulated else ""))
    fastest = min(working, key=lambda m: results[m]["seconds"]) if working else None
    bench.raw["arm64_fastest"] = fastest
    bench.add(Figure("arm64 base + connectors, whole run", " / ".join(f"{m} {results[m]['seconds']:.0f}s"
                                                                      for m in ARM64_MODES),
                     note=f"fastest working: {fastest}" if fastest else "neither side built"))


# --------------------------------------------------------------------- 1. cold build
SEED_BASE_DOCKERFILE = """\
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY requirements.txt constraints.txt /tmp/
COPY stubs/ /tmp/stubs/
ARG FRAMEWORK_REQUIREMENT
RUN --mount=type=secret,id=ca \\
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \\
    && python3 -m venv /opt/venv \\
    && /opt/venv/bin/pip install --find-links /tmp/stubs -r /tmp/requirements.txt -c /tmp/constraints.txt \\
        "${FRAMEWORK_REQUIREMENT}"
ENV PATH=/opt/venv/bin:$PATH
"""
SEED_CONNECTOR_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca \\
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \\
    && pip install -r /tmp/requirements.txt
"""


def prune_build_cache() -> None:
    cli = buildkit.find_cli().path
    subprocess.run([cli, "builder", "prune", "--all", "--force"], capture_output=True, check=True)


def measure_cold_builds(bench: Bench, api) -> None:
    settings = bench.settings
    bench.console.print("[bold]1. Cold build[/] (empty build cache for each side)")
    remove_tags_under(api, BENCH_NAMESPACE)
    prune_build_cache()
    started = time.monotonic()
    commands.build(settings, bench.connectors)
    factory_s = time.monotonic() - started
    factory_report = _last_report(settings)

    prune_build_cache()
    seed_s = seed_build(bench, api)
    bench.raw["cold"] = {"factory_s": round(factory_s, 1), "seed_s": round(seed_s, 1)}
    bench.add(Figure("cold build, base + connectors", f"{factory_s:.0f}s", f"seed's way {seed_s:.0f}s",
                     "x3 the seed's way", seed_s >= 3 * factory_s, f"speed-up x{seed_s / factory_s:.2f}"))
    add_step_table(bench, factory_report)
    add_normalization(bench, factory_report)


def add_normalization(bench: Bench, report: dict) -> None:
    """What making the image IDs reproducible costs: the config re-stamp and load, per image built."""
    spent = {name: image["normalize_s"] for name, image in report.items() if image.get("normalize_s")}
    if not spent:
        return
    bench.raw["normalization"] = spent
    worst = max(spent, key=spent.__getitem__)
    bench.add(Figure("re-stamping each image's config (reproducible IDs)",
                     f"{sum(spent.values()) / len(spent):.2f}s per image",
                     f"{len(spent)} images, at most {spent[worst]:.2f}s ({worst})", "< 1 s per image",
                     max(spent.values()) < 1.0))


def add_step_table(bench: Bench, report: dict) -> None:
    """Where a small connector's cold build time goes: each BuildKit step (from its build log), then the
    builder's own steps (from the report)."""
    name = next((n for n in (STEP_TABLE_CONNECTOR, *bench.connectors) if n in report), None)
    if name is None:
        return
    image = report[name]
    log = Path(image.get("log") or bench.settings.output_path / "logs" / f"{name}.log")
    steps = buildkit_steps(buildkit.last_run(log.read_text())) if log.is_file() else []
    rows = [(step, seconds) for step, seconds in steps if seconds is None or seconds >= 0.05]
    rows += [("  of the build: config re-stamped with the epoch, loaded", image.get("normalize_s")),
             ("smoke test (main.py --check)", image.get("smoke_s")), ("SBOM check", image.get("sbom_check_s")),
             ("tagging, size", image.get("tag_s")), ("whole image, verified and tagged", image.get("duration_s"))]
    bench.raw["steps"] = {"connector": name, "steps": [{"step": step, "seconds": s} for step, s in rows]}
    table = Table(title=f"Cold build of {name}, step by step", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, seconds in rows:
        table.add_row(escape(step), "cached" if seconds is None else f"{seconds:.1f}")
    bench.console.print(table)
    sbom = [seconds for step, seconds in steps if step.startswith("[sbom-") and seconds is not None]
    if sbom:
        bench.add(Figure(f"SBOM step of {name} (BuildKit step, cold)", f"{sum(sbom):.1f}s", target="<= 3 s",
                         met=sum(sbom) <= 3.0))


# A step's first line names it (`#12 [sbom-target 1/1] RUN ...`, `#13 exporting to image`); `#12 DONE 2.1s`
# or `#12 CACHED` ends it.
STEP_LINE = re.compile(r"^#(\d+) (.*)$")
STEP_END = re.compile(r"^(?:DONE (\d+(?:\.\d+)?)s|(CACHED))\s*$")
MOUNT_FLAG = re.compile(r"--mount=\S+\s*")


def buildkit_steps(log: str, width: int = 70) -> list[tuple[str, float | None]]:
    """Each step of a `--progress=plain` build log with its seconds (None: cached), in log order."""
    names: dict[str, str] = {}
    seconds: dict[str, float | None] = {}
    for line in log.splitlines():
        if not (match := STEP_LINE.match(line)):
            continue
        step, text = match[1], match[2]
        if end := STEP_END.match(text):
            if step in names:
                seconds[step] = None if end[2] else float(end[1])
        else:
            names.setdefault(step, " ".join(MOUNT_FLAG.sub("", text).split())[:width])
    return [(names[step], seconds[step]) for step in names
            if step in seconds and not names[step].startswith("[internal]")]


# The one sdist of OpenMetadata >= 1.13 that cannot build here (its build downloads from GitHub; the factory drops
# it with a uv override, model/versions.py): pip has no overrides, so the seed's way gets an empty stand-in
# wheel of the version uv resolves, and a constraint that keeps pip on it. Everything else pip installs for real.
STUB_VERSIONS = {"dbt-core-experimental-parser": "2.0.8"}


def seed_stubs(directory: Path, overrides: list[str]) -> list[str]:
    """Empty wheels for the packages the version's overrides drop (marker `sys_platform == 'never'`), in
    `directory`; the pip constraints that pin them."""
    directory.mkdir(parents=True, exist_ok=True)
    pins = []
    for line in overrides:
        name = line.split(";", 1)[0].strip()
        if "never" not in line or name not in STUB_VERSIONS:
            continue
        version, module = STUB_VERSIONS[name], name.replace("-", "_")
        info = f"{module}-{version}.dist-info"
        with zipfile.ZipFile(directory / f"{module}-{version}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\n"
                                            "Tag: py3-none-any\n")
            wheel.writestr(f"{info}/RECORD", "")
        pins.append(f"{name}=={version}")
    return pins


def seed_build(bench: Bench, api) -> float:
    """The seed's way: a pip-built base, then each connector FROM it, one after another."""
    settings = bench.settings
    found = catalog_mod.discover(settings)
    framework = settings.framework_named(settings.framework)
    python_id = api.images.get(settings.python_image).id
    ca = settings.resolved_ca_bundle()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as scratch:
        base_dir = Path(scratch) / "base"
        base_dir.mkdir()
        framework_dir = settings.images_dir / "base" / "frameworks" / framework.name
        shutil.copy(framework_dir / "requirements.txt", base_dir / "requirements.txt")
        resolution = lock_mod.resolution(settings, framework)
        stubs = seed_stubs(base_dir / "stubs", resolution.get("overrides", []))
        (base_dir / "constraints.txt").write_text("".join(f"{line}\n" for line in [
            *resolution.get("constraints", []), *stubs]))
        (base_dir / "Dockerfile").write_text(SEED_BASE_DOCKERFILE)
        base_ref = f"{SEED_REPOSITORY}/base:bench"
        _cli_build(base_dir, base_ref, {"PYTHON_IMAGE": verify.pin(DockerEngine(api), python_id),
                                        "FRAMEWORK_REQUIREMENT": framework.requirement}, ca, bench.console)
        for name in bench.connectors:
            directory = Path(scratch) / name
            directory.mkdir()
            shutil.copy(found[name].fragment, directory / "requirements.txt")
            (directory / "Dockerfile").write_text(SEED_CONNECTOR_DOCKERFILE)
            _cli_build(directory, f"{SEED_REPOSITORY}/{name}:bench", {"BASE": base_ref}, ca, bench.console)
    return time.monotonic() - started


def _cli_build(context: Path, ref: str, args: dict, ca: Path | None, console: Console) -> None:
    cli = buildkit.find_cli()
    command = [*cli.build_command(), "--network=host", "--progress=plain", "-t", ref]
    if ca:
        command += ["--secret", f"id=ca,src={ca}"]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    command.append(str(context))
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, DOCKER_BUILDKIT="1"))
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).splitlines()
        raise FactoryError(f"seed-style build of {ref} failed:\n" + "\n".join(output[-15:]))
    console.print(f"    seed-style {ref}: {time.monotonic() - started:.0f}s")


# ------------------------------------------------------------------- 2. no-op rebuild
def measure_noop(bench: Bench, found) -> None:
    bench.console.print("[bold]2. No-op rebuild[/] of every image (nothing changed)")
    every = [spec.name for spec in found.connectors if spec.name in bench.connectors]
    commands.build(bench.settings, every)  # make sure all exist and are current
    runs = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([str(Path(os.sys.executable).parent / "inv"), "build-connectors", *_each("-c", every)],
                       cwd=bench.settings.root,
                       env=dict(os.environ, INVOKE_FACTORY_NAMESPACE=BENCH_NAMESPACE, INVOKE_FACTORY_REGISTRY=""),
                       capture_output=True, check=True)
        runs.append(time.monotonic() - started)
    seconds = statistics.median(runs)
    bench.raw["noop"] = {"images": len(found.bases) + len(every), "runs_s": [round(r, 3) for r in runs]}
    bench.add(Figure(f"no-op rebuild of {len(found.bases)} bases + {len(every)} connectors",
                     f"{seconds:.2f}s", "whole `inv build-connectors` process, median of 3", "< 1 s", seconds < 1.0))


def _each(flag: str, names: list[str]) -> list[str]:
    return [part for name in names for part in (flag, name)]


def _timed_inv(settings: Settings, *args: str, runs: int = 3) -> float:
    """Median wall time of a whole `inv` process (start-up included), as a user sees it."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([str(Path(os.sys.executable).parent / "inv"), *args], cwd=settings.root,
                       env=dict(os.environ, INVOKE_FACTORY_NAMESPACE=settings.namespace, INVOKE_FACTORY_REGISTRY=""),
                       capture_output=True, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


# ------------------------------------------------------------------- the whole catalog
def measure_catalog(bench: Bench, api, *, cold: bool) -> None:
    """Every available connector: cold build time, disk in total and per connector, no-op and list times."""
    settings = bench.settings
    found = catalog_mod.discover(settings)
    names = [spec.name for spec in found.available_connectors]
    bench.connectors = names
    bench.console.print(f"[bold]Whole catalog[/]: {len(found.bases)} bases + {len(names)} connectors "
                        f"({len(found.connectors) - len(names)} unavailable), namespace {settings.namespace}")
    if cold:
        remove_tags_under(api, BENCH_NAMESPACE)
        api.images.prune(filters={"dangling": True})
        prune_build_cache()
    started = time.monotonic()
    commands.build(settings, names)
    build_s = time.monotonic() - started
    bench.raw["catalog_build"] = {"cold": cold, "seconds": round(build_s, 1), "images": len(names) + len(found.bases)}
    bench.add(Figure("cold build of the whole catalog" if cold else "build of the whole catalog (warm)",
                     f"{build_s / 60:.1f} min", f"{len(found.bases)} bases + {len(names)} connectors, "
                     f"jobs={settings.jobs}", f"<= {CATALOG_COLD_TARGET_MIN} min" if cold else "",
                     build_s <= CATALOG_COLD_TARGET_MIN * 60 if cold else None))

    sizes = {spec.name: api.images.get(image_ref(spec, settings)).attrs["Size"] for spec in found
             if not spec.unavailable}
    added = {name: sizes[name] - sizes[found[name].parent] for name in names}
    unique = sum(sizes[spec.name] for spec in found.bases) + sum(added.values())
    ordered = sorted(added.values())
    bench.raw["catalog_disk"] = {"unique_bytes": unique, "bases": {s.name: sizes[s.name] for s in found.bases},
                                 "added": added}
    bench.add(Figure("disk for the whole catalog (bases + every connector's own layers)", _mb(unique),
                     f"{len(names)} images; each alone is its base plus its layers"))
    biggest = sorted(added.items(), key=lambda item: -item[1])[:5]
    bench.add(Figure("added over the base, per connector", f"median {_mb(statistics.median(ordered))}",
                     f"min {_mb(ordered[0])}, max {_mb(ordered[-1])}; largest: "
                     + ", ".join(f"{n} {_mb(v)}" for n, v in biggest)))

    measure_catalog_lock(bench)
    noop_s = _timed_inv(settings, "build-connectors")
    list_s = _timed_inv(settings, "list")
    bench.raw["catalog_noop"] = {"build_connectors_s": round(noop_s, 3), "list_s": round(list_s, 3)}
    bench.add(Figure("no-op `inv build-connectors` over the whole catalog", f"{noop_s:.2f}s",
                     "whole process, median of 3", "< 1 s", noop_s < 1.0))
    bench.add(Figure("`inv list` over the whole catalog", f"{list_s:.2f}s", "whole process, median of 3",
                     "< 1 s", list_s < 1.0))


@contextmanager
def scratch_project(settings: Settings) -> Iterator[Settings]:
    """A copy of what builds and locks read (images/, runtime/, pyproject.toml, tasks.py) in a temporary
    directory, and the settings pointed at it. Paths inside are the same, so are input hashes; reports and
    logs still go to the real output directory."""
    with tempfile.TemporaryDirectory(prefix="bench-project-") as scratch:
        copy = Path(scratch)
        for name in ("tasks.py", "pyproject.toml"):
            shutil.copy(settings.root / name, copy / name)
        for name in ("images", "runtime"):
            shutil.copytree(settings.root / name, copy / name)
        yield settings.with_overrides(root=copy, output_dir=str(settings.output_path))


# ------------------------------------------------------------- 3. one fragment changed
FRAGMENT_ADDITIONS = ("humanize", "texttable", "tabulate")  # small pure-Python packages; the first one missing


def measure_one_fragment_changed(bench: Bench, found, api, name: str | None = None, *,
                                 build: Callable[[Settings, list[str]], int] = commands.build,
                                 lock: Callable[[Settings, list[str]], int] = commands.lock) -> None:
    """A user's edit on a warm cache, in a scratch copy of the project: add a package to a fragment, re-lock
    it, rebuild it (re-lock and rebuild timed apart). Warm: the copy first rebuilds the connector once (a
    comment added), as the user's own previous build would have left BuildKit's cache."""
    name = name or bench.connectors[0]
    lock_path = found[name].lock
    locked = lock_path.read_text().lower() if lock_path.is_file() else ""
    package = next((p for p in FRAGMENT_ADDITIONS if f"\n{p}==" not in locked), FRAGMENT_ADDITIONS[0])
    bench.console.print(f"[bold]3. One fragment changed[/] ({name}: + {package}), warm cache, in a scratch copy")
    with scratch_project(bench.settings) as settings:
        fragment = settings.root / found[name].fragment.relative_to(bench.settings.root)
        original = fragment.read_text()
        fragment.write_text(original + f"# the user's previous build, {time.time_ns()}\n")
        build(settings, [name])  # warms BuildKit's cache with this connector's layers
        fragment.write_text(original + f"{package}\n")
        started = time.monotonic()
        lock(settings, [name], version=settings.framework_named(settings.framework).version)
        lock_s = time.monotonic() - started
        started = time.monotonic()
        build(settings, [name])
        rebuild_s = time.monotonic() - started
        image = _last_report(settings)[name]
        log = Path(image.get("log") or settings.output_path / "logs" / f"{name}.log")
        # The same change built before (a --no-cold run after another bench) comes from BuildKit's cache.
        cached = log.is_file() and any(step.startswith("[install-") and seconds is None
                                       for step, seconds in buildkit_steps(buildkit.last_run(log.read_text())))
        extra = _extra_packages(api, found, name, bench.settings)
    build(bench.settings, [name])  # the image back to the committed inputs, for the measurements after this
    plain_s = _plain_venv_install(extra)
    build_s = image["build_s"]
    bench.raw["one_changed"] = {"connector": name, "added": package, "lock_s": round(lock_s, 1),
                                "rebuild_s": round(rebuild_s, 1), "build_s": build_s, "smoke_s": image["smoke_s"],
                                "sbom_check_s": image["sbom_check_s"], "plain_uv_s": round(plain_s, 1),
                                "packages": len(extra), "install_cached": cached}
    reference = f"uv into a plain venv {plain_s:.1f}s ({len(extra)} packages)"
    bench.add(Figure(f"re-lock after a fragment change ({name}: + {package})", f"{lock_s:.1f}s",
                     f"`inv lock -c {name}`"))
    bench.add(Figure(f"rebuild after the change ({name}), verified and tagged", f"{rebuild_s:.1f}s",
                     f"`inv build-connectors -c {name}`; smoke test {image['smoke_s']}s, "
                     f"SBOM check {image['sbom_check_s']}s"))
    bench.add(Figure("  of which the build (install, SBOM, export)", f"{build_s:.1f}s", reference,
                     "<= plain + 3 s", build_s <= plain_s + 3,
                     "the install came from BuildKit's cache (this change was built before)" if cached else ""))


def _last_report(settings: Settings) -> dict:
    data = json.loads((settings.output_path / "reports" / "build-latest.json").read_text())
    return {image["name"]: image for image in data["images"]}


def _freeze(api, ref: str) -> dict[str, str]:
    output = api.containers.run(ref, ["cat", "/opt/venv/base-constraints.txt"], remove=True, network_mode="none")
    pins = {}
    for line in output.decode().splitlines():
        if "==" in line:
            package, version = line.split("==", 1)
            pins[package.strip().lower()] = version.strip()
    return pins


def _extra_packages(api, found, name: str, settings: Settings) -> list[str]:
    spec = found[name]
    parent = found[spec.parent]
    mine = _freeze(api, image_ref(spec, settings))
    theirs = _freeze(api, image_ref(parent, settings))
    return [f"{p}=={v}" for p, v in sorted(mine.items()) if theirs.get(p) != v]


def _plain_venv_install(pins: list[str]) -> float:
    """uv installing the same pinned packages into an empty virtualenv on the host, warm cache."""
    uv = shutil.which("uv") or _bench_uv()
    with tempfile.TemporaryDirectory(prefix="bench-venv-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text("\n".join(pins) + "\n")
        for attempt in ("warm-up", "timed"):
            venv = Path(scratch) / attempt
            subprocess.run([uv, "venv", "-q", str(venv)], check=True)
            started = time.monotonic()
            subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", str(venv / "bin" / "python"),
                            "-r", str(requirements)], check=True, env=dict(os.environ, UV_COMPILE_BYTECODE="1"))
            elapsed = time.monotonic() - started
    return elapsed


def _bench_uv() -> str:
    target = Path(tempfile.gettempdir()) / "ingestion-bench-uv"
    uv = target / "bin" / "uv"
    if not uv.exists():
        subprocess.run([os.sys.executable, "-m", "venv", str(target)], check=True)
        subprocess.run([str(target / "bin" / "pip"), "install", "-q", "uv"], check=True)
    return str(uv)


# -------------------------------------------------------------- 3b. install from the lock
def measure_lock_install(bench: Bench, found, name: str | None = None) -> None:
    """Installing a base and one connector from their locks (no resolution, hash-checked) next to the way
    builds installed them before locks (resolve at build time), with uv on the host and a warm cache."""
    name = name or bench.connectors[0]
    bench.console.print(f"[bold]3b. Install from the lock[/] (the base, and {name}) next to resolving at build time")
    settings = bench.settings
    targets = lock_mod.targets(found, settings)
    base, connector = targets[found[name].parent], targets[name]
    uv = lock_mod.uv_binary()
    env = dict(os.environ, UV_COMPILE_BYTECODE="1", UV_PYTHON_DOWNLOADS="never")
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as scratch:
        work = Path(scratch)
        base_in = work / "base.in"
        base_in.write_text("\n".join(base.requirements) + "\n")
        constraints = work / "constraints.txt"
        constraints.write_text("\n".join(base.constraints) + "\n")
        joint_in = work / "joint.in"
        joint_in.write_text(base.joint_request + "\n")
        fragment = work / "fragment.in"
        fragment.write_text("\n".join(connector.requirements) + "\n")
        overrides = work / "overrides.txt"  # the framework version's, as `inv lock` resolves with them
        overrides.write_text("".join(f"{line}\n" for line in base.overrides))
        with_overrides = ["--overrides", str(overrides)]

        def fresh(label: str, with_base: bool) -> str:
            venv = work / label
            subprocess.run([uv, "venv", "-q", "--python", "python3", str(venv)], check=True, env=env)
            python = str(venv / "bin" / "python")
            if with_base:
                subprocess.run([uv, "pip", "sync", "-q", "--python", python, "--require-hashes", str(base.path)],
                               check=True, env=env)
            return python

        def resolve_base(python: str) -> None:
            joint = work / "joint.txt"
            subprocess.run([uv, "pip", "compile", "-q", "--python", python, "-c", str(constraints), *with_overrides,
                            str(joint_in), str(base_in), "-o", str(joint)], check=True, env=env)
            subprocess.run([uv, "pip", "install", "-q", "--python", python, "-r", str(base_in), "-c",
                            str(constraints), "-c", str(joint), *with_overrides], check=True, env=env)

        def resolve_connector(python: str) -> None:
            frozen = work / "frozen.txt"
            frozen.write_text(subprocess.run([uv, "pip", "freeze", "--python", python], check=True, env=env,
                                             capture_output=True, text=True).stdout)
            subprocess.run([uv, "pip", "install", "-q", "--python", python, "-r", str(fragment), "-c", str(frozen),
                            *with_overrides], check=True, env=env)

        def sync(lock_path: Path):
            return lambda python: subprocess.run([uv, "pip", "sync", "-q", "--python", python, "--require-hashes",
                                                  str(lock_path)], check=True, env=env)

        timings = {}
        for label, action, with_base in (("base resolved", resolve_base, False), ("base locked", sync(base.path), False),
                                         ("connector resolved", resolve_connector, True),
                                         ("connector locked", sync(connector.path), True)):
            runs = []
            for attempt in range(2):  # the first warms uv's cache; the second is timed
                python = fresh(f"{label.replace(' ', '-')}-{attempt}", with_base)
                started = time.monotonic()
                action(python)
                runs.append(time.monotonic() - started)
            timings[label] = runs[-1]
    bench.raw["lock_install"] = {"connector": name, **{k.replace(" ", "_") + "_s": round(v, 2)
                                                       for k, v in timings.items()}}
    for what, shown in (("base", base.image), ("connector", connector.image)):
        locked, resolved = timings[f"{what} locked"], timings[f"{what} resolved"]
        bench.add(Figure(f"install {shown} from its lock (hash-checked, no resolution)", f"{locked:.1f}s",
                         f"resolved at build time {resolved:.1f}s", "not slower", locked <= resolved * 1.1,
                         f"x{resolved / locked:.1f}" if locked else ""))


def measure_catalog_lock(bench: Bench) -> None:
    """`inv lock` writing every lock of the catalog from nothing, in a scratch copy of the project."""
    settings = bench.settings
    with scratch_project(settings) as scratch:
        copy = scratch.root
        default = [f.version for f in settings.frameworks.values()]  # the default versions' locks only
        removed = [path.unlink() for path in copy.glob("images/**/*.lock")
                   if path.parent.name in default or path.stem in default or path.parent.name == "sbom"]
        started = time.monotonic()
        subprocess.run([str(Path(os.sys.executable).parent / "inv"), "lock", "--version", settings.framework_named(
            settings.framework).version], cwd=copy, check=True,
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(settings.root)))
        lock_s = time.monotonic() - started
        check_s = _timed_inv(scratch, "lock", "--check")
    bench.raw["catalog_lock"] = {"locks": len(removed), "seconds": round(lock_s, 1), "check_s": round(check_s, 2)}
    bench.add(Figure("`inv lock` of the whole catalog, from no lock at all", f"{lock_s / 60:.1f} min",
                     f"{len(removed)} locks, jobs={settings.jobs}, uv's cache warm"))
    bench.add(Figure("`inv lock --check` over the whole catalog", f"{check_s:.2f}s",
                     "whole process, median of 3; reads files only", "< 1 s", check_s < 1.0))


# ---------------------------------------------------------------------------- 4. sizes
def measure_sizes(bench: Bench, found, api) -> None:
    bench.console.print("[bold]4. Sizes[/]")
    settings = bench.settings
    base_spec = found[found[bench.connectors[0]].parent]
    base_ref = image_ref(base_spec, settings)
    base = api.images.get(base_ref)
    base_venv = _venv_bytes(api, base_ref)
    bench.add(Figure("base image", _mb(base.attrs["Size"]), f"virtualenv {_mb(base_venv)}"))
    rows = {}
    worst = 0.0
    for name in bench.connectors:
        ref = image_ref(found[name], settings)
        added = api.images.get(ref).attrs["Size"] - base.attrs["Size"]
        installed = _venv_bytes(api, ref) - base_venv
        overhead = (added - installed) / installed if installed > 0 else 0.0
        worst = max(worst, overhead)
        rows[name] = {"added": added, "installed": installed, "overhead": round(overhead, 4)}
        bench.add(Figure(f"  {name}: added over base", _mb(added), f"its packages {_mb(installed)}",
                         "within 5 %", overhead <= 0.05, f"{overhead:+.1%}"))
    all_in_one = _all_in_one_size(bench, found, api, base_ref)
    total_separate = base.attrs["Size"] + sum(r["added"] for r in rows.values())
    largest = base.attrs["Size"] + max(r["added"] for r in rows.values())
    bench.raw["sizes"] = {"base": base.attrs["Size"], "connectors": rows, "all_in_one": all_in_one,
                          "separate_total": total_separate}
    bench.add(Figure("all-in-one image (same connectors)", _mb(all_in_one),
                     f"largest single connector image {_mb(largest)}; base + every layer {_mb(total_separate)}"))


def _venv_bytes(api, ref: str) -> int:
    output = api.containers.run(ref, ["du", "-sb", "/opt/venv"], remove=True, network_mode="none", user="root")
    return int(output.decode().split()[0])


def _all_in_one_size(bench: Bench, found, api, base_ref: str) -> int:
    ref = f"{SEED_REPOSITORY}/all-in-one:bench"
    with tempfile.TemporaryDirectory(prefix="bench-aio-") as scratch:
        lines = []
        for name in bench.connectors:
            lines += list(found[name].requirements)
        (Path(scratch) / "requirements.txt").write_text("\n".join(lines) + "\n")
        # The framework version's uv overrides, as its locks were resolved with them.
        framework = found[bench.connectors[0]].framework
        (Path(scratch) / "overrides.txt").write_text("".join(
            f"{line}\n" for line in lock_mod.resolution(bench.settings, framework).get("overrides", [])))
        (Path(scratch) / "Dockerfile").write_text(
            "ARG BASE\nFROM ${BASE}\nUSER root\n"
            "COPY requirements.txt overrides.txt /tmp/\n"
            # The base has neither pip nor venv support: the bench's own uv, bound in for this step only.
            "RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv "
            "--mount=type=bind,source=uv,target=/tmp/uv "
            "if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi "
            "&& /tmp/uv pip install --python /opt/venv/bin/python "
            "-r /tmp/requirements.txt -c /opt/venv/base-constraints.txt --overrides /tmp/overrides.txt\n")
        shutil.copy(_bench_uv(), Path(scratch) / "uv")
        base_id = api.images.get(base_ref).id
        _cli_build(Path(scratch), ref, {"BASE": verify.pin(api, base_id)}, bench.settings.resolved_ca_bundle(),
                   bench.console)
    return api.images.get(ref).attrs["Size"]


# ------------------------------------------------------------- 4b. where the bytes go
FOOTPRINT_SCRIPT = Path(__file__).parents[1] / "resources" / "footprint.py"  # runs inside the image
# The bases' size targets (issue 21): a third smaller than the 589 MB / 262 MB they started from.
BASE_TARGETS_MB = {"openmetadata": 420, "datahub": 190}
STARTUP_RUNS = 7


def footprint(api, ref: str) -> dict:
    """footprint.py's report, run with the image's own Python (as root, to read every file; no network)."""
    cli = buildkit.find_cli().path
    done = subprocess.run([cli, "run", "--rm", "-i", "--network=none", "--user=root", "--entrypoint=python", ref, "-"],
                          input=FOOTPRINT_SCRIPT.read_bytes(), capture_output=True)
    if done.returncode != 0:
        raise FactoryError(f"footprint.py failed in {ref}: {done.stderr.decode(errors='replace')[-500:]}")
    return json.loads(done.stdout)


# Run inside the image: `main.py --check` as a child, its CPU seconds (user + system) and wall seconds.
STARTUP_PROBE = ("import json, resource, subprocess, time\n"
                 "started = time.monotonic()\n"
                 "subprocess.run(['python', 'main.py', '--check'], check=True, capture_output=True)\n"
                 "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                 "print(json.dumps({'cpu': usage.ru_utime + usage.ru_stime, 'wall': time.monotonic() - started}))\n")


def check_startup(ref: str) -> dict[str, float]:
    """`python main.py --check` in a fresh container: its CPU seconds, which other work on a shared machine
    hardly changes (the judged figure), and its wall seconds."""
    cli = buildkit.find_cli().path
    done = subprocess.run([cli, "run", "--rm", "--network=none", "--entrypoint=python", ref, "-c", STARTUP_PROBE],
                          capture_output=True, check=True)
    return json.loads(done.stdout)


def measure_footprint(bench: Bench, api, baseline: str = "") -> None:
    """Each base's size next to its target, a per-directory table of the image and its virtualenv, the
    largest packages and what kinds of content take the bytes; with a baseline namespace (images built
    before a change), the same for those and `--check` start-up of both, runs interleaved."""
    bench.console.print("[bold]4b. Where the bytes go[/] (the bases)")
    found = catalog_mod.discover(bench.settings)
    raw = bench.raw.setdefault("footprint", {})
    for spec in found.bases:
        framework = spec.framework.name
        refs = {"after": image_ref(spec, bench.settings)}
        if baseline:
            refs["before"] = image_ref(spec, bench.settings.with_overrides(namespace=baseline))
        reports, sizes = {}, {}
        for side, ref in refs.items():
            try:
                sizes[side] = api.images.get(ref).attrs["Size"]
            except Exception:
                bench.console.print(f"  {ref} is not in the engine: skipped")
                continue
            reports[side] = footprint(api, ref)
        if "after" not in reports:
            continue
        target = BASE_TARGETS_MB.get(framework)
        before = f"before {_mb(sizes['before'])}" if "before" in sizes else ""
        bench.add(Figure(f"{framework} base", _mb(sizes["after"]), before,
                         f"<= {target} MB" if target else "", sizes["after"] <= target * 1e6 if target else None))
        _footprint_table(bench, framework, reports)
        raw[framework] = {"size": sizes, "reports": reports}
        if "before" in sizes:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for _ in range(STARTUP_RUNS):  # interleaved, so load on a shared machine hits both sides alike
                for side in ("before", "after"):
                    runs[side].append(check_startup(refs[side]))
            cpu = {side: statistics.median(run["cpu"] for run in values) for side, values in runs.items()}
            wall = {side: statistics.median(run["wall"] for run in values) for side, values in runs.items()}
            change = cpu["after"] / cpu["before"] - 1
            bench.add(Figure(f"{framework} base: main.py --check, CPU seconds", f"{cpu['after']:.2f}s",
                             f"before {cpu['before']:.2f}s (median of {STARTUP_RUNS}, interleaved; wall "
                             f"{wall['after']:.2f}s vs {wall['before']:.2f}s)",
                             "not slower than +5 %", change <= 0.05, f"{change:+.1%}"))
            raw[framework]["startup_s"] = {side: [{key: round(v, 2) for key, v in run.items()} for run in values]
                                           for side, values in runs.items()}


def _footprint_table(bench: Bench, framework: str, reports: dict[str, dict]) -> None:
    sides = [side for side in ("before", "after") if side in reports]
    table = Table(title=f"{framework} base: where the bytes go (MB)", title_justify="left")
    table.add_column("part")
    for side in sides:
        table.add_column(side, justify="right")

    def rows(section: str, keys: list[str], label=lambda key: key) -> None:
        for key in keys:
            table.add_row(label(key), *(f"{reports[side][section].get(key, 0) / 1e6:.1f}" for side in sides))

    def keys(section: str, limit: int, floor: float = 0.5e6) -> list[str]:
        seen: dict[str, int] = {}
        for side in sides:
            for key, value in reports[side][section].items():
                seen[key] = max(seen.get(key, 0), value)
        return [key for key, value in sorted(seen.items(), key=lambda item: -item[1]) if value >= floor][:limit]

    table.add_row("[bold]whole filesystem[/]", *(f"{reports[side]['total'] / 1e6:.1f}" for side in sides))
    rows("root", keys("root", 8))
    rows("usr_lib", keys("usr_lib", 6))
    rows("venv", keys("venv", 4))
    table.add_row("[bold]kind of content in the virtualenv[/]", *("" for _ in sides))
    rows("venv_kinds", keys("venv_kinds", 8), lambda key: f"  {key}")
    table.add_row("[bold]largest packages[/]", *("" for _ in sides))
    rows("packages", keys("packages", 15), lambda key: f"  {key}")
    bench.console.print(table)


# ------------------------------------------------------------------------ 5. start-up
def measure_startup(bench: Bench, found, api) -> None:
    bench.console.print("[bold]5. Start-up[/] of `python main.py --check` on the OpenMetadata base")
    settings = bench.settings
    base_spec = found.base_for(settings.framework)
    ref = image_ref(base_spec, settings)
    cli = buildkit.find_cli().path
    modules = base_spec.framework.modules
    probe = ("import time; t = time.perf_counter(); "
             + "; ".join(f"import {m}" for m in modules)
             + "; print(time.perf_counter() - t)")
    runs, imports = [], []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([cli, "run", "--rm", "--network=none", ref, "python", "main.py", "--check"],
                       capture_output=True, check=True)
        runs.append(time.monotonic() - started)
        output = subprocess.run([cli, "run", "--rm", "--network=none", ref, "python", "-c", probe],
                                capture_output=True, text=True, check=True).stdout
        imports.append(float(output.strip().splitlines()[-1]))
    run_s, import_s = statistics.median(runs), statistics.median(imports)
    bench.raw["startup"] = {"docker_run_check_s": [round(r, 2) for r in runs],
                            "framework_import_s": [round(i, 2) for i in imports]}
    bench.add(Figure("docker run → end of main.py --check", f"{run_s:.2f}s",
                     f"framework import alone {import_s:.2f}s", "within 1.5 s of the import",
                     run_s - import_s <= 1.5, f"overhead {run_s - import_s:+.2f}s"))


# ---------------------------------------------------------------------------- 6. push
def measure_push(bench: Bench, found, api) -> None:
    bench.console.print("[bold]6. Push[/]: bytes sent for a second connector after the base and a first one")
    registry_binary = shutil.which("docker-registry")
    if not registry_binary:
        bench.add(Figure("push", "skipped", "docker-registry is not installed (apt-get install docker-registry)"))
        return
    settings = bench.settings
    first, second = bench.connectors[0], bench.connectors[1]
    with _local_registry(registry_binary) as (address, _storage):
        pushed = {}
        for name in (found[first].parent, first, second):
            ref = image_ref(found[name], settings)
            target = f"{address}/{BENCH_NAMESPACE}/{found[name].image_name}"
            api.images.get(ref).tag(target, "bench")
            pushed[name] = _bytes_sent(api.images.push(target, "bench", stream=True, decode=True), target)
            api.images.remove(f"{target}:bench")
    child = api.images.get(image_ref(found[second], settings)).attrs
    parent = api.images.get(image_ref(found[found[second].parent], settings)).attrs
    own_size = child["Size"] - parent["Size"]
    own_layers = len(child["RootFS"]["Layers"]) - len(parent["RootFS"]["Layers"])
    sent, layers = pushed[second]
    bench.raw["push"] = {name: {"bytes_sent": b, "layers_uploaded": n} for name, (b, n) in pushed.items()}
    bench.raw["push"]["second_connector_own"] = {"layers": own_layers, "bytes_uncompressed": own_size}
    base_sent, base_layers = pushed[found[second].parent]
    bench.add(Figure(f"push {second} after base + {first}", f"{_mb(sent)} in {layers} layer(s)",
                     f"its own: {own_layers} layer(s), {_mb(own_size)}; the base sent {_mb(base_sent)} in "
                     f"{base_layers} layers", "only its own layers", 1 <= layers <= own_layers))


@contextmanager
def _local_registry(binary: str):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as scratch:
        storage = Path(scratch) / "storage"
        config = Path(scratch) / "config.yml"
        config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
                          f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n")
        process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}", storage
        finally:
            process.terminate()
            process.wait(timeout=10)


def _bytes_sent(events, target: str) -> tuple[int, int]:
    """Compressed bytes and number of layers the daemon uploaded, read from the push stream."""
    progress: dict[str, int] = {}
    uploaded: set[str] = set()
    for event in events:
        if failure := stream_error(event):
            raise FactoryError(f"push of {target} failed: {failure}")
        layer = event.get("id", "")
        if event.get("status") == "Pushing":
            progress[layer] = max(progress.get(layer, 0), int(event.get("progressDetail", {}).get("current", 0)))
        elif event.get("status") == "Pushed":
            uploaded.add(layer)
    return sum(progress.get(layer, 0) for layer in uploaded), len(uploaded)


# ------------------------------------------------------------- 7. the registry as cache
def measure_cache(bench: Bench, api, *, cold: bool, scratch: bool = True) -> None:
    """--cache-from (pull + verify + tag) next to building the same images from scratch, in one run.

    Both start from an engine without the images; "from scratch" is an empty BuildKit cache (cold: also
    emptied before the pull, so every layer is downloaded), or with --no-cold a build that reuses no
    layers (`--no-cache`; uv's download cache stays warm, and the pull may find layers the build cache holds).
    With signing_key and trusted_keys set, the push signs and the pull is measured twice in the same run:
    without the trust policy (every smoke test re-run) and with it (attested images skip their smoke test).
    scratch=False leaves out the build from scratch (the slowest part with the whole catalog).
    """
    settings = bench.settings
    names = bench.connectors
    trusted = bool(settings.signing_key and settings.trusted_keys)
    registry_binary = shutil.which("docker-registry")
    if not registry_binary:
        raise FactoryError("inv bench --cache needs docker-registry", "apt-get install docker-registry")
    bench.console.print(f"[bold]7. The registry as the build cache[/] ({', '.join(names)} and their parents, "
                        f"namespace {settings.namespace}{', signed and trusted' if trusted else ''})")
    commands.build(settings, names)  # the images to publish, verified
    pulls: dict[str, tuple[float, dict]] = {}
    with _local_registry(registry_binary) as (address, _storage):
        started = time.monotonic()
        run = push_mod.push(settings, names, registry=address, progress=Quiet())
        if run.failure is not None:
            raise run.failure
        push_s = time.monotonic() - started
        ways = {"untrusted": settings.with_overrides(trusted_keys=()), "trusted": settings} if trusted \
            else {"pull": settings}
        for way, pull_settings in ways.items():
            _empty(api, settings.namespace, address)
            if cold:  # layers only the build cache still holds would make the pull look cheaper than it is
                prune_build_cache()
            started = time.monotonic()
            commands.build(pull_settings.with_overrides(cache_from=address), names)
            pulls[way] = (time.monotonic() - started, _last_report(settings))
    for way, (_seconds, report) in pulls.items():
        not_pulled = [name for name, image in report.items() if image["result"] != "pulled"]
        if not_pulled:
            raise FactoryError(f"--cache-from ({way}) built instead of pulling: {', '.join(not_pulled)}")
    pulled_s, report = pulls["trusted" if trusted else "pull"]
    built_s, built = None, {}
    if scratch:
        _empty(api, settings.namespace, address)
        if cold:
            prune_build_cache()
        started = time.monotonic()
        commands.build(settings, names, no_cache=not cold)
        built_s = time.monotonic() - started
        built = _last_report(settings)
    bench.raw["cache"] = {
        "images": sorted(report), "cold": cold, "push_s": round(push_s, 1), "trusted": trusted,
        "pull_verify_s": round(pulled_s, 1), "build_s": round(built_s, 1) if built_s is not None else None,
        "pull_verify_untrusted_s": round(pulls["untrusted"][0], 1) if trusted else None,
        "per_image": {name: {"pulled_s": report[name]["duration_s"], "smoke_s": report[name]["smoke_s"],
                             "pulled": report[name]["reason"],
                             "built_s": built[name]["duration_s"] if built else None}
                      for name in report},
    }
    bench.add(Figure(f"push {len(report)} images to a local registry{' (signed)' if trusted else ''}",
                     f"{push_s:.1f}s", "", "", None))
    if trusted:
        untrusted_s = pulls["untrusted"][0]
        bench.add(Figure(f"--cache-from with trusted_keys: pull + verify + tag {len(report)} images "
                         "(attested: no smoke test)", f"{pulled_s:.1f}s",
                         f"without trusted_keys (every smoke test re-run) {untrusted_s:.1f}s", "x2",
                         untrusted_s >= 2 * pulled_s, f"x{untrusted_s / pulled_s:.1f}"))
    if built_s is not None:
        scratch_way = "empty build cache" if cold else "no layer cache (--no-cache), warm downloads"
        bench.add(Figure(f"--cache-from: pull + verify + tag {len(report)} images", f"{pulled_s:.1f}s",
                         f"building them from scratch ({scratch_way}) {built_s:.1f}s", "faster than building",
                         pulled_s < built_s, f"x{built_s / pulled_s:.1f}"))


def _empty(api, namespace: str, registry: str) -> None:
    """No image of the namespace left (its registry refs included), so nothing local can be reused."""
    remove_tags_under(api, f"{registry}/{namespace}")
    remove_tags_under(api, namespace)


# --------------------------------------------------------------------------- output
def _mb(size: int | float) -> str:
    return f"{size / 1e6:.1f} MB"


def write(bench: Bench, output: Path) -> Path:
    table = Table(title="Benchmark", title_justify="left")
    for column in ("measure", "value", "next to", "target", "result"):
        table.add_column(column)
    for figure in bench.figures:
        result = {True: "[green]met[/]", False: "[red]not met[/]", None: ""}[figure.met]
        table.add_row(figure.name, figure.value, figure.reference, figure.target,
                      f"{result} {figure.note}".strip())
    bench.console.print(table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "connectors": bench.connectors,
        "figures": [figure.__dict__ for figure in bench.figures],
        "raw": bench.raw,
    }, indent=2) + "\n")
    bench.console.print(f"JSON: {output}")
    return output
