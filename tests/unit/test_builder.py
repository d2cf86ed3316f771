"""The scheduler without Docker: order, parallelism, failures, --fail-fast."""

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from project_tree import add_connector
from testkit import OM_VERSION
from ingestion_factory import buildkit, catalog, settings as settings_mod, verify
from ingestion_factory.builder import Builder
from ingestion_factory.failures import Cause, Diagnosis
from ingestion_factory.plan import ImageInfo, make_plan
from ingestion_factory.report import BUILT, FAILED, NOT_BUILT

PYTHON_ID = "sha256:" + "1" * 64
BOOM = Diagnosis(Cause.BUILD_STEP, "build step exited 1: boom", ("boom",), "[stage-1 3/3] RUN uv pip install")


class FakeProgress:
    def update(self, name, state, announce=True):
        pass

    def step(self, name, text):
        pass


@dataclass
class FakeEngine:
    """Plays the docker SDK (tags) and the image store at once."""

    images: dict = field(default_factory=dict)

    @property
    def api(self):
        return self

    def tag(self, image_id, repository, tag):
        self.images[f"{repository}:{tag}"] = self.images.get(image_id, ImageInfo(image_id, {}, 1))

    def remove_image(self, ref, noprune=False):
        self.images.pop(ref, None)

    def inspect(self, ref):
        return self.images.get(ref)


@pytest.fixture
def engine(project, monkeypatch):
    """Builds that take a moment and record how many ran at once; names in `failing` fail."""
    engine = FakeEngine({"python:3.11-slim-bookworm": ImageInfo(PYTHON_ID, {}, 100)})
    engine.failing = set()
    engine.running = 0
    engine.most = 0
    engine.order = []
    lock = threading.Lock()

    def fake_build(request, on_progress=None):
        name = Path(request.log_path).stem
        with lock:
            engine.running += 1
            engine.most = max(engine.most, engine.running)
            engine.order.append(name)
        time.sleep(0.05)
        with lock:
            engine.running -= 1
        if name in engine.failing:
            raise buildkit.BuildFailed(BOOM)
        image_id = "sha256:" + name.encode().hex().ljust(64, "0")[:64]
        engine.images[image_id] = ImageInfo(image_id, dict(request.labels), 200)
        return image_id

    monkeypatch.setattr(buildkit, "build", fake_build)
    monkeypatch.setattr(verify, "smoke_test", lambda api, image_id: verify.SmokeResult(0, "", 0.0))
    return engine


def run(project, engine, targets, *, jobs=2, fail_fast=False):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    found = catalog.discover(settings)
    plan = make_plan(found, targets, engine, settings)
    builder = Builder(settings, engine, engine, revision=None, progress=FakeProgress())
    return {r.name: r for r in builder.run(plan, jobs=jobs, fail_fast=fail_fast)}


def test_parents_first_and_at_most_jobs_at_once(project, engine):
    for name in ("a", "b", "c", "d"):
        add_connector(project, name)
    results = run(project, engine, ["a", "b", "c", "d"], jobs=2)
    assert {r.result for r in results.values()} == {BUILT}
    assert engine.order[0] == "base"
    assert engine.most == 2


def test_a_failure_skips_only_its_dependents(project, engine):
    add_connector(project, "a")
    add_connector(project, "child", "x\n", 'parent = "a"\n')
    add_connector(project, "b")
    engine.failing = {"a"}
    results = run(project, engine, ["child", "b"])
    assert results["a"].result == FAILED and results["a"].log_tail == list(BOOM.details)
    assert results["child"].result == NOT_BUILT and "parent a" in results["child"].reason
    assert results["b"].result == BUILT


def test_fail_fast_starts_nothing_new(project, engine):
    for name in ("a", "b", "c", "d"):
        add_connector(project, name)
    engine.failing = {"a"}
    results = run(project, engine, ["a", "b", "c", "d"], jobs=1, fail_fast=True)
    assert engine.order == ["base", "a"]
    assert results["a"].result == FAILED
    assert {results[n].result for n in "bcd"} == {NOT_BUILT}
    assert "--fail-fast" in results["b"].reason


def test_without_fail_fast_the_others_still_build(project, engine):
    for name in ("a", "b", "c"):
        add_connector(project, name)
    engine.failing = {"a"}
    results = run(project, engine, ["a", "b", "c"], jobs=1)
    assert results["a"].result == FAILED
    assert results["b"].result == BUILT and results["c"].result == BUILT


def test_tags_move_only_after_success_and_pins_are_dropped(project, engine):
    add_connector(project, "a")
    engine.failing = {"a"}
    run(project, engine, ["a"])
    refs = set(engine.images)
    assert any(ref.endswith(f"ingestion-connector-base:{OM_VERSION}") for ref in refs)
    assert not any("ingestion-connector-a:" in ref for ref in refs)
    assert not any(ref.startswith(verify.PIN_REPOSITORY) for ref in refs)
