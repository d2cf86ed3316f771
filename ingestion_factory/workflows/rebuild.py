"""`inv rebuild`: build an image again from the inputs it records, with no build cache, and compare the IDs.

An image's ID follows from its inputs (docs/reproducibility.md), so a second build must give the same ID. Each
image is rebuilt in a scratch namespace of its own (`<namespace>-rebuild-<8 hex>`): the image's own tags and
the engine's other images are never moved, and the original gets a scratch tag too, so nothing that runs
meanwhile can remove it. What the build takes from the record rather than from this checkout: the parent, by
image ID (the `parent-id` label; tagged in the scratch namespace under the parent's name, or as the scratch
Python image for a base), the revision, the SOURCE_DATE_EPOCH and the source URL. What it takes from the
checkout (files, locks) must be what the image was built from: the rebuild's inputs hash is compared with the
image's before anything is built, and a difference is bad input (exit 2) naming the revision to check out.

Every (platform, image) pair is checked before the first build. Identical: the one ID. Different: both
images are saved in one archive and compared layer by layer (model/image_diff.py). Every scratch tag goes
afterwards, whatever happened, unless a differing rebuild is kept to look at (`keep`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..engine.daemon import plan_for
from ..engine.docker_engine import Engine, EngineError, describe, spool_save
from ..errors import ConfigError, FactoryError
from ..model import image_diff
from ..model.catalog import Catalog
from ..model.names import python_image_ref
from ..model.plan import (
    BLOCKED,
    LABEL_EPOCH,
    LABEL_INPUTS,
    LABEL_PARENT,
    LABEL_REVISION,
    ImageInfo,
    Plan,
    image_ref,
    platform_targets,
    require_buildable,
)
from ..model.results import StepResult, StepStatus
from ..platforms import DEFAULT as DEFAULT_PLATFORM
from ..platforms import Platform, require_emulation
from ..progress import Progress
from ..settings import Settings
from . import lock as lock_mod
from .builder import Builder, BuildProgress

# What the cli passes to watch the one build: a context manager giving the Builder's progress for a plan.
BuildDisplay = Callable[[Plan], contextlib.AbstractContextManager[BuildProgress | None]]
ORIGINAL_TAG = "original"  # the scratch tag that keeps the image compared with from being removed meanwhile


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
                 "source_date_epoch", "revision", "parent_id", "diff", "log", "kept")

    status: RebuildStatus
    ref: str
    platform: str
    image_id: str
    rebuilt_id: str = ""
    source_date_epoch: str = ""
    revision: str = ""
    parent_id: str = ""
    diff: image_diff.ImageDiff | None = None
    log: str = ""
    kept: tuple[str, ...] = ()  # the rebuilt image's references, when kept to look at


@dataclass(frozen=True)
class Prepared:
    """One image ready to be rebuilt: its scratch settings and plan (the parent tagged there by its ID)."""

    name: str
    platform: Platform
    ref: str
    original: ImageInfo
    scratch: Settings
    plan: Plan
    repository: str  # the image's repository under the scratch namespace

    @property
    def namespace(self) -> str:
        return self.scratch.namespace

    @property
    def labels(self) -> dict[str, str]:
        return self.original.labels


def rebuild(settings: Settings, catalog: Catalog, names: list[str], *, engine: Engine, progress: Progress,
            display: BuildDisplay, keep: bool = False,
            make_builder: Callable[..., Builder] = Builder) -> list[RebuildResult]:
    """Each named image, on each target platform, rebuilt and compared. Bad input raises ConfigError before
    anything is built; an interrupt is raised again once the scratch tags are gone."""
    if not names:
        raise ConfigError("name the images to rebuild", "inv rebuild -c NAME (repeatable; `inv list` shows them)")
    names = list(dict.fromkeys(catalog.resolve(names)))  # an unknown name: ConfigError naming what it might be
    require_emulation(list(settings.target_platforms))
    prepared: list[Prepared] = []
    try:
        for platform in settings.target_platforms:
            usable, unavailable = platform_targets(catalog, names, platform, settings)
            if unavailable:
                raise ConfigError(f"{unavailable[0].name} cannot be built for {platform}: {unavailable[0].detail}")
            for name in usable:
                prepared.append(_prepare(settings, catalog, name, platform, engine))
        locks = lock_mod.require_current(lock_mod.targets(catalog, settings), settings,
                                         [lock_mod.SBOM_TOOL, *names])
    except BaseException:
        for ready in prepared:
            _remove_scratch(engine, ready.namespace, keep=set())
        raise
    results: list[RebuildResult] = []
    for index, ready in enumerate(prepared):
        try:
            results.append(_rebuild_one(ready, engine, progress, display, keep,
                                        {n: lock.digest for n, lock in locks.items()}, make_builder))
        except BaseException:
            for rest in prepared[index:]:
                _remove_scratch(engine, rest.namespace, keep=set())
            raise
    return results


def _prepare(settings: Settings, catalog: Catalog, name: str, platform: Platform, engine: Engine) -> Prepared:
    """Check one image against this checkout and lay out its scratch namespace; ConfigError when it cannot be
    rebuilt here (the scratch tags made so far are removed)."""
    spec = catalog[name]
    ref = image_ref(spec, settings, platform)
    original = engine.inspect(ref)
    if original is None:
        build = (f"inv build-base --framework {spec.framework.name}" if spec.parent is None
                 else f"inv build-connectors -c {name}")
        raise ConfigError(f"{ref} is not in the engine: there is nothing to compare a rebuild with",
                          f"build it first: {build}" + ("" if platform.is_default else f" --platform {platform}"))
    parent_id = original.labels.get(LABEL_PARENT, "")
    if not parent_id or engine.inspect(parent_id) is None:
        raise ConfigError(f"{ref} records its parent as {parent_id or 'nothing'}, which is not in the engine",
                          "a rebuild starts from the very parent image the original was built FROM: load or pull "
                          "it (or rebuild the image anew: inv build-connectors)")
    namespace = f"{settings.namespace or 'factory'}-rebuild-{uuid.uuid4().hex[:8]}"
    # The Python image of the scratch settings is a scratch tag too: the chain's recorded root goes there.
    scratch = dataclasses.replace(settings, namespace=namespace, python_image=f"{namespace}/python:scratch",
                                  output_dir=os.path.join(settings.output_dir, "rebuild", namespace))
    repository = image_ref(spec, scratch, platform).rpartition(":")[0]
    try:
        _tag(engine, original.id, f"{repository}:{ORIGINAL_TAG}")
        # Up the chain, each image the one its child records as its parent; the root's parent is the Python image.
        level, recorded_parent = spec, parent_id
        while level.parent is not None:
            level = catalog[level.parent]
            _tag(engine, recorded_parent, image_ref(level, scratch, platform))
            above = engine.inspect(recorded_parent)
            recorded_parent = above.labels.get(LABEL_PARENT, "") if above else ""
            if not recorded_parent or engine.inspect(recorded_parent) is None:
                raise ConfigError(f"{level.name}, the parent {ref} was built FROM, records its own parent as "
                                  f"{recorded_parent or 'nothing'}, which is not in the engine",
                                  "a rebuild starts from the very images the original was built on")
        _tag(engine, recorded_parent, python_image_ref(scratch, platform))
        if not platform.is_default:  # cross-installs run on the build platform's Python image: today's
            build_python = engine.inspect(python_image_ref(settings, DEFAULT_PLATFORM))
            if build_python is not None:
                _tag(engine, build_python.id, python_image_ref(scratch, DEFAULT_PLATFORM))
        plan, _ = plan_for(scratch, catalog, [name], platform=platform, engine=engine)
        require_buildable(plan)
        item = plan.items[name]
        others = [i.name for i in plan.to_build if i.name != name]
        recorded_inputs = original.labels.get(LABEL_INPUTS, "")
        if others or item.state == BLOCKED or item.input_hash != recorded_inputs:
            revision = original.labels.get(LABEL_REVISION, "") or "not recorded"
            why = (f"the images it was built on are not what this checkout builds either ({', '.join(others)})"
                   if others else f"inputs hash {_short(item.input_hash or '')} here, "
                                  f"{_short(recorded_inputs) or 'none'} recorded")
            raise ConfigError(f"{ref} is not what this checkout builds: {why}",
                              f"check out the revision it was built at ({revision}) and rebuild there")
        return Prepared(name, platform, ref, original, scratch, plan, repository)
    except BaseException:
        _remove_scratch(engine, namespace, keep=set())
        raise


def _rebuild_one(ready: Prepared, engine: Engine, progress: Progress, display: BuildDisplay, keep: bool,
                 lock_digests: dict[str, str], make_builder: Callable[..., Builder]) -> RebuildResult:
    started = time.monotonic()
    labels = ready.labels
    common = {"name": ready.name, "ref": ready.ref, "platform": ready.platform.name, "image_id": ready.original.id,
              "revision": labels.get(LABEL_REVISION, ""), "source_date_epoch": labels.get(LABEL_EPOCH, ""),
              "parent_id": labels.get(LABEL_PARENT, "")}
    kept: tuple[str, ...] = ()
    try:
        progress.say(f"Rebuilding {ready.ref} ({_short(ready.original.id)}) from its recorded inputs: parent "
                     f"{_short(common['parent_id'])}, revision {common['revision'] or '-'}, SOURCE_DATE_EPOCH "
                     f"{common['source_date_epoch'] or '-'}, no build cache...")
        with display(ready.plan) as watch:
            builder = make_builder(ready.scratch, engine, revision=common["revision"] or None, progress=watch,
                                   no_cache=True, lock_digests=lock_digests, recorded={ready.name: labels})
            # The image compared with is never the builder's to remove (a re-stamp may land on it).
            builder.preexisting.add(ready.original.id)
            built = next(r for r in builder.run(ready.plan, jobs=1, fail_fast=True) if r.name == ready.name)
        if builder.interrupted:
            raise builder.interrupted
        seconds = {"duration_s": round(time.monotonic() - started, 2), "log": built.log}
        if built.failed or not built.image_id:
            return RebuildResult(status=RebuildStatus.NOT_REBUILT, detail=built.detail or "not built", **seconds,
                                 **common)
        if built.image_id == ready.original.id:
            return RebuildResult(status=RebuildStatus.IDENTICAL, rebuilt_id=built.image_id, **seconds, **common)
        try:
            difference = compare(engine, ready.original.id, built.image_id, progress)
        except (EngineError, OSError) as exc:
            raise FactoryError(f"comparing {ready.ref} with its rebuild {_short(built.image_id)} failed: "
                               f"{describe(exc)}") from None
        if keep:
            kept = tuple(f"{ready.repository}:{tag}" for tag in built.tags)
        return RebuildResult(status=RebuildStatus.DIFFERENT, rebuilt_id=built.image_id, diff=difference,
                             detail=summary(difference), kept=kept,
                             duration_s=round(time.monotonic() - started, 2), log=built.log, **common)
    finally:
        _remove_scratch(engine, ready.namespace, keep=set(kept))


def compare(engine: Engine, original_id: str, rebuilt_id: str, progress: Progress) -> image_diff.ImageDiff:
    """Both images in one save (their shared layers stored once), spooled to a temporary file (a layer can be
    hundreds of MB, and the archive is read by seeking; FACTORY_TMPDIR chooses where), then compared."""
    saving = f"saving {_short(original_id)} and {_short(rebuilt_id)} to compare them"
    with progress.transfer(saving) as advance, spool_save(engine, [original_id, rebuilt_id],
                                                          os.environ.get("FACTORY_TMPDIR"), advance) as spool:
        with progress.status("comparing the two images layer by layer"):
            return image_diff.diff_saved_images(spool, original_id, rebuilt_id)


def summary(difference: image_diff.ImageDiff) -> str:
    """One line: how many config keys and layers differ, and the first differing paths (files before the
    directories that hold them: what was changed says more than where)."""
    changes = [change for layer in difference.differing_layers for change in layer.changes]
    paths = [c.path for c in sorted(changes, key=lambda c: getattr(c.after or c.before, "kind", "") == "dir")]
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    parts = [f"{len(difference.config_changes)} config key(s)", f"{len(difference.differing_layers)} layer(s) differ"]
    return "; ".join(parts) + (f": {shown}" if shown else "")


def _tag(engine: Engine, image_id: str, ref: str) -> None:
    repository, _, tag = ref.rpartition(":")
    engine.tag(image_id, repository, tag)


def _remove_scratch(engine: Engine, namespace: str, *, keep: set[str]) -> None:
    """Every tag under the scratch namespace, registry prefix or not (an image goes with its last tag; the
    originals keep theirs)."""
    with contextlib.suppress(EngineError):
        for info in engine.images():
            for tag in info.tags:
                if f"/{namespace}/" in f"/{tag}" and tag not in keep:
                    with contextlib.suppress(EngineError):
                        engine.untag(tag)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]

