"""What each task does, without Invoke: tasks.py parses flags and calls these."""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from packaging.version import Version
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import interrupts
from .. import platforms as platforms_mod
from .. import settings as settings_mod
from ..engine.buildkit import find_cli
from ..engine.daemon import plan_for, remove_replaced
from ..engine.docker_engine import DockerEngine
from ..engine.verify import PIN_REPOSITORY
from ..errors import ConfigError, DockerUnavailable, FactoryError
from ..model import catalog as catalog_mod
from ..model import catalog_table
from ..model import plan as plan_mod
from ..model import shard as shard_mod
from ..model import versions as versions_mod
from ..model.names import OwnTags
from ..model.plan import BLOCKED, Plan, platform_targets, require_buildable
from ..model.results import BuildStatus, Result, human_size, write_json
from ..settings import ALL_VERSIONS, Settings
from ..workflows import lock as lock_mod
from ..workflows import sbom as sbom_mod
from ..workflows.builder import Builder
from .report import Progress, print_failures, styled, summary_table

# Wide when piped (CI logs), so image names are never cut.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def print_plan(plan: Plan) -> None:
    table = Table(title="Build plan", title_justify="left")
    for column in ("image", "parent", "action", "why"):
        table.add_column(column)
    for item in plan:
        action = "build" if item.needs_build else ("blocked" if item.state == BLOCKED else "skip")
        table.add_row(escape(item.ref), escape(item.spec.parent or plan.python_image), action,
                      styled(item.state, item.reason))
    console.print(table)


def build_versions(views: list[tuple[Settings, str | None]], names: list[str] | None = None, **options) -> int:
    """`build` for each selected framework version (`--version all`: every supported one), one after the
    other; a version that fails does not stop the next. In a view that varies one framework, only that
    framework's images are built (the others are at their default version, built by the first view)."""
    if len(views) == 1:
        settings, varied = views[0]
        return build(settings, names, only_framework=varied, **options)
    if views[0][0].tag:
        raise ConfigError(f"a version tag ({views[0][0].tag}) cannot name the images of {len(views)} framework "
                          "versions: each would overwrite the one before", "give one --version with --tag, "
                          "or leave the tag out: each version's images are tagged with their version")
    errors: list[FactoryError] = []
    for settings, varied in views:
        if errors and options.get("fail_fast"):
            console.print("[yellow]--fail-fast: the next framework versions are not built[/]")
            break
        label = ", ".join(f"{f.package} {f.version}" for f in settings.frameworks.values()
                          if varied in (None, f.name))
        console.print(f"[bold]== {label}[/]", highlight=False)
        try:
            build(settings, names, only_framework=varied, **options)
        except DockerUnavailable:
            raise  # the next version would fail the same way
        except FactoryError as error:
            console.print(f"[bold red]{escape(error.render())}[/]", highlight=False)
            errors.append(error)
    if errors:
        worst = max(errors, key=lambda e: (e.exit_code == 1, e.exit_code))
        raise FactoryError(f"{len(errors)} of {len(views)} framework version(s) failed; the worst: {worst.message}",
                           worst.hint, exit_code=worst.exit_code) if len(errors) > 1 else worst
    return 0


