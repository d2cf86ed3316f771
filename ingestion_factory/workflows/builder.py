"""Runs a plan: builds in dependency order, each one build -> verify -> tag.

Up to `jobs` BuildKit builds run at once, and up to `jobs` verifications (smoke test, SBOM check) beside
them: a build mostly waits on downloads and disk while a smoke test mostly imports the framework, so one
image's build overlaps another's smoke test instead of waiting for its slot.
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Protocol

from .. import interrupts
from ..engine import buildkit, normalize, verify
from ..engine.docker_engine import Engine
from ..errors import ConfigError
from ..model.catalog import BASE, framework_drift
from ..model.failures import Cause, Diagnosis, StepFailed, diagnose
from ..model.plan import (
    BLOCKED,
    FORCED,
    LABEL_EPOCH,
    LABEL_FRAMEWORK,
    LABEL_FRAMEWORK_VERSION,
    LABEL_INPUTS,
    LABEL_LOCK,
    LABEL_NAME,
    LABEL_PARENT,
    LABEL_PLATFORM,
    LABEL_RESOLUTION,
    LABEL_REVISION,
    LABEL_SBOM,
    LABEL_SOURCE,
    SBOM_PATH,
    Plan,
    PlanItem,
    build_logs,
    input_hash,
)
from ..model.results import BuildStatus, Result, human_size
from ..model.runtime_modules import runtime_redaction
from ..settings import Settings
from . import lock as lock_mod
from . import reproducible

# buildkit.build: (request, on_progress=...) -> new image ID; raises StepFailed.
BuildRunner = Callable[..., str]
# verify.smoke_test bound to an engine: image ID -> SmokeResult; raises StepFailed.
SmokeTester = Callable[[str], verify.SmokeResult]
# sbom.verify_image bound to an engine: (image ID, image name) -> anything; raises StepFailed.
SbomChecker = Callable[[str, str], object]


class BuildProgress(Protocol):
    """Where the builder reports each image's state (the command layer shows it: cli.report.Progress)."""

    def update(self, name: str, state: str, *, announce: bool = True) -> None: ...
    def finish(self, result: Result) -> None: ...
    def step(self, name: str, text: str) -> None: ...


class Silent:
    """No one is watching: states go nowhere."""

    def update(self, name: str, state: str, *, announce: bool = True) -> None:
        pass

    def finish(self, result: Result) -> None:
        pass

    def step(self, name: str, text: str) -> None:
        pass


def _end_builds_and_smoke_tests(reason: str) -> None:
    """An interrupt ends the BuildKit builds and the smoke tests under way, and starts none."""
    buildkit.end_builds(reason)
    verify.end_smoke_tests(reason)


def _building(built: dict[str, Future], running: dict[Future, str]) -> int:
    """Images whose build holds a build slot: not built yet, or failed and not yet recorded (so that
    --fail-fast sees the failure before another build starts)."""
    return sum(1 for name in running.values()
               if not built[name].done() or built[name].result() is None)


def _built_image(built: dict[str, Future], name: str) -> str | None:
    """The new image ID of `name` once it is built (before it is verified); None before, or without one."""
    future = built.get(name)
    return future.result() if future is not None and future.done() else None


