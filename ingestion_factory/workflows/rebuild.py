"""`inv rebuild`: build an image again from the inputs it records, with no build cache, and compare the IDs.

An image's ID follows from its inputs (docs/reproducibility.md), so a second build must give the same ID. The
image must be what this checkout builds (the plan finds it up to date: the same files, locks and parent),
else the rebuild would compare other inputs: that is bad input (exit 2), naming the revision it was built
at. It is rebuilt in a scratch namespace of its own (the run's tags stay untouched), FROM the very parent it
records (tagged there under the parent's name, so the plan takes it as up to date), labelled with the
revision it records, with BuildKit's cache off. Identical: the one ID. Different: both images are saved and
compared layer by layer (model/image_diff.py), naming the paths whose content, mode, owner or mtime differ.
The scratch namespace goes afterwards, unless kept to look at (`keep`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine.daemon import plan_for
from ..engine.docker_engine import Engine, EngineError
from ..errors import ConfigError, FactoryError
from ..model import image_diff
from ..model.catalog import Catalog
from ..model.plan import LABEL_EPOCH, LABEL_REVISION, Plan, image_ref
from ..model.results import StepResult, StepStatus
from ..platforms import Platform
from ..progress import Progress
from ..settings import Settings
from . import lock as lock_mod
from .builder import Builder, BuildProgress

# What the cli passes to watch the one build: a context manager giving the Builder's progress for a plan.
BuildDisplay = Callable[[Plan], contextlib.AbstractContextManager[BuildProgress | None]]


class RebuildStatus(StepStatus):
    IDENTICAL = "identical", "green"
    DIFFERENT = "different", "bold red"
    NOT_REBUILT = "not rebuilt", "bold red"  # the build itself failed: nothing to compare

    @property
    def failed(self) -> bool:
        return self is not RebuildStatus.IDENTICAL


@dataclass(frozen=True, kw_only=True)
class RebuildResult(StepResult):
    """One image rebuilt and compared: `diff` says how the rebuild differs (None when identical or not built)."""

    JSON_KEYS = ("name", "status", "detail", "duration_s", "ref", "platform", "image_id", "rebuilt_id",
                 "source_date_epoch", "revision", "diff", "log")

    status: RebuildStatus
    ref: str
    platform: str
    image_id: str
    rebuilt_id: str = ""
    source_date_epoch: str = ""
    revision: str = ""
    diff: image_diff.ImageDiff | None = None
    log: str = ""
    kept: tuple[str, ...] = ()  # the rebuilt image's tags, when kept to look at


def rebuild(settings: Settings, catalog: Catalog, names: list[str], *, engine: Engine, progress: Progress,
            display: BuildDisplay, keep: bool = False) -> list[RebuildResult]:
    """Each named image, on each target platform, rebuilt and compared; bad input raises ConfigError first."""
    if not names:
        raise ConfigError("name the images to rebuild", "inv rebuild -c NAME (repeatable; `inv list` shows them)")
    for name in names:
        catalog.resolve([name])  # an unknown name: ConfigError with the names it might be
    results = []
    for platform in settings.target_platforms:
        for name in names:
            results.append(_rebuild_one(settings, catalog, name, platform, engine, progress, display, keep))
    return results


def _rebuild_one(settings: Settings, catalog: Catalog, name: str, platform: Platform, engine: Engine,
                 progress: Progress, display: BuildDisplay, keep: bool) -> RebuildResult:
    started = time.monotonic()
    plan, _ = plan_for(settings, catalog, [name], platform=platform, engine=engine)
    item = plan.items[name]
    original = item.current
    if original is None:
        raise ConfigError(f"{item.ref} is not in the engine: there is nothing to compare a rebuild with",
                          f"build it first: inv build-connectors -c {name}" + _platform_flag(platform))
    recorded_revision = original.labels.get(LABEL_REVISION, "")
    if item.needs_build:
        raise ConfigError(f"{item.ref} is not what this checkout builds ({item.reason})",
                          f"check out the revision it was built at ({recorded_revision or 'not recorded'}) and "
                          "rebuild there, or build it anew first (inv build-connectors)")
    scratch = dataclasses.replace(settings, namespace=f"{settings.namespace}-rebuild-{uuid.uuid4().hex[:8]}",
                                  output_dir=str(Path(settings.output_dir) / "rebuild"))
    scratch_prefix = image_ref(item.spec, scratch, platform).rpartition("/")[0] + "/"
    common = {"ref": item.ref, "platform": platform.name, "image_id": original.id, "revision": recorded_revision,
              "source_date_epoch": original.labels.get(LABEL_EPOCH, "")}
    kept: tuple[str, ...] = ()
    try:
        # The parents, exactly as recorded: the same image IDs under the scratch namespace's names.
        for ancestor in plan:
            if ancestor.name != name and ancestor.current is not None:
                repository, _, tag = image_ref(ancestor.spec, scratch, platform).rpartition(":")
                engine.tag(ancestor.current.id, repository, tag)
        scratch_plan, _ = plan_for(scratch, catalog, [name], platform=platform, engine=engine)
        others = [i.name for i in scratch_plan.to_build if i.name != name]
        if others:
            raise FactoryError(f"rebuilding {name} would build its parents too ({', '.join(others)}): their "
                               "recorded images do not match this checkout")
        locks = lock_mod.require_current(lock_mod.targets(catalog, settings), settings, [lock_mod.SBOM_TOOL, name])
        progress.say(f"Rebuilding {item.ref} ({original.id[7:19]}) from its recorded inputs: revision "
                     f"{recorded_revision or '-'}, SOURCE_DATE_EPOCH {common['source_date_epoch'] or '-'}, "
                     "no build cache...")
        with display(scratch_plan) as watch:
            builder = Builder(scratch, engine, revision=recorded_revision or None, progress=watch, no_cache=True,
                              lock_digests={n: lock.digest for n, lock in locks.items()})
            built = next(r for r in builder.run(scratch_plan, jobs=1, fail_fast=True) if r.name == name)
        if built.failed or not built.image_id:
            return RebuildResult(name=name, status=RebuildStatus.NOT_REBUILT, detail=built.detail or "not built",
                                 duration_s=round(time.monotonic() - started, 2), log=built.log, **common)
        if built.image_id == original.id:
            return RebuildResult(name=name, status=RebuildStatus.IDENTICAL, rebuilt_id=built.image_id,
                                 duration_s=round(time.monotonic() - started, 2), log=built.log, **common)
        difference = compare(engine, original.id, built.image_id, progress)
        if keep:
            kept = tuple(t for t in built.tags if t.startswith(scratch_prefix)) or tuple(built.tags)
        return RebuildResult(name=name, status=RebuildStatus.DIFFERENT, rebuilt_id=built.image_id, diff=difference,
                             detail=summary(difference), duration_s=round(time.monotonic() - started, 2),
                             log=built.log, kept=kept, **common)
    finally:
        _remove_scratch(engine, scratch_prefix, keep=set(kept))


def compare(engine: Engine, original_id: str, rebuilt_id: str, progress: Progress) -> image_diff.ImageDiff:
    """Both images in one save (their shared layers stored once), spooled to a temporary file (a layer can be
    hundreds of MB, and the archive is read by seeking), then compared."""
    with tempfile.TemporaryFile(prefix="factory-rebuild-") as spool:
        with progress.transfer(f"saving {original_id[7:19]} and {rebuilt_id[7:19]} to compare them") as advance:
            for chunk in engine.save([original_id, rebuilt_id]):
                spool.write(chunk)
                advance(len(chunk))
        spool.seek(0)
        with progress.status("comparing the two images layer by layer"):
            return image_diff.diff_saved_images(spool, original_id, rebuilt_id)


def summary(difference: image_diff.ImageDiff) -> str:
    """One line: how many config keys and layers differ, and the first differing paths."""
    changes = [change for layer in difference.differing_layers for change in layer.changes]
    # What was changed inside a directory says more than the directory: entries that are not directories first.
    paths = [c.path for c in sorted(changes, key=lambda c: getattr(c.after or c.before, "kind", "") == "dir")]
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    parts = [f"{len(difference.config_changes)} config key(s)", f"{len(difference.differing_layers)} layer(s) differ"]
    return "; ".join(parts) + (f": {shown}" if shown else "")


def _remove_scratch(engine: Engine, prefix: str, *, keep: set[str]) -> None:
    """Every tag under the scratch namespace (an image goes with its last tag; the originals keep theirs)."""
    try:
        images = engine.images()
    except EngineError:
        return
    for info in images:
        for tag in info.tags:
            if tag.startswith(prefix) and tag not in keep:
                with contextlib.suppress(EngineError):
                    engine.untag(tag)


def _platform_flag(platform: Platform) -> str:
    return "" if platform.is_default else f" --platform {platform.name}"