def build(settings: Settings, names: list[str] | None = None, *, base_only: bool = False,
          frameworks: list[str] | None = None, force: bool = False, fail_fast: bool = False,
          plan_only: bool = False, no_cache: bool = False, shard: str | None = None, engine=None,
          reverify: bool = False, only_framework: str | None = None) -> int:
    """Build what is stale among the named images (or all), on every target platform; returns the exit status
    or raises (docs/exit-codes.md). One plan per platform, built one platform after the other (the host's
    cores are the limit either way); the default platform alone is the ordinary case of it.

    `engine`: an Engine to use instead of the local one (tests pass the fake, tests/fake_engine.py)."""
    started = time.monotonic()
    catalog = catalog_mod.discover(settings)
    in_shard = _shard_filter(shard)
    if base_only:
        targets = [catalog.base_for(settings.framework_named(f).name).name
                   for f in frameworks or [only_framework or settings.framework]]
    else:
        # Another version of one framework (`--version`): its connectors, not every framework's.
        targets = in_shard([name for name in catalog.resolve(names)
                            if names or only_framework in (None, catalog[name].framework.name)])
    chosen = settings.target_platforms
    several = chosen != (platforms_mod.DEFAULT,)
    platforms_mod.require_emulation(chosen)  # before anything is planned or built: exit 2 with the fix
    plans, skipped = [], []
    engine_used = None
    for platform in chosen:
        usable, unavailable_here = platform_targets(catalog, targets, platform, settings)
        skipped += unavailable_here
        plan, engine_used = plan_for(settings, catalog, usable, force=force, platform=platform, engine=engine)
        plans.append(plan)
    everything = not names and not base_only
    broken = catalog.broken if everything else {}
    for name, error in broken.items():
        console.print(f"[bold red]{name} cannot be built:[/] {escape(error.message)}", highlight=False)
    # Building "everything" passes over connectors that cannot exist here, and says so in the table.
    unavailable = [Result(name=spec.name, ref=plan_mod.image_ref(spec, settings, platform),
                          status=BuildStatus.UNAVAILABLE, detail=spec.unavailable, platform=platform.name)
                   for platform in chosen for spec in catalog.connectors
                   if spec.unavailable and only_framework in (None, spec.framework.name)] if everything else []
    unavailable = [r for r in unavailable if r.name in in_shard([r.name])]
    if plan_only:
        for plan in plans:
            print_plan(plan)
        raise_for_outcome([], broken, plan_mod.build_logs(settings))
        return 0
    for plan in plans:
        require_buildable(plan)
    todo = [item for plan in plans for item in plan.to_build]
    total = sum(len(plan.order) for plan in plans)
    where = f" for {', '.join(map(str, chosen))}" if several else ""
    # Builds install exactly the locks: a stale one stops the run here, naming the command that fixes it.
    locks = lock_mod.require_current(lock_mod.targets(catalog, settings), settings,
                                     [lock_mod.SBOM_TOOL, *dict.fromkeys(item.name for item in todo)]) if todo else {}
    if todo:
        find_cli()  # no BuildKit-capable CLI: one clear error with the install hint, not N failed builds
        console.print(f"Building {len(todo)} of {total} images{where}, up to {settings.jobs} builds and "
                      f"{settings.jobs} smoke tests at a time (logs in {plan_mod.build_logs(settings)}).")
    results: list[Result] = []
    warnings: list[str] = []
    # --cache-from serves the default platform's images; another platform's are built (its cache keys differ).
    cache = _open_cache(settings, engine_used, warnings) if todo and settings.cache_from else None
    interrupted = None
    for plan in plans:
        if interrupted:
            results += [Result(name=item.name, ref=item.ref, status=BuildStatus.NOT_BUILT,
                               detail=f"interrupted ({interrupts.signal_name(interrupted)})",
                               platform=plan.platform.name)
                        for item in plan]
            continue
        if fail_fast and any(r.status.failed for r in results):
            results += [Result(name=item.name, ref=item.ref, status=BuildStatus.NOT_BUILT,
                               detail="stopped by --fail-fast", platform=plan.platform.name) for item in plan]
            continue
        sbom_dir = plan_mod.sbom_copies(settings, plan.platform)
        # With nothing to build the builder still runs: up-to-date images get this commit's tags.
        with Progress(plan.order, console) if plan.to_build else nullcontext() as progress:
            builder = Builder(settings, engine_used, revision=plan.revision, progress=progress, no_cache=no_cache,
                              lock_digests={name: lock.digest for name, lock in locks.items()},
                              check_sbom=functools.partial(_check_sbom, engine_used, sbom_dir),
                              cache=cache if plan.platform.is_default else None, reverify=reverify)
            built = [replace(r, platform=plan.platform.name)
                     for r in builder.run(plan, jobs=settings.jobs, fail_fast=fail_fast)]
        _remove_replaced(plan, built, engine_used)
        results += built
        interrupted = builder.interrupted
    results += skipped + unavailable
    _report_build(settings, results, started=started, built_any=bool(todo),
                  up_to_date=f"All {total} images" + (f" ({', '.join(map(str, chosen))})" if several else "")
                  + " are up to date",
                  extra={**({"platforms": [p.name for p in chosen]} if several else {}),
                         **_cache_report(settings, cache, results, warnings), **({"shard": shard} if shard else {}),
                         **({"interrupted": interrupts.signal_name(interrupted)} if interrupted else {})},
                  unavailable=unavailable, skipped=skipped)
    if interrupted:  # after the report, which says what was done before it
        raise interrupted
    raise_for_outcome(results, broken, plan_mod.build_logs(settings))
    return 0


def _report_build(settings: Settings, results: list[Result], *, started: float, built_any: bool, up_to_date: str,
                  extra: dict, unavailable: list[Result], skipped: list[Result] = ()) -> None:
    """The end of every build run, on one platform or several: the JSON report, then the table or one line."""
    report = write_json(settings.output_path / "reports" / "build-latest.json", results,
                        {"duration_s": round(time.monotonic() - started, 2), **extra})
    other = plan_mod.other_version(settings)
    if other:  # another version's run: kept apart too, so the catalog table has every version's last figures
        write_json(settings.output_path / "reports" / f"build-latest-{other}.json", results,
                   {"duration_s": round(time.monotonic() - started, 2), **extra})
    if built_any:
        console.print(summary_table(results))
        print_failures(console, results)
        console.print(f"Report: {report}")
    else:
        console.print(f"{up_to_date}; nothing to build ({time.monotonic() - started:.2f}s).")
    if skipped:
        console.print(f"{len(skipped)} image(s) cannot exist on a platform, not built: "
                      + ", ".join(f"{r.name} ({r.platform})" for r in skipped))
    if unavailable:
        names = sorted({r.name for r in unavailable})  # one per connector, whatever the platforms
        console.print(f"{len(names)} connector(s) unavailable here, not built: " + ", ".join(names)
                      + " (reasons: `inv list`)")


def _check_sbom(engine, output_dir: Path, image_id: str, name: str):
    return sbom_mod.verify_image(engine, image_id, name, output_dir)


