"""Runs a plan: builds in dependency order, in parallel up to `jobs`, verifies, tags."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from graphlib import TopologicalSorter

from . import buildkit, verify
from .catalog import BASE, ImageSpec, framework_drift
from .errors import FactoryError
from .plan import (
    LABEL_FRAMEWORK,
    LABEL_FRAMEWORK_VERSION,
    LABEL_INPUTS,
    LABEL_NAME,
    LABEL_PARENT,
    LABEL_REVISION,
    Plan,
    PlanItem,
    input_hash,
)
from .report import BUILT, FAILED, NOT_BUILT, SKIPPED, Progress, Result
from .settings import Settings


class Builder:
    def __init__(self, settings: Settings, api, store, *, revision: str | None, progress: Progress,
                 no_cache: bool = False):
        self.settings = settings
        self.api = api
        self.store = store
        self.revision = revision
        self.progress = progress
        self.no_cache = no_cache
        self.ca_bundle = settings.resolved_ca_bundle()
        self.source_url = _source_url(settings)
        self.pins: set[str] = set()
        # A repository of this run's own: a concurrent run's clean-up cannot untag what this one builds FROM.
        self.pin_repository = f"{verify.PIN_REPOSITORY}-{uuid.uuid4().hex[:8]}"

    def run(self, plan: Plan, *, jobs: int, fail_fast: bool) -> list[Result]:
        names = plan.order
        graph = {n: ({plan.items[n].spec.parent} & set(names)) if plan.items[n].spec.parent else set() for n in names}
        sorter = TopologicalSorter(graph)
        sorter.prepare()
        results: dict[str, Result] = {}
        image_ids: dict[str, str] = {}
        try:
            self._schedule(plan, sorter, results, image_ids, jobs=jobs, fail_fast=fail_fast)
        finally:
            self._unpin()
        return [results[name] for name in names]

    def _schedule(self, plan, sorter, results, image_ids, *, jobs, fail_fast) -> None:
        """Hand ready images to at most `jobs` workers; the rest wait here, so --fail-fast can hold them back."""
        stopping = False
        waiting: deque[str] = deque()
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="build") as pool:
            while sorter.is_active():
                for name in sorter.get_ready():
                    item = plan.items[name]
                    parent = item.spec.parent if item.spec.parent in results else None
                    if parent and results[parent].result in (FAILED, NOT_BUILT):
                        results[name] = self._not_built(item, f"parent {parent} was not built")
                        sorter.done(name)
                    elif not item.needs_build:
                        results[name] = self._up_to_date(item)
                        image_ids[name] = results[name].image_id
                        sorter.done(name)
                    else:
                        self.progress.update(name, "queued")
                        waiting.append(name)
                while waiting and (stopping or len(running) < jobs):
                    name = waiting.popleft()
                    if stopping:
                        results[name] = self._not_built(plan.items[name], "stopped by --fail-fast")
                        sorter.done(name)
                        continue
                    item = plan.items[name]
                    running[pool.submit(self._build_one, item, self._parent_id(plan, item, image_ids))] = name
                if not running:
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    result = future.result()
                    results[name] = result
                    if result.result in (BUILT, SKIPPED):
                        image_ids[name] = result.image_id
                    elif fail_fast:
                        stopping = True
                    sorter.done(name)

    def _pin(self, image_id: str) -> str:
        ref = verify.pin(self.api, image_id, self.pin_repository)
        self.pins.add(ref)
        return ref

    def _discard(self, image_id: str | None) -> None:
        """Remove an image that failed verification; it never got a tag."""
        if image_id:
            try:
                self.api.api.remove_image(image_id)
            except Exception:
                pass

    def _unpin(self) -> None:
        """Drop the ID-derived tags, so replaced images can still be pruned."""
        for ref in self.pins:
            try:
                self.api.api.remove_image(ref, noprune=True)
            except Exception:  # already gone, or in use by a container: harmless
                pass
        self.pins.clear()

    def _parent_id(self, plan: Plan, item: PlanItem, image_ids: dict[str, str]) -> str:
        if item.spec.kind == BASE:
            # The ID the plan hashed; require_buildable() already refused a plan without one.
            return plan.python_id
        return image_ids[item.spec.parent]

    def _not_built(self, item: PlanItem, reason: str) -> Result:
        self.progress.update(item.name, f"{NOT_BUILT}: {reason}")
        return Result(item.name, item.ref, NOT_BUILT, reason)

    def _up_to_date(self, item: PlanItem) -> Result:
        current = item.current
        assert current is not None
        # The revision tag follows the commit even when nothing had to be rebuilt.
        verify.move_tags(self.api, current.id, item.ref.rpartition(":")[0], item.tags)
        self.progress.update(item.name, SKIPPED)
        return Result(item.name, item.ref, SKIPPED, item.reason, image_id=current.id, size=current.size,
                      tags=item.tags)

    def _build_one(self, item: PlanItem, parent_id: str) -> Result:
        """Build, smoke-test, then tag. Never raises: failures become a failed Result."""
        start = time.monotonic()
        spec = item.spec
        self.progress.update(spec.name, "building")
        log_path = self.settings.output_path / "logs" / f"{spec.name}.log"
        result = Result(spec.name, item.ref, FAILED, log=str(log_path))
        image_id = None
        try:
            drift = framework_drift(spec)
            if drift:
                raise FactoryError(drift)
            digest = input_hash(spec, parent_id, self.settings)
            request = buildkit.BuildRequest(
                dockerfile=spec.dockerfile,
                context=spec.context,
                build_args=self._build_args(spec, self._pin(parent_id)),
                labels=self._labels(item, digest, parent_id),
                ca_bundle=self.ca_bundle,
                log_path=log_path,
                no_cache=self.no_cache,
                framework_package=spec.framework.package,
            )
            image_id = buildkit.build(request, on_progress=lambda text: self.progress.step(spec.name, text))
            self.progress.update(spec.name, "smoke test")
            result.smoke_s = round(verify.smoke_test(self.api, image_id).seconds, 1)
            verify.move_tags(self.api, image_id, item.ref.rpartition(":")[0], item.tags)
            info = self.store.inspect(image_id)
            parent = self.store.inspect(parent_id)
            result.result, result.reason = BUILT, item.reason
            result.image_id, result.tags = image_id, item.tags
            if info:
                result.size = info.size
                result.added = info.size - parent.size if parent else None
        except buildkit.BuildFailed as exc:
            result.reason, result.log_tail = exc.diagnosis.reason, list(exc.diagnosis.details)
        except verify.SmokeFailed as exc:
            result.reason, result.log_tail = exc.diagnosis.reason, list(exc.diagnosis.details)
            self._discard(image_id)
        except FactoryError as exc:
            result.reason = exc.message
        except Exception as exc:  # the engine went away mid-build, a disk filled up...
            result.reason = f"{type(exc).__name__}: {exc}"
        result.duration_s = round(time.monotonic() - start, 1)
        self.progress.update(spec.name, result.result if result.result == BUILT else f"{FAILED}: {result.reason}")
        return result

    def _build_args(self, spec: ImageSpec, parent_ref: str) -> dict[str, str]:
        framework = spec.framework
        if spec.kind == BASE:
            args = {
                "PYTHON_IMAGE": parent_ref,
                "FRAMEWORK": framework.name,
                "FRAMEWORK_REQUIREMENT": framework.requirement,
                "FRAMEWORK_VERSION": framework.version,
            }
        else:
            args = {
                "PARENT_IMAGE": parent_ref,
                "OS_PACKAGES": " ".join(spec.os_packages),
                "CONNECTOR_SOURCE": spec.source,
                "CHECK_MODULES": ",".join(spec.check_modules),
            }
        args.update(dict(spec.build_args))
        return args

    def _labels(self, item: PlanItem, digest: str, parent_id: str) -> dict[str, str]:
        spec = item.spec
        return {
            "org.opencontainers.image.title": spec.image_name,
            "org.opencontainers.image.description": spec.description or f"{spec.framework.name} connector {spec.name}",
            "org.opencontainers.image.version": item.tags[0],
            LABEL_REVISION: self.revision or "unknown",
            "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "org.opencontainers.image.source": self.source_url,
            LABEL_NAME: spec.name,
            LABEL_FRAMEWORK: spec.framework.name,
            LABEL_FRAMEWORK_VERSION: spec.framework.version,
            LABEL_PARENT: parent_id,
            LABEL_INPUTS: digest,
        }


def _source_url(settings: Settings) -> str:
    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "origin"], cwd=settings.root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        url = ""
    return url or settings.root.as_uri()