class Builder:
    def __init__(self, settings: Settings, engine: Engine, *, revision: str | None,
                 progress: BuildProgress | None = None, no_cache: bool = False, run_build: BuildRunner = buildkit.build,
                 smoke_test: SmokeTester | None = None, lock_digests: dict[str, str] | None = None,
                 check_sbom: SbomChecker | None = None, cache=None, reverify: bool = False,
                 end_builds: Callable[[str], None] | None = None, restamp: Callable | None = None,
                 recorded: dict[str, dict[str, str]] | None = None):
        self.settings = settings
        self.engine = engine
        self.revision = revision
        self.progress = progress or Silent()
        self.no_cache = no_cache
        self.ca_bundle = settings.resolved_ca_bundle()
        self.run_build = run_build
        self.smoke_test = smoke_test or engine.smoke_test
        self.check_sbom = check_sbom
        self.lock_digests = lock_digests or {}  # image -> digest of the lock it installs (its label)
        self.pins: set[str] = set()
        self.cache = cache  # cache.RegistryCache (--cache-from), or None: every stale image is built
        self.reverify = reverify  # smoke-test attested cache images too (--reverify)
        # A repository of this run's own: a concurrent run's clean-up cannot untag what this one builds FROM.
        self.pin_repository = f"{verify.PIN_REPOSITORY}-{uuid.uuid4().hex[:8]}"
        self.build_python_id: str | None = None
        self.python_id: str | None = None
        self.end_builds = end_builds or _end_builds_and_smoke_tests
        # (image ID, parent ID, epoch) -> normalize.Restamped: BuildKit's image with its times set to the epoch.
        # Only after a real BuildKit build (a test's fake runner builds nothing to re-stamp).
        self.restamp = restamp or (functools.partial(normalize.restamp, engine) if run_build is buildkit.build else None)
        self.normalize_s: dict[str, float] = {}  # image -> seconds its re-stamp took
        # Image IDs the engine had before this run made them (a re-stamp can land on an image built before from
        # the same inputs, tagged elsewhere or the very image `inv rebuild` compares with): never discarded.
        self.preexisting: set[str] = set()
        # name -> the labels an earlier build of it recorded: its epoch and source are taken from them, not
        # from this checkout's git (`inv rebuild`: a shallow clone or another remote URL must not change the ID).
        self.recorded = recorded or {}
        # Set by an interrupt (KeyboardInterrupt, or SIGTERM turned into one): no tag moves after it.
        self.interrupted: BaseException | None = None
        self._tagging = threading.Lock()
        self._verifying = threading.BoundedSemaphore(1)  # verifications at once: `jobs`, set by run()
        self._resolutions: dict[tuple[str, str], str] = {}  # (framework, version) -> _resolution()

    def run(self, plan: Plan, *, jobs: int, fail_fast: bool) -> list[Result]:
        """A result for every image of the plan, in the plan's order."""
        results: dict[str, Result] = {}
        self.build_python_id = plan.build_python_id  # cross-installs run in it (foreign platforms only)
        self.python_id = plan.python_id  # connectors build their uv stage FROM it, as the base does
        self._verifying = threading.BoundedSemaphore(jobs)
        try:
            self._schedule(plan, results, jobs=jobs, fail_fast=fail_fast)
        finally:
            self._unpin()
        if self.interrupted:  # what was done stays in the results; the rest says why it was not
            why = f"interrupted ({self.interrupted_by})"
            for name in plan.order:
                results.setdefault(name, Result(name=name, ref=plan.items[name].ref, status=BuildStatus.NOT_BUILT,
                                                detail=why))
        return [results[name] for name in plan.order]

    @property
    def interrupted_by(self) -> str:
        return interrupts.signal_name(self.interrupted) if self.interrupted else ""

    def interrupt(self, exc: BaseException) -> None:
        """From now on no tag moves and no build starts; the running builds are ended."""
        with self._tagging:  # a tag move under way finishes first; none starts after this
            self.interrupted = exc
        self.end_builds(f"interrupted ({self.interrupted_by})")

    def _schedule(self, plan: Plan, results: dict[str, Result], *, jobs: int, fail_fast: bool) -> None:
        """Start an image once its parent is built, at most `jobs` builds at a time.

        An image that is built leaves its build slot to the next one while it is verified (at most `jobs`
        verifications at a time, see _verify), so up to 2 x `jobs` images are under way. A child's build starts while its parent's smoke test runs; it is tagged only once its parent has
        a result, and discarded if the parent failed. Builds wait here rather than in the pool, so
        --fail-fast can still hold them back. plan.order has parents first, so with nothing running the
        first pending image can start.
        """
        pending = list(plan.order)
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=2 * jobs, thread_name_prefix="build") as pool:
            try:
                self._loop(plan, results, pool, pending, running, jobs, fail_fast)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (interrupts.py): end the builds, keep what is done
                self.interrupt(exc)
                for future in wait(running).done:
                    results[running[future]] = future.result()

    def _loop(self, plan: Plan, results: dict[str, Result], pool, pending: list[str], running: dict[Future, str],
              jobs: int, fail_fast: bool) -> None:
        stopping = False
        built: dict[str, Future] = {}  # name -> its new image's ID once built, before it is verified (None: none)
        finishing: dict[str, Future] = {}  # name -> its whole build (its Result)
        while pending or running:
            for name in list(pending):
                item = plan.items[name]
                parent_name = item.spec.parent
                parent = results.get(parent_name)
                early = parent is None and parent_name in plan.items  # the parent has no result yet
                parent_image = _built_image(built, parent_name)
                if early and not (item.needs_build and item.state != BLOCKED and not stopping and parent_image):
                    continue  # only a build starts before its parent's result, and only once that parent is built
                if parent and parent.status.failed:
                    results[name] = self._not_built(item, f"parent {parent.name} was not built")
                elif item.state == BLOCKED:  # never "kept": it has no image to keep
                    results[name] = self._not_built(item, item.reason)
                elif not item.needs_build:
                    results[name] = self._keep(item)
                elif stopping:
                    results[name] = self._not_built(item, "stopped by --fail-fast")
                elif _building(built, running) < jobs and len(running) < 2 * jobs:
                    parent_id = parent_image if early else self._parent_id(plan, item, results)
                    built[name] = Future()
                    future = pool.submit(self._build_one, item, parent_id, built[name],
                                         (parent_name, finishing[parent_name]) if early else None)
                    finishing[name] = future
                    running[future] = name
                else:
                    self.progress.update(name, "queued", announce=False)
                    continue
                pending.remove(name)
            if running:
                building = [future for future in built.values() if not future.done()]
                finished, _ = wait([*running, *building], return_when=FIRST_COMPLETED)
                for future in [future for future in finished if future in running]:
                    result = results[running.pop(future)] = future.result()
                    stopping = stopping or (fail_fast and result.status.failed)

    def _parent_id(self, plan: Plan, item: PlanItem, results: dict[str, Result]) -> str:
        if item.spec.kind == BASE:
            # The ID the plan hashed; require_buildable() already refused a plan without one.
            return plan.python_id
        return results[item.spec.parent].image_id

    def _finish(self, result: Result) -> Result:
        self.progress.finish(result)
        return result

    def _not_built(self, item: PlanItem, reason: str) -> Result:
        return self._finish(Result(name=item.name, ref=item.ref, status=BuildStatus.NOT_BUILT, detail=reason))

    def _keep(self, item: PlanItem) -> Result:
        """An up-to-date image is not rebuilt, but its commit and `latest` tags follow it."""
        current = item.current
        assert current is not None
        repository = item.ref.rpartition(":")[0]
        # Only the tags that do not already point here: a no-op run over the catalog stays fast.
        missing = [tag for tag in item.tags if f"{repository}:{tag}" not in current.tags]
        if missing:
            verify.move_tags(self.engine, current.id, repository, missing)
        return self._finish(Result(name=item.name, ref=item.ref, status=BuildStatus.UP_TO_DATE, detail=item.reason,
                                   image_id=current.id, size=current.size, tags=tuple(item.tags)))

    def _build_one(self, item: PlanItem, parent_id: str, built: Future,
                   parent_run: tuple[str, Future] | None = None) -> Result:
        """build -> verify -> tag. Never raises: a failure becomes a FAILED result naming its cause.

        `built` gets the new image's ID as soon as it exists (None if there is none), so its children can
        start building; `parent_run` is a parent still being verified (its name and whole run): this image
        is tagged only if that parent is.
        """
        started = time.monotonic()
        log_path = build_logs(self.settings) / f"{item.name}.log"
        try:
            hit = self._pull(item, parent_id)
            image_id = hit.image_id if hit else self._build(item, parent_id, log_path)
            built.set_result(image_id)
            built_at = time.monotonic()
            attested = bool(hit and hit.attested and not self.reverify)
            # A trusted attestation says this image passed its smoke test and SBOM check: not run again.
            smoke, sbom_check_s = (verify.SmokeResult(0, "attested", 0.0), 0.0) if attested \
                else self._verify(item, image_id)
            if parent_run and not self._parent_passed(item, image_id, *parent_run):
                return self._not_built(item, f"parent {parent_run[0]} was not built")
            tagging = time.monotonic()
            result = self._tag(item, image_id, parent_id, smoke)
            result = replace(result, build_s=round(built_at - started, 1), sbom_check_s=round(sbom_check_s, 1),
                             tag_s=round(time.monotonic() - tagging, 1),
                             normalize_s=0.0 if hit else self.normalize_s.get(item.name, 0.0))
            if hit:
                self.cache.release(hit)
                signed = ", signed and attested: smoke test not re-run" if attested else ""
                result = replace(result, status=BuildStatus.PULLED,
                                 detail=f"{hit.ref} matches its inputs ({human_size(hit.bytes_pulled)} downloaded"
                                        f"{signed})")
        except Exception as exc:  # a step that failed, or the engine went away mid-build
            if self.interrupted:  # the build was ended by the interrupt, not broken
                return self._finish(Result(name=item.name, ref=item.ref, status=BuildStatus.NOT_BUILT,
                                           detail=f"interrupted ({self.interrupted_by})", log=str(log_path)))
            if parent_run and parent_run[1].result().status.failed:  # its parent's image was discarded under it
                return self._not_built(item, f"parent {parent_run[0]} was not built")
            failure = diagnose(exc)
            result = Result(name=item.name, ref=item.ref, status=BuildStatus.FAILED, detail=failure.reason,
                            cause=failure.cause.value, log=str(log_path), details=failure.details)
        finally:
            if not built.done():  # no image: its children are not started (they get the parent's failure)
                built.set_result(None)
        return self._finish(replace(result, duration_s=round(time.monotonic() - started, 1)))

    def _parent_passed(self, item: PlanItem, image_id: str, parent: str, parent_run: Future) -> bool:
        """Wait for the parent's verification; an image built on a parent that failed it is discarded."""
        if not parent_run.done():
            self.progress.update(item.name, f"waiting for {parent}")
        if parent_run.result().status.failed:
            self._discard(image_id)
            return False
        return True

    def _build(self, item: PlanItem, parent_id: str, log_path) -> str:
        spec = item.spec
        self.progress.update(spec.name, "building")
        drift = framework_drift(spec)
        if drift:  # exact, and before anything is downloaded; the parent's pins catch indirect moves
            raise StepFailed(Diagnosis(Cause.FRAMEWORK_CHANGE, drift))
        recorded_epoch = self.recorded.get(spec.name, {}).get(LABEL_EPOCH, "")
        epoch = int(recorded_epoch) if recorded_epoch.isdigit() else reproducible.source_date_epoch(
            self.settings.root, spec, self.engine, parent_id)
        request = buildkit.BuildRequest(
            dockerfile=spec.dockerfile,
            context=spec.context,
            build_args={**self._build_args(item, self._pin(parent_id)), "SOURCE_DATE_EPOCH": str(epoch)},
            labels=self._labels(item, self._input_hash(item, parent_id), parent_id, epoch),
            ca_bundle=self.ca_bundle,
            log_path=log_path,
            no_cache=self.no_cache,
            framework_package=spec.framework.package,
            platform="" if item.platform.is_default else item.platform.name,
            timeout_s=self.settings.build_timeout,
            no_output_timeout_s=self.settings.build_no_output_timeout,
        )
        built = self.run_build(request, on_progress=lambda text: self.progress.step(spec.name, text))
        if self.restamp is None:
            return built
        self.progress.update(spec.name, "re-stamping")
        try:
            restamped = self.restamp(built, parent_id, epoch)
        except Exception:
            self._discard(built)  # BuildKit's own, never tagged
            raise
        self.normalize_s[spec.name] = round(restamped.seconds, 2)
        if restamped.existed:
            self.preexisting.add(restamped.image_id)
        if restamped.image_id != built:
            self._discard(built)  # BuildKit's own, with the build's times: its layers stay, now the new image's
        return restamped.image_id

    def _input_hash(self, item: PlanItem, parent_id: str) -> str:
        """What the build labels the image with, and so the cache's key: platform and install mode included."""
        return input_hash(item.spec, parent_id, self.settings, item.platform, item.install, self.build_python_id)

    def _pull(self, item: PlanItem, parent_id: str):
        """The registry cache's image for this item's inputs (cache.Hit), or None: build it."""
        # --force asks for a rebuild: the cache's image has the very inputs of the one it replaces.
        if self.cache is None or item.state == FORCED:
            return None
        self.progress.update(item.name, "looking up the cache")
        hit = self.cache.fetch(item, self._input_hash(item, parent_id), parent_id)
        if hit:
            self.progress.update(item.name, f"pulled {hit.ref}")
        return hit

    def _verify(self, item: PlanItem, image_id: str) -> tuple[verify.SmokeResult, float]:
        """The smoke test's result, and the seconds the SBOM check took."""
        try:
            if not self._verifying.acquire(blocking=False):
                self.progress.update(item.name, "built, waiting for a smoke-test slot", announce=False)
                self._verifying.acquire()
            try:
                self._unless_interrupted()
                self.progress.update(item.name, "smoke test")
                smoke = self.smoke_test(image_id)
                started = time.monotonic()
                if self.check_sbom is not None:
                    self._unless_interrupted()
                    self.progress.update(item.name, "SBOM check")
                    self.check_sbom(image_id, item.name)
                return smoke, time.monotonic() - started
            finally:
                self._verifying.release()
        except Exception:
            self._discard(image_id)  # never tagged, so nothing else would ever remove it
            raise

    def _unless_interrupted(self) -> None:
        """No verification step starts after an interrupt: its image would not be tagged anyway."""
        if self.interrupted:
            raise buildkit.BuildInterrupted(Diagnosis(Cause.INTERRUPTED, f"interrupted ({self.interrupted_by})"))

    def _tag(self, item: PlanItem, image_id: str, parent_id: str, smoke: verify.SmokeResult) -> Result:
        """Only a verified image gets the tags; then its size and what it adds over its parent."""
        with self._tagging:
            if self.interrupted:  # built and verified, but after the interrupt: no tag moves
                self._discard(image_id)
                raise buildkit.BuildInterrupted(Diagnosis(Cause.INTERRUPTED, "interrupted before tagging"))
            verify.move_tags(self.engine, image_id, item.ref.rpartition(":")[0], item.tags)
        info, parent = self.engine.inspect(image_id), self.engine.inspect(parent_id)
        return Result(name=item.name, ref=item.ref, status=BuildStatus.BUILT, detail=item.reason, image_id=image_id,
                      smoke_s=round(smoke.seconds, 1), size=info.size if info else 0,
                      added=info.size - parent.size if info and parent else None, tags=tuple(item.tags))

    def _pin(self, image_id: str) -> str:
        ref = verify.pin(self.engine, image_id, self.pin_repository)
        self.pins.add(ref)
        return ref

    def _discard(self, image_id: str) -> None:
        if image_id in self.preexisting:
            return
        try:
            self.engine.remove(image_id)
        except Exception:  # in use, or the engine is gone: the failure that matters is being reported
            pass

    def _unpin(self) -> None:
        """Drop the ID-derived tags, so replaced images can still be pruned."""
        for ref in self.pins:
            try:
                self.engine.untag(ref)
            except Exception:  # already gone, or in use by a container: harmless
                pass
        self.pins.clear()

    def _build_args(self, item: PlanItem, parent_ref: str) -> dict[str, str]:
        spec = item.spec
        framework = spec.framework
        # Named in the SBOM: the image without registry or namespace, and its version tag.
        identity = {"IMAGE_NAME": spec.image_name, "IMAGE_VERSION": item.tags[0]}
        if spec.kind == BASE:
            args = {
                "PYTHON_IMAGE": parent_ref,
                "PYTHON_VERSION": self.settings.python_version,
                "FRAMEWORK": framework.name,
                "FRAMEWORK_VERSION": framework.version,
                **identity,
            }
        else:
            args = {
                "PARENT_IMAGE": parent_ref,
                # The same uv and SBOM-tool stages as the base's (BuildKit builds them once for all images).
                **({"PYTHON_IMAGE": self._pin(self.python_id)} if self.python_id else {}),
                "OS_PACKAGES": " ".join(spec.os_packages),
                "BUILD_PACKAGES": " ".join(spec.build_packages),
                "CONNECTOR_SOURCE": spec.source,
                "CHECK_MODULES": ",".join(spec.check_modules),
                # Its lock for this framework version, in its directory (the build's context).
                **({"LOCK_FILE": spec.lock.relative_to(spec.context).as_posix()} if spec.lock else {}),
                **identity,
            }
        if self._resolution(spec):
            args["RESOLUTION"] = base64.b64encode(self._resolution(spec).encode()).decode()
        if not item.platform.is_default:
            args.update(self._platform_args(item))
        # The catalog refuses these already; checked again where it matters, for specs made elsewhere.
        overridden = sorted(set(args) & set(dict(spec.build_args)))
        if overridden:
            raise ConfigError(f"{spec.name}: build_args cannot override {', '.join(overridden)}, which the "
                              "factory sets")
        args.update(dict(spec.build_args))
        return args

    def _resolution(self, spec) -> str:
        """The framework version's constraints and overrides as JSON ("" when it has none)."""
        key = (spec.framework.name, spec.framework.version)
        if key not in self._resolutions:
            found = lock_mod.resolution(self.settings, spec.framework)
            self._resolutions[key] = json.dumps(found, sort_keys=True) if found else ""
        return self._resolutions[key]

    def _platform_args(self, item: PlanItem) -> dict[str, str]:
        """What the Dockerfiles' cross stages need; amd64 builds get none of it, so they stay as they were."""
        args = {"INSTALL": item.install,
                "WHEEL_PLATFORM": item.platform.wheel_platform(self.settings.lock_platform)}
        build_python = self.build_python_id
        if item.install == "cross" and build_python:
            args["BUILD_PYTHON_IMAGE"] = self._pin(build_python)
        return args

    @functools.cached_property
    def source_url(self) -> str:
        """Asked of git only when something is built, so a no-op run stays fast."""
        return _source_url(self.settings)

    def _labels(self, item: PlanItem, digest: str, parent_id: str, epoch: int) -> dict[str, str]:
        spec = item.spec
        labels = {
            "org.opencontainers.image.title": spec.image_name,
            "org.opencontainers.image.description": spec.description or f"{spec.framework.name} connector {spec.name}",
            "org.opencontainers.image.version": item.tags[0],
            LABEL_REVISION: self.revision or "unknown",
            # The image's SOURCE_DATE_EPOCH, not the build's time: the same inputs give the same labels.
            "org.opencontainers.image.created": normalize.rfc3339(epoch),
            LABEL_EPOCH: str(epoch),
            LABEL_NAME: spec.name,
            LABEL_FRAMEWORK: spec.framework.name,
            LABEL_FRAMEWORK_VERSION: spec.framework.version,
            LABEL_PARENT: parent_id,
            LABEL_INPUTS: digest,
            LABEL_SBOM: SBOM_PATH,
            LABEL_PLATFORM: item.platform.name,
        }
        # A local checkout's path means nothing to whoever pulls the image: the label is left out then.
        recorded = self.recorded.get(spec.name)
        source = recorded.get(LABEL_SOURCE, "") if recorded is not None else self.source_url
        if source:
            labels[LABEL_SOURCE] = source
        if spec.name in self.lock_digests:
            labels[LABEL_LOCK] = self.lock_digests[spec.name]
        if self._resolution(spec):
            labels[LABEL_RESOLUTION] = self._resolution(spec)
        return labels


def _git(settings: Settings, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=settings.root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _source_url(settings: Settings) -> str:
    """The repository's remote, without credentials; empty when it has none."""
    url = _git(settings, "remote", "get-url", "origin")
    if not url or url.startswith(("/", "file:", ".")):
        return ""
    # The runtime's reading of a URL's userinfo: a password may hold `/` or a raw `@`.
    return runtime_redaction.url_without_userinfo(url)