def _shard_filter(shard: str | None):
    """names -> the ones in this shard (--shard K/N); every name without a shard. Bad input: ConfigError."""
    if not shard:
        return lambda names: list(names)
    chosen = shard_mod.parse_shard(shard)
    return lambda names: shard_mod.select(list(names), chosen)


def _open_cache(settings: Settings, engine, warnings: list[str]):
    """The registry cache (--cache-from), or None after one warning when it is down or refuses us."""
    from ..workflows.cache import open_cache  # only --cache-from needs it: a lighter start-up

    def warn(text: str) -> None:
        warnings.append(text)
        console.print(f"[yellow]{escape(text)}[/]")

    return open_cache(settings, engine, settings.cache_from, warn=warn)


def _cache_report(settings: Settings, cache, results: list[Result], warnings: list[str]) -> dict:
    if not settings.cache_from:
        return {}
    return {"cache": {"registry": settings.cache_from, "used": bool(cache and not cache.off_reason),
                      "warnings": warnings,
                      "pulled": sum(1 for r in results if r.status == BuildStatus.PULLED),
                      "built": sum(1 for r in results if r.status == BuildStatus.BUILT),
                      "misses": cache.misses if cache else []}}


def _remove_replaced(plan: Plan, results: list[Result], engine) -> None:
    """The images this run replaced would otherwise stay behind as gigabytes of layers: with the commit tag
    of the commit they were built at, in a git checkout."""
    new_ids = {r.name: r.image_id for r in results if r.image_id}
    replaced = [(item.current.id, OwnTags(item.ref.rpartition(":")[0], item.tags[0].removesuffix(item.platform.suffix)))
                for item in reversed(list(plan))
                if item.current and new_ids.get(item.name) not in (None, item.current.id)]
    if replaced:
        removal = remove_replaced(engine, replaced, PIN_REPOSITORY)
        if removal.removed:
            console.print(f"Removed {removal.removed} replaced image(s), {human_size(removal.freed)} "
                          f"(unshared layers freed).")
        for reason in removal.kept:
            console.print(f"[yellow]Kept a replaced image, {escape(reason)}.[/]")


def raise_for_outcome(results: list[Result], broken: dict, log_dir: Path) -> None:
    """One rule for every build task: exit 1 when a build or smoke test failed, else 2 when input was bad.

    A failure wins over a broken connector directory: exit 2 promises that every image that could be
    built was built and verified, so a caller may go on; after a failed build it may not.
    """
    failed = [r.name for r in results if r.status.failed]
    cannot = f"{len(broken)} connector(s) cannot be built: {', '.join(broken)}"
    if failed:
        raise FactoryError(f"{len(failed)} image(s) not built: {', '.join(failed)}" + (f"; {cannot}" if broken else ""),
                           f"see the failures above and {log_dir}")
    if broken:
        raise ConfigError(cannot, "fix the files named above")


def list_images(settings: Settings, as_json: bool = False, matrix=None, version: str | None = None) -> int:
    """inv list: one row per image, framework version and target platform; a platform or version it cannot
    exist on says why. Every supported version unless `version` names one."""
    if matrix is not None:
        views = settings_mod.selected_views(settings, version) if version else [(settings, None)]
        catalog = catalog_mod.discover(views[0][0])
        count = shard_mod.parse_count(matrix)
        print(json.dumps(shard_mod.matrix(catalog, [s.name for s in catalog.available_connectors
                                                    if views[0][1] in (None, s.framework.name)], count), indent=2))
        return 0
    views = settings_mod.selected_views(settings, version or ALL_VERSIONS)
    chosen = settings.target_platforms
    several = chosen != (platforms_mod.DEFAULT,)
    rows = []
    for view, varied in views:
        rows += _list_rows(view, varied, chosen, as_json)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    columns = ("image", "platform", "framework", "version", "parent", "state", "size") if several else \
        ("image", "framework", "version", "parent", "state", "size")
    table = Table(title=f"{len(rows)} images", title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(human_size(row["size"]) if column == "size" else str(row[column]) for column in columns))
    console.print(table)
    return 0


def _list_rows(settings: Settings, varied: str | None, chosen, as_json: bool) -> list[dict]:
    """The rows of one framework version's catalog (a varied view: only that framework's images)."""
    catalog = catalog_mod.discover(settings)
    rows = []
    if varied is None:
        for name, error in catalog.broken.items():
            rows.append({"name": name, "image": settings.repository(catalog_mod.IMAGE_PREFIX + name),
                         "kind": "connector", "framework": "?", "version": "?", "parent": "?", "platform": "?",
                         "state": f"broken: {error.message}", "image_id": None, "size": None})
    specs = [spec for spec in catalog if varied in (None, spec.framework.name)]
    for platform in chosen:
        usable, _ = platform_targets(catalog, [s.name for s in specs if not s.unavailable], platform, settings)
        try:
            plan, _ = plan_for(settings, catalog, usable, platform=platform)
            states = {item.name: item for item in plan}
        except FactoryError as exc:
            if as_json:
                raise
            console.print(f"[yellow]{exc.message}: states unknown[/]")
            states = {}
        for spec in specs:
            item = states.get(spec.name)
            reason = spec.unavailable or catalog.unavailable_on(spec, platform)
            state = f"unavailable: {reason}" if reason else (item.state if item else "unknown")
            rows.append({
                "name": spec.name,
                "image": item.ref if item else plan_mod.image_ref(spec, settings, platform),
                "kind": spec.kind,
                "framework": spec.framework.name,
                "version": spec.framework.version,
                "default_version": spec.framework.is_default_version,
                "platform": platform.name,
                "parent": catalog[spec.parent].image_name if spec.parent else settings.python_image,
                "state": state,
                "image_id": item.current.id if item and item.current else None,
                "size": item.current.size if item and item.current else None,
                "description": spec.description,
                "source": spec.source,
                "unavailable_platforms": dict(spec.unavailable_platforms),
            })
    return rows


