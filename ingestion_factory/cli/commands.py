"""What each task does, without Invoke: tasks.py parses flags and calls these."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import platforms as platforms_mod
from ..engine.buildkit import find_cli
from ..engine.daemon import connect, plan_for, remove_replaced
from ..engine.verify import PIN_REPOSITORY
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model import catalog_table
from ..model import plan as plan_mod
from .. import interrupts
from ..model import shard as shard_mod
from ..model.plan import BLOCKED, Plan, platform_targets, require_buildable
from ..model.results import BuildStatus, Result, human_size, write_json
from ..settings import Settings
from ..workflows import lock as lock_mod
from ..workflows import sbom as sbom_mod
from ..workflows.builder import Builder
from .report import Progress, print_failures, summary_table

# Wide when piped (CI logs), so image names are never cut.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def print_plan(plan: Plan) -> None:
    table = Table(title="Build plan", title_justify="left")
    for column in ("image", "parent", "action", "why"):
        table.add_column(column)
    for item in plan:
        action = "build" if item.needs_build else ("blocked" if item.state == BLOCKED else "skip")
        table.add_row(escape(item.ref), escape(item.spec.parent or plan.python_image), action,
                      item.state.styled(item.reason))
    console.print(table)


def build(settings: Settings, names: list[str] | None = None, *, base_only: bool = False,
          frameworks: list[str] | None = None, force: bool = False, fail_fast: bool = False,
          plan_only: bool = False, no_cache: bool = False, shard: str | None = None, engine=None,
          reverify: bool = False) -> int:
    """Build what is stale among the named images (or all), on every target platform; returns the exit status
    or raises (docs/exit-codes.md). One plan per platform, built one platform after the other (the host's
    cores are the limit either way); the default platform alone is the ordinary case of it.

    `engine`: an (API client, image store) pair to use instead of the local engine (tests pass fakes)."""
    started = time.monotonic()
    catalog = catalog_mod.discover(settings)
    in_shard = _shard_filter(shard)
    if base_only:
        targets = [catalog.base_for(settings.framework_named(f).name).name for f in frameworks or [settings.framework]]
    else:
        targets = in_shard(catalog.resolve(names))
    chosen = settings.target_platforms
    several = chosen != (platforms_mod.DEFAULT,)
    platforms_mod.require_emulation(chosen)  # before anything is planned or built: exit 2 with the fix
    plans, skipped = [], []
    api = store = None
    for platform in chosen:
        usable, unavailable_here = platform_targets(catalog, targets, platform, settings)
        skipped += unavailable_here
        plan, api, store = plan_for(settings, catalog, usable, force=force, platform=platform, engine=engine)
        plans.append(plan)
    everything = not names and not base_only
    broken = catalog.broken if everything else {}
    for name, error in broken.items():
        console.print(f"[bold red]{name} cannot be built:[/] {escape(error.message)}", highlight=False)
    # Building "everything" passes over connectors that cannot exist here, and says so in the table.
    unavailable = [Result(spec.name, plan_mod.image_ref(spec, settings, platform), BuildStatus.UNAVAILABLE,
                          spec.unavailable, platform=platform.name)
                   for platform in chosen for spec in catalog.connectors if spec.unavailable] if everything else []
    unavailable = [r for r in unavailable if r.name in in_shard([r.name])]
    if plan_only:
        for plan in plans:
            print_plan(plan)
        raise_for_outcome([], broken, settings.output_path / "logs")
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
                      f"{settings.jobs} smoke tests at a time (logs in {settings.output_path / 'logs'}).")
    results: list[Result] = []
    warnings: list[str] = []
    # --cache-from serves the default platform's images; another platform's are built (its cache keys differ).
    cache = _open_cache(settings, api, warnings) if todo and settings.cache_from else None
    interrupted = None
    for plan in plans:
        if interrupted:
            results += [Result(item.name, item.ref, BuildStatus.NOT_BUILT,
                               f"interrupted ({interrupts.signal_name(interrupted)})", platform=plan.platform.name)
                        for item in plan]
            continue
        if fail_fast and any(r.result.failed for r in results):
            results += [Result(item.name, item.ref, BuildStatus.NOT_BUILT, "stopped by --fail-fast",
                               platform=plan.platform.name) for item in plan]
            continue
        sbom_dir = settings.output_path / "reports" / "sbom" / ("" if plan.platform.is_default
                                                                 else plan.platform.architecture)
        # With nothing to build the builder still runs: up-to-date images get this commit's tags.
        with Progress(plan.order, console) if plan.to_build else nullcontext() as progress:
            builder = Builder(settings, api, store, revision=plan.revision, progress=progress, no_cache=no_cache,
                              lock_digests={name: lock.digest for name, lock in locks.items()},
                              check_sbom=functools.partial(_check_sbom, api, sbom_dir),
                              cache=cache if plan.platform.is_default else None, reverify=reverify)
            built = [replace(r, platform=plan.platform.name)
                     for r in builder.run(plan, jobs=settings.jobs, fail_fast=fail_fast)]
        _remove_replaced(plan, built, api)
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
    raise_for_outcome(results, broken, settings.output_path / "logs")
    return 0


def _report_build(settings: Settings, results: list[Result], *, started: float, built_any: bool, up_to_date: str,
                  extra: dict, unavailable: list[Result], skipped: list[Result] = ()) -> None:
    """The end of every build run, on one platform or several: the JSON report, then the table or one line."""
    report = write_json(settings.output_path / "reports" / "build-latest.json", results,
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


def _check_sbom(api, output_dir: Path, image_id: str, name: str):
    return sbom_mod.verify_image(api, image_id, name, output_dir)


def _shard_filter(shard: str | None):
    """names -> the ones in this shard (--shard K/N); every name without a shard. Bad input: ConfigError."""
    if not shard:
        return lambda names: list(names)
    chosen = shard_mod.parse_shard(shard)
    return lambda names: shard_mod.select(list(names), chosen)


def _open_cache(settings: Settings, api, warnings: list[str]):
    """The registry cache (--cache-from), or None after one warning when it is down or refuses us."""
    from ..workflows.cache import open_cache  # only --cache-from needs it: a lighter start-up

    def warn(text: str) -> None:
        warnings.append(text)
        console.print(f"[yellow]{escape(text)}[/]")

    return open_cache(settings, api, settings.cache_from, warn=warn)


def _cache_report(settings: Settings, cache, results: list[Result], warnings: list[str]) -> dict:
    if not settings.cache_from:
        return {}
    return {"cache": {"registry": settings.cache_from, "used": bool(cache and not cache.off_reason),
                      "warnings": warnings,
                      "pulled": sum(1 for r in results if r.result == BuildStatus.PULLED),
                      "built": sum(1 for r in results if r.result == BuildStatus.BUILT),
                      "misses": cache.misses if cache else []}}


def _remove_replaced(plan: Plan, results: list[Result], api) -> None:
    """The images this run replaced would otherwise stay behind as gigabytes of untagged layers."""
    new_ids = {r.name: r.image_id for r in results if r.image_id}
    replaced = [item.current.id for item in reversed(list(plan)) if item.current
                and new_ids.get(item.name) not in (None, item.current.id)]
    if replaced:
        count, freed = remove_replaced(api, replaced, PIN_REPOSITORY)
        if count:
            console.print(f"Removed {count} replaced image(s), {human_size(freed)} (unshared layers freed).")


def raise_for_outcome(results: list[Result], broken: dict, log_dir: Path) -> None:
    """One rule for every build task: exit 1 when a build or smoke test failed, else 2 when input was bad.

    A failure wins over a broken connector directory: exit 2 promises that every image that could be
    built was built and verified, so a caller may go on; after a failed build it may not.
    """
    failed = [r.name for r in results if r.result.failed]
    cannot = f"{len(broken)} connector(s) cannot be built: {', '.join(broken)}"
    if failed:
        raise FactoryError(f"{len(failed)} image(s) not built: {', '.join(failed)}" + (f"; {cannot}" if broken else ""),
                           f"see the failures above and {log_dir}")
    if broken:
        raise ConfigError(cannot, "fix the files named above")


def list_images(settings: Settings, as_json: bool = False, matrix=None) -> int:
    """inv list: one row per image and target platform; a platform it cannot exist on says why."""
    catalog = catalog_mod.discover(settings)
    if matrix is not None:
        count = shard_mod.parse_count(matrix)
        print(json.dumps(shard_mod.matrix(catalog, [s.name for s in catalog.available_connectors], count), indent=2))
        return 0
    chosen = settings.target_platforms
    several = chosen != (platforms_mod.DEFAULT,)
    rows = []
    for name, error in catalog.broken.items():
        rows.append({"name": name, "image": settings.repository(catalog_mod.IMAGE_PREFIX + name), "kind": "connector",
                     "framework": "?", "parent": "?", "platform": "?", "state": f"broken: {error.message}",
                     "image_id": None, "size": None})
    for platform in chosen:
        usable, _ = platform_targets(catalog, [s.name for s in catalog if not s.unavailable], platform, settings)
        try:
            plan, _, _ = plan_for(settings, catalog, usable, platform=platform)
            states = {item.name: item for item in plan}
        except FactoryError as exc:
            if as_json:
                raise
            console.print(f"[yellow]{exc.message}: states unknown[/]")
            states = {}
        for spec in catalog:
            item = states.get(spec.name)
            reason = spec.unavailable or catalog.unavailable_on(spec, platform)
            state = f"unavailable: {reason}" if reason else (item.state if item else "unknown")
            rows.append({
                "name": spec.name,
                "image": item.ref if item else plan_mod.image_ref(spec, settings, platform).rpartition(":")[0],
                "kind": spec.kind,
                "framework": spec.framework.name,
                "platform": platform.name,
                "parent": catalog[spec.parent].image_name if spec.parent else settings.python_image,
                "state": state,
                "image_id": item.current.id if item and item.current else None,
                "size": item.current.size if item and item.current else None,
                "description": spec.description,
                "source": spec.source,
                "unavailable_platforms": dict(spec.unavailable_platforms),
            })
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    columns = ("image", "platform", "framework", "parent", "state", "size") if several else \
        ("image", "framework", "parent", "state", "size")
    table = Table(title=f"{len(rows)} images", title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(human_size(row["size"]) if column == "size" else str(row[column]) for column in columns))
    console.print(table)
    return 0


def catalog(settings: Settings, frameworks: list[str] | None = None, *, prune: bool = False,
            check: bool = False, engine=None) -> int:
    """inv catalog: derive connector directories from each framework's base image; 1 with --check on drift."""
    from ..workflows import catalog_sync  # only inv catalog needs it (and tomlkit): a lighter start-up

    api, _ = engine if engine is not None else connect()
    drift = []
    bases = catalog_mod.discover(settings)
    for name in frameworks or list(settings.frameworks):
        framework = settings.framework_named(name)
        inventory = catalog_sync.probe(framework, plan_mod.image_ref(bases.base_for(name), settings), api)
        derived = catalog_sync.derive(inventory, framework)
        entries = catalog_sync.sync(settings, framework, inventory, derived, prune=prune, dry_run=check)
        _print_sync(inventory, entries, check)
        drift += [entry.directory for entry in entries if entry.change.writes]
    page = settings.root / catalog_table.PAGE
    found = catalog_mod.discover(settings)
    if check:
        if page.is_file() and not catalog_table.is_current(page.read_text(), found):
            drift.append(f"the catalog table in {catalog_table.PAGE}")
    elif catalog_table.update_page(page, found, settings.output_path / "reports" / "build-latest.json"):
        console.print(f"Updated the catalog table in {catalog_table.PAGE}.")
    if check and drift:
        raise FactoryError(f"{len(drift)} item(s) differ from what the frameworks say: {', '.join(drift)}",
                           "run `inv catalog` and commit the result")
    if drift:
        console.print(f"{len(drift)} connector director(ies) written: run `inv lock` to lock them before building.")
    return 0


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
         upgrade_packages: list[str] | None = None, check: bool = False) -> int:
    """inv lock: write the locks that do not match their inputs (or all with --upgrade), parents first."""
    from packaging.utils import canonicalize_name

    upgrade_packages = [canonicalize_name(p) for p in upgrade_packages or []]
    if upgrade and upgrade_packages:
        raise ConfigError("--upgrade and --upgrade-package do not go together",
                          "--upgrade re-resolves everything; --upgrade-package moves only the packages named")
    if check and (upgrade or upgrade_packages):
        raise ConfigError("--check changes nothing, so it takes no --upgrade or --upgrade-package")
    catalog = catalog_mod.discover(settings)
    targets = lock_mod.targets(catalog, settings)
    for name, error in catalog.broken.items():
        console.print(f"[bold red]{name} cannot be locked:[/] {escape(error.message)}", highlight=False)
    if names:  # an unavailable connector (or one built FROM it) is named with its reason, not as unknown
        catalog.resolve([n for n in names if n.removeprefix(catalog_mod.IMAGE_PREFIX) in catalog])
    if check:
        return _check_locks(settings, targets, names, catalog.broken)
    selected = lock_mod.select(targets, names)
    if upgrade_packages:
        _require_locked_somewhere(targets, upgrade_packages)
    started = time.monotonic()
    named = [n.removeprefix(catalog_mod.IMAGE_PREFIX) for n in names] if names else None

    def progress(name: str, text: str) -> None:
        if text not in ("resolving", "checking wheels", str(lock_mod.LockStatus.UNCHANGED)):
            console.print(f"  {name}: {text}", highlight=False)

    console.print(f"Locking {len(selected)} image(s) for Python {settings.python_version} on "
                  f"{settings.lock_platform}, {settings.jobs} at a time...")
    locker = lock_mod.Locker(settings, targets, upgrade=upgrade, upgrade_packages=upgrade_packages,
                             on_progress=progress)
    results = locker.run(selected, upgrade_names=named, jobs=settings.jobs)
    _print_lock_results(settings, targets, results)
    counts = ", ".join(f"{sum(r.status is status for r in results)} {status}"
                       for status in lock_mod.LockStatus if any(r.status is status for r in results))
    console.print(f"{counts} ({time.monotonic() - started:.1f}s)")
    write_json(settings.output_path / "reports" / "lock-latest.json", [], {
        "duration_s": round(time.monotonic() - started, 2),
        "locks": [{"name": r.name, "path": str(r.path), "status": str(r.status), "message": r.message,
                   "packages": r.packages, "changes": [str(c) for c in r.changes]} for r in results],
    })
    failed = [r for r in results if r.status.failed]
    if failed:
        raise FactoryError(f"{len(failed)} lock(s) not written: {', '.join(r.name for r in failed)}",
                           "see uv's explanation above; the locks that were written are complete")
    if names:
        stale = [c for c in lock_mod.check(targets, settings) if not c.current]
        if stale:
            console.print(f"[yellow]{len(stale)} other lock(s) do not match their inputs (missing, or their "
                          f"parent's packages changed): run `inv lock`[/]")
    if catalog.broken:
        raise ConfigError(f"{len(catalog.broken)} connector(s) cannot be locked: {', '.join(catalog.broken)}",
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
            console.print(f"[bold red]{result.name}: lock failed[/]: {escape(result.message)}", highlight=False)
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


def _check_locks(settings: Settings, targets, names: list[str] | None, broken: dict) -> int:
    checks = lock_mod.check(targets, settings, names)
    bad = [c for c in checks if not c.current]
    for item in bad:
        console.print(f"{item.name}: {item.state.styled(item.detail)}", highlight=False)
    if bad:
        raise FactoryError(f"{len(bad)} of {len(checks)} lock(s) do not match their inputs: "
                           f"{', '.join(c.name for c in bad)}", f"run: {lock_mod.fix_command(bad)}")
    console.print(f"All {len(checks)} locks match their inputs.")
    if broken:
        raise ConfigError(f"{len(broken)} connector(s) cannot be locked: {', '.join(broken)}",
                          "fix the files named above")
    return 0


def run_local(settings: Settings, connector: str | None = None, config: str | None = None, **options) -> int:
    """inv run-local: the connector's image (built first when missing, unless told not to) run here."""
    from ..workflows import local_run  # only inv run-local needs it: a lighter start-up

    return local_run.run_local(settings, connector, config, console=console, build_image=build, **options)


def sbom(settings: Settings, name: str, output: str | None = None) -> int:
    """inv sbom: write the SBOM an image carries (checked against its lock) to a file, or to stdout with '-'."""
    catalog = catalog_mod.discover(settings)
    key = name.removeprefix(catalog_mod.IMAGE_PREFIX)
    if key not in catalog:
        [key] = catalog.resolve([name])  # the unknown-connector error, with suggestions
    ref = plan_mod.image_ref(catalog[key], settings)
    api, _ = connect()
    to_stdout = output == "-"
    target = None if to_stdout else Path(output) if output else settings.output_path / "reports" / "sbom" / f"{key}.cdx.json"
    document, summary = sbom_mod.export(api, ref, target)
    if to_stdout:
        sys.stdout.write(document.decode())
        return 0
    console.print(f"{ref}: {len(summary.python)} Python packages (exactly its lock's), "
                  f"{len(summary.debian)} Debian packages -> {target}", highlight=False)
    return 0