def catalog(settings: Settings, frameworks: list[str] | None = None, *, prune: bool = False,
            check: bool = False, engine=None, version: str | None = None, resolver=None) -> int:
    """inv catalog: derive connector directories from each framework's base image; 1 with --check on drift.

    `version`: one framework version's catalog instead (adding it when it is not supported yet): its base
    lock, base image, sources, connector locks, and what appeared, vanished or failed against another version."""
    from ..workflows import catalog_sync  # only inv catalog needs it (and tomlkit): a lighter start-up

    if version:
        if check:
            raise ConfigError("--check goes without --version", "`inv catalog --check` compares every framework's "
                              "default version; `inv lock --check` covers every version's locks")
        if frameworks and len(frameworks) > 1:
            raise ConfigError("--version goes with at most one --framework")
        return catalog_version(settings, (frameworks or [None])[0], version, prune=prune, engine=engine,
                               resolver=resolver)
    engine = engine if engine is not None else DockerEngine()
    drift = []
    bases = catalog_mod.discover(settings)
    for name in frameworks or list(settings.frameworks):
        framework = settings.framework_named(name)
        inventory = catalog_sync.probe(framework, plan_mod.image_ref(bases.base_for(name), settings), engine)
        derived = catalog_sync.derive(inventory, framework)
        entries = catalog_sync.sync(settings, framework, inventory, derived, prune=prune, dry_run=check,
                                    other_versions=_still_shipped(settings, framework, derived))
        _print_sync(inventory, entries, check)
        drift += [entry.directory for entry in entries if entry.change.writes]
        if not check:
            _record_sources(settings, framework, derived)
    page = settings.root / catalog_table.PAGE
    if check:
        if page.is_file() and not catalog_table.is_current(page.read_text(), _all_catalogs(settings)):
            drift.append(f"the catalog table in {catalog_table.PAGE}")
    elif _update_catalog_page(settings):
        console.print(f"Updated the catalog table in {catalog_table.PAGE}.")
    if check and drift:
        raise FactoryError(f"{len(drift)} item(s) differ from what the frameworks say: {', '.join(drift)}",
                           "run `inv catalog` and commit the result")
    if drift:
        console.print(f"{len(drift)} connector director(ies) written: run `inv lock` to lock them before building.")
    return 0


def _update_catalog_page(settings: Settings) -> bool:
    """The catalog table, with a column per supported version of each framework."""
    page = settings.root / catalog_table.PAGE
    reports = sorted((settings.output_path / "reports").glob("build-latest*.json"), key=lambda p: p.stat().st_mtime)
    return catalog_table.update_page(page, _all_catalogs(settings), *reports)


def _all_catalogs(settings: Settings) -> list:
    return [catalog_mod.discover(view) for view, _ in settings_mod.version_views(settings)]


def _still_shipped(settings: Settings, framework, derived) -> dict[str, str]:
    """Directory -> the other supported versions of `framework` whose catalog still has its source."""
    directories = catalog_mod.generated_directories(settings.images_dir, framework.name)
    present = {item.directory for item in derived}
    still: dict[str, list[str]] = {}
    for other in framework.supported:
        if other == framework.version:
            continue
        sources = versions_mod.read_catalog(settings.images_dir, framework.at(other)).sources
        for directory in directories - present:
            source = _source_of(settings, directory)
            if sources is not None and source in sources:
                still.setdefault(directory, []).append(other)
    return {directory: ", ".join(found) for directory, found in still.items()}


def _source_of(settings: Settings, directory: str) -> str:
    path = settings.images_dir / "connectors" / directory / catalog_mod.CONNECTOR_SETTINGS
    try:
        return str(catalog_mod.tomllib.loads(path.read_text()).get("source", directory))
    except (OSError, ValueError):
        return directory


def _record_sources(settings: Settings, framework, derived) -> None:
    """The version's catalog.toml gets the sources just read; its unavailable entries stay."""
    current = versions_mod.read_catalog(settings.images_dir, framework)
    versions_mod.write_catalog(settings.images_dir, framework, versions_mod.VersionCatalog(
        frozenset(item.source.name for item in derived), current.unavailable))


def catalog_version(settings: Settings, framework_name: str | None, version: str, *, prune: bool = False,
                    engine=None, resolver: lock_mod.Resolver | None = None) -> int:
    """inv catalog --version V: one framework version, added when new, in one command.

    1. a new version's directory starts from the default version's constraints and overrides;
    2. its base is locked and built (smoke-tested), then read for its sources (a failure here removes what
       step 1 wrote: nothing of a version that cannot install stays behind);
    3. a new version joins the framework's `versions` in pyproject.toml;
    4. when it is (or becomes) the default, the connector directories follow it (as `inv catalog`);
    5. its catalog.toml records its sources; every connector it ships is locked, and one whose resolution
       fails is recorded there as unavailable with uv's reason (the run goes on); one the index did not
       answer for is not recorded (exit 1: run it again);
    6. the report: sources only in V or not in V against another version, failed locks, and the other
       versions' locks a directory change made stale.
    """
    from ..workflows import catalog_sync  # only inv catalog needs it (and tomlkit): a lighter start-up

    owners = [f.name for f in settings.frameworks.values() if settings_mod.supported_spelling(f, version)]
    name = settings_mod.framework_of_version(settings, version, framework_name)
    if not framework_name and not owners and len(settings.frameworks) > 1:
        console.print(f"{version} is a new version of {name}, the default framework (--framework names another).",
                      highlight=False)
    framework_before = settings.framework_named(name)
    view = settings_mod.with_framework_version(settings, name, version, new=True)
    framework = view.frameworks[name]
    version = framework.version  # the settings' spelling of a supported version (2.0.7 is 2.0.7.0)
    added = version not in framework_before.supported
    newest = max([*framework_before.supported, version], key=Version)
    becomes_default = framework.is_default_version if not added else (
        version == newest and framework_before.default_version == framework_before.supported[0])
    if added:
        # The new version is supported from here on in this run, and in pyproject.toml once its base installs.
        view = replace(view, frameworks={**view.frameworks, name: replace(
            framework, versions=tuple(sorted({*framework_before.supported, version}, key=Version, reverse=True)),
            default_version=version if becomes_default else framework_before.default_version)})
        framework = view.frameworks[name]
    template = framework_before.at(framework_before.default_version or framework_before.version)
    version_dir = versions_mod.version_dir(view.images_dir, framework)
    created = added and not version_dir.exists()
    started = catalog_sync.start_version_dir(view, framework, template) if added else []
    for path in started:
        console.print(f"Started {path.relative_to(view.root)} from {template.version}'s: check its lines.",
                      highlight=False)
    console.print(f"[bold]{framework.package} {version}[/]: lock and build the base, read its sources, lock "
                  "its connectors.", highlight=False)
    base = catalog_mod.discover(view).base_for(name)
    try:
        _lock_or_fail(view, [base.name], f"the base of {framework.package} {version}", resolver)
        build(view, base_only=True, frameworks=[name], engine=engine)
        inventory = catalog_sync.probe(framework, plan_mod.image_ref(base, view),
                                       engine if engine is not None else DockerEngine())
    except BaseException:
        if created:  # a version that does not install leaves nothing behind (a typo'd version, say)
            shutil.rmtree(version_dir, ignore_errors=True)
            console.print(f"Removed {version_dir.relative_to(view.root)}: {version} was not added.", highlight=False)
        raise
    derived = catalog_sync.derive(inventory, framework)
    if added:
        path = catalog_sync.add_supported_version(view, framework)
        console.print(f"Added {version} to the versions of {name} in {path.name}"
                      + (" (the new default)." if becomes_default else ".")
                      + (" (invoke.yaml or the environment sets versions too: add it there)"
                         if _versions_set_elsewhere(settings, name) else ""), highlight=False)
    locks_before = _lock_states(settings, name, exclude=version)
    if becomes_default:
        entries = catalog_sync.sync(view, framework, inventory, derived, prune=prune,
                                    other_versions=_still_shipped(view, framework, derived))
        _print_sync(inventory, entries, False)
    sources = frozenset(item.source.name for item in derived)
    previous = versions_mod.read_catalog(view.images_dir, framework)
    # Reasons a person wrote stay; the ones this command wrote are decided again below.
    kept = {k: v for k, v in previous.unavailable.items() if not v.startswith(versions_mod.LOCK_FAILED)}
    versions_mod.write_catalog(view.images_dir, framework, versions_mod.VersionCatalog(sources, kept))
    catalog = catalog_mod.discover(view)
    names = [spec.name for spec in catalog.available_connectors if spec.framework.name == name]
    results = _run_locks(view, names, resolver)
    failed = {r.name: r.detail for r in results if r.status is lock_mod.LockStatus.FAILED and not r.transient
              and r.name in names}
    unanswered = [r.name for r in results if r.status.failed and r.name not in failed]
    versions_mod.write_catalog(view.images_dir, framework, versions_mod.VersionCatalog(
        sources, {**kept, **{n: versions_mod.LOCK_FAILED + m for n, m in failed.items()}}))
    reference = _reference_version(view.frameworks[name], version)
    reference_sources = versions_mod.read_catalog(view.images_dir, framework.at(reference)).sources if reference \
        else None
    appeared, vanished = catalog_sync.compare_sources(set(sources), set(reference_sources or ()))
    report = catalog_sync.VersionReport(name, framework.package, version, reference if reference_sources else "",
                                        tuple(sorted(sources)), appeared if reference_sources else (),
                                        vanished if reference_sources else (), failed, added,
                                        template.version if started else "")
    with_image = {spec.source for spec in catalog.available_connectors if spec.framework.name == name}
    _print_version_report(report, len(names), without_image=set(appeared) - with_image,
                          default=view.frameworks[name].default_version)
    stale = _lock_states(settings, name, exclude=version, before=locks_before)
    if stale:
        console.print(f"[yellow]The directories now follow {version}: {len(stale)} lock(s) of other versions no "
                      f"longer match their inputs ({', '.join(stale[:8])}{', ...' if len(stale) > 8 else ''}): "
                      "run `inv lock`[/]", highlight=False)
    if _update_catalog_page(view):
        console.print(f"Updated the catalog table in {catalog_table.PAGE}.")
    if unanswered:
        raise FactoryError(f"the package index did not answer for {len(unanswered)} lock(s): "
                           f"{', '.join(unanswered)}; they are not recorded as unavailable",
                           f"run again when the index answers: inv lock --version {version}")
    return 0


def _versions_set_elsewhere(settings: Settings, name: str) -> bool:
    """Whether invoke.yaml or INVOKE_FACTORY_* set this framework's versions (over pyproject.toml's)."""
    from_pyproject = settings_mod.pyproject_defaults(settings.root).get("frameworks", {}).get(name, {})
    return tuple(from_pyproject.get("versions", [from_pyproject.get("version")])) != \
        tuple(settings.framework_named(name).versions) and bool(settings.framework_named(name).versions)


def _lock_states(settings: Settings, name: str, *, exclude: str, before: dict | None = None):
    """The current locks of a framework's other versions ({(version, image)}), or, given `before`, those of
    them that are no longer current."""
    current = set()
    for version in settings.framework_named(name).supported:
        if version == exclude:
            continue
        view = settings_mod.with_framework_version(settings, name, version)
        targets = lock_mod.targets(catalog_mod.discover(view), view, only_framework=name)
        current |= {(version, c.name) for c in lock_mod.check(targets, view) if c.current}
    if before is None:
        return current
    return sorted(f"{image} ({version})" for version, image in before - current)


def _reference_version(framework, version: str) -> str:
    """What a version's catalog is compared with: the default, or for the default the next older one."""
    others = [v for v in framework.supported if v != version]
    if not others:
        return ""
    default = framework.default_version or framework.version
    if default != version and default in others:
        return default
    older = [v for v in others if Version(v) < Version(version)]
    return max(older, key=Version) if older else others[0]


def _lock_or_fail(settings: Settings, names: list[str], what: str, resolver=None) -> None:
    results = _run_locks(settings, names, resolver)
    failed = [r for r in results if r.status.failed]
    if failed:
        raise FactoryError(f"{what} cannot be locked: {failed[0].detail}",
                           "add a constraint or an override to the version's directory (see the lines above) "
                           "and run the command again")


def _run_locks(settings: Settings, names: list[str], resolver=None):
    """Lock these images (and what they are resolved under) for the settings' versions, printing progress."""
    catalog = catalog_mod.discover(settings)
    targets = lock_mod.targets(catalog, settings)
    selected = lock_mod.select(targets, names)
    started = time.monotonic()
    done = [0]

    def progress(name: str, text: str) -> None:
        if text in ("resolving", "checking wheels"):
            return
        done[0] += 1
        console.print(f"  [{done[0]}/{len(selected)}] {name}: {text}", highlight=False)

    console.print(f"Locking {len(selected)} image(s), {settings.jobs} at a time...", highlight=False)
    results = lock_mod.Locker(settings, targets, on_progress=progress, resolver=resolver or lock_mod.run_uv
                              ).run(selected, jobs=settings.jobs)
    _print_lock_results(settings, targets, results)
    console.print(f"{sum(not r.status.failed for r in results)} of {len(results)} locked "
                  f"({time.monotonic() - started:.1f}s)", highlight=False)
    return results


def _print_version_report(report, locked: int, without_image: set[str] = frozenset(), default: str = "") -> None:
    title = f"{report.package} {report.version}: {len(report.sources)} sources"
    if report.reference:
        title += f", against {report.reference}"
    table = Table(title=title, title_justify="left")
    for column in ("connector", "change", "detail"):
        table.add_column(column)
    for source in report.appeared:
        table.add_row(source, f"only in {report.version}", f"not in {report.reference}" + (
            f"; no image: the connector directories follow the default version, {default} (add one by hand: "
            "README, Adding a connector)" if source in without_image else ""))
    for source in report.vanished:
        table.add_row(source, f"not in {report.version}", f"in {report.reference}; unavailable for {report.version}")
    for name, reason in sorted(report.failed.items()):
        table.add_row(name, "lock failed", escape(reason))
    if table.row_count:
        console.print(table)
    console.print(f"Against {report.reference or 'no other version'}: {len(report.appeared)} source(s) only in "
                  f"{report.version}, {len(report.vanished)} not in it; "
                  f"{locked - len(report.failed)} of {locked} connectors locked, {len(report.failed)} failed "
                  f"(recorded as unavailable for {report.version}).", highlight=False)


def _print_sync(inventory, entries, check: bool) -> None:
    from ..workflows.catalog_sync import Change  # lazily, as in catalog()

    verb = "would be " if check else ""
    table = Table(title=f"{inventory.package} {inventory.version}: {len(inventory.sources)} sources",
                  title_justify="left")
    for column in ("connector", "change", "detail"):
        table.add_column(column)
    for entry in entries:
        if entry.change is not Change.UNCHANGED:
            table.add_row(entry.directory, verb + entry.change.value, escape(entry.detail))
    if table.row_count:
        console.print(table)
    counts = Counter(entry.change for entry in entries)
    console.print(", ".join(f"{count} {verb if change.writes else ''}{change.value}"
                            for change, count in counts.items()) or "nothing selected")


def lock(settings: Settings, names: list[str] | None = None, *, upgrade: bool = False,
         upgrade_packages: list[str] | None = None, check: bool = False, version: str | None = None) -> int:
    """inv lock: write the locks that do not match their inputs (or all with --upgrade), parents first, for
    every supported framework version (or the one `version` names)."""
    from packaging.utils import canonicalize_name

    upgrade_packages = [canonicalize_name(p) for p in upgrade_packages or []]
    if upgrade and upgrade_packages:
        raise ConfigError("--upgrade and --upgrade-package do not go together",
                          "--upgrade re-resolves everything; --upgrade-package moves only the packages named")
    if check and (upgrade or upgrade_packages):
        raise ConfigError("--check changes nothing, so it takes no --upgrade or --upgrade-package")
    views = settings_mod.selected_views(settings, version or ALL_VERSIONS)
    named = [n.removeprefix(catalog_mod.IMAGE_PREFIX) for n in names] if names else None
    prepared, refusals, lockable = [], {}, set()
    for view, varied in views:
        catalog = catalog_mod.discover(view)
        targets = lock_mod.targets(catalog, view, only_framework=varied)
        if named:
            here = [n for n in named if n in targets or (n in catalog and varied in (None, catalog[n].framework.name))]
            for name in here:
                try:  # an unavailable connector (or one built FROM it) is named with its reason, not as unknown
                    catalog.resolve([name]) if name in catalog else None
                    lockable.add(name)
                except ConfigError as error:
                    refusals.setdefault(name, error)
            if varied is not None and not any(n in targets for n in here):
                continue
        prepared.append((view, varied, catalog, targets))
    if named:
        # Unknown everywhere: the "no lock" error; unavailable in every version it was looked for in: why.
        unknown = [n for n in named if n not in lockable and n not in refusals]
        if unknown:
            lock_mod.select(prepared[0][3] if prepared else {}, unknown)
        refused = [n for n in named if n not in lockable]
        if refused:
            raise refusals[refused[0]]
    broken = prepared[0][2].broken if prepared else {}
    for name, error in broken.items():
        console.print(f"[bold red]{name} cannot be locked:[/] {escape(error.message)}", highlight=False)
    if check:
        return _check_locks(prepared, names, broken)
    if upgrade_packages:
        _require_locked_somewhere({str(t.path): t for _, _, _, targets in prepared for t in targets.values()},
                                  upgrade_packages)
    started = time.monotonic()
    results, stale = [], 0
    for view, varied, _catalog, targets in prepared:
        selected = lock_mod.select(targets, [n for n in named if n in targets] if named else None)
        if not selected:
            continue

        def progress(name: str, text: str) -> None:
            if text not in ("resolving", "checking wheels", str(lock_mod.LockStatus.UNCHANGED)):
                console.print(f"  {name}: {text}", highlight=False)

        label = ", ".join(f"{f.package} {f.version}" for f in view.frameworks.values() if varied in (None, f.name))
        console.print(f"Locking {len(selected)} image(s) of {label} for Python {view.python_version} on "
                      f"{view.lock_platform}, {view.jobs} at a time...", highlight=False)
        locker = lock_mod.Locker(view, targets, upgrade=upgrade, upgrade_packages=upgrade_packages,
                                 on_progress=progress)
        found = locker.run(selected, upgrade_names=named, jobs=view.jobs)
        _print_lock_results(view, targets, found)
        results += found
        if names:
            stale += sum(not c.current for c in lock_mod.check(targets, view))
    counts = ", ".join(f"{sum(r.status is status for r in results)} {status}"
                       for status in lock_mod.LockStatus if any(r.status is status for r in results))
    console.print(f"{counts or 'nothing to lock'} ({time.monotonic() - started:.1f}s)")
    write_json(settings.output_path / "reports" / "lock-latest.json", [], {
        "duration_s": round(time.monotonic() - started, 2),
        "locks": [r.as_json() for r in results],
    })
    failed = [r for r in results if r.status.failed]
    if failed:
        raise FactoryError(f"{len(failed)} lock(s) not written: {', '.join(r.name for r in failed)}",
                           "see uv's explanation above; the locks that were written are complete")
    if stale:
        console.print(f"[yellow]{stale} other lock(s) do not match their inputs (missing, or their "
                      f"parent's packages changed): run `inv lock`[/]")
    if broken:
        raise ConfigError(f"{len(broken)} connector(s) cannot be locked: {', '.join(broken)}",
                          "fix the files named above")
    return 0


def _require_locked_somewhere(targets, packages: list[str]) -> None:
    found = set()
    for target in targets.values():
        try:
            existing = lock_mod.read(target.path)
        except ConfigError:
            continue
        if existing:
            found |= existing.packages.keys()
    missing = [p for p in packages if p not in found]
    if missing:
        raise ConfigError(f"no lock contains {', '.join(missing)}", "name a package some image installs")


def _print_lock_results(settings: Settings, targets, results) -> None:
    """A per-image diff; a child whose changes are exactly its parent's says so instead of repeating them."""
    by_name = {r.name: r for r in results}
    for result in results:
        if result.status is lock_mod.LockStatus.FAILED:
            console.print(f"[bold red]{result.name}: lock failed[/]: {escape(result.detail)}", highlight=False)
            for line in result.details:
                console.print(f"    {escape(line)}", highlight=False)
            continue
        for warning in result.warnings:
            console.print(f"[yellow]{result.name}: {escape(warning)}[/]", highlight=False)
        if result.status not in (lock_mod.LockStatus.CREATED, lock_mod.LockStatus.UPDATED):
            continue
        where = result.path.relative_to(settings.root) if result.path.is_relative_to(settings.root) else result.path
        if result.status is lock_mod.LockStatus.CREATED:
            console.print(f"{result.name}: created {where} ({result.packages} packages)", highlight=False)
            continue
        parent = by_name.get(targets[result.name].parent or "")
        if parent and result.changes and set(result.changes) == set(parent.changes):
            console.print(f"{result.name}: the same changes as {parent.name}", highlight=False)
            continue
        if result.same_content:
            console.print(f"{result.name}: packages and hashes unchanged ({where} records its new inputs; its "
                          f"image and the locks built on it stay current)", highlight=False)
            continue
        if not result.changes:
            console.print(f"{result.name}: the same versions with other hashes ({where}; the index changed a "
                          f"file): its image and the locks built on it follow", highlight=False)
            continue
        console.print(f"{result.name} ({where}):", highlight=False)
        for change in result.changes:
            console.print(f"    {escape(str(change))}", highlight=False)


def _check_locks(prepared, names: list[str] | None, broken: dict) -> int:
    checks = []
    for view, _, _, targets in prepared:
        wanted = [n for n in names if n.removeprefix(catalog_mod.IMAGE_PREFIX) in targets] if names else None
        if names and not wanted:
            continue
        checks += [c for c in lock_mod.check(targets, view, wanted)
                   if not (c.name == lock_mod.SBOM_TOOL and any(x.name == c.name for x in checks))]
    bad = [c for c in checks if not c.current]
    for item in bad:
        label = f"{item.name} ({item.version})" if item.version else item.name
        console.print(f"{label}: {styled(item.state, item.detail)}", highlight=False)
    if bad:
        raise FactoryError(f"{len(bad)} of {len(checks)} lock(s) do not match their inputs: "
                           f"{', '.join(f'{c.name} ({c.version})' if c.version else c.name for c in bad)}",
                           f"run: {lock_mod.fix_command(bad)}")
    versions = len({c.version for c in checks if c.version})
    console.print(f"All {len(checks)} locks match their inputs ({versions} framework version(s)).")
    if broken:
        raise ConfigError(f"{len(broken)} connector(s) cannot be locked: {', '.join(broken)}",
                          "fix the files named above")
    return 0


def run_local(settings: Settings, connector: str | None = None, config: str | None = None, **options) -> int:
    """inv run-local: the connector's image (built first when missing, unless told not to) run here."""
    from . import run_local as run_local_command  # only inv run-local needs it: a lighter start-up

    return run_local_command.run_local(settings, connector, config, console=console, build_image=build, **options)


def sbom(settings: Settings, name: str, output: str | None = None) -> int:
    """inv sbom: write the SBOM an image carries (checked against its lock) to a file, or to stdout with '-'."""
    catalog = catalog_mod.discover(settings)
    key = name.removeprefix(catalog_mod.IMAGE_PREFIX)
    if key not in catalog:
        [key] = catalog.resolve([name])  # the unknown-connector error, with suggestions
    ref = plan_mod.image_ref(catalog[key], settings)
    engine = DockerEngine()
    to_stdout = output == "-"
    target = None if to_stdout else Path(output) if output else plan_mod.sbom_copies(settings) / f"{key}.cdx.json"
    document, summary = sbom_mod.export(engine, ref, target)
    if to_stdout:
        sys.stdout.write(document.decode())
        return 0
    console.print(f"{ref}: {len(summary.python)} Python packages (exactly its lock's), "
                  f"{len(summary.debian)} Debian packages -> {target}", highlight=False)
    return 0


def python_image(settings: Settings, *, force: bool = False, refresh: bool = False) -> int:
    """inv python-image: the Python runtime image from Debian packages (each target platform's)."""
    from ..engine import python_image as python_image_mod  # Debian's archive code: only this task needs it

    if refresh and force:
        raise ConfigError("--refresh and --force contradict each other", "give one of them")

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    if refresh:
        python_image_mod.refresh_all(settings, echo=say)
    else:
        python_image_mod.build_all(settings, force=force, echo=say)
    return 0
