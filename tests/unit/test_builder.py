"""The scheduler without Docker: order, parallelism, failures, --fail-fast; the runner and smoke test are fakes."""

import threading
import time
from pathlib import Path

import pytest
from fake_engine import FakeEngine
from project_tree import add_connector
from testkit import OM_VERSION

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine import buildkit, verify
from ingestion_factory.model import catalog
from ingestion_factory.model.failures import Cause, Diagnosis, StepFailed
from ingestion_factory.model.plan import make_plan
from ingestion_factory.model.results import BuildStatus
from ingestion_factory.workflows.builder import Builder

BUILT, FAILED, NOT_BUILT, UP_TO_DATE = (BuildStatus.BUILT, BuildStatus.FAILED, BuildStatus.NOT_BUILT,
                                        BuildStatus.UP_TO_DATE)
PYTHON_ID = "sha256:" + "1" * 64


BOOM = Diagnosis(Cause.BUILD_STEP, "build step exited 1: boom", ("boom",), "[stage-1 3/3] RUN uv pip install")


@pytest.fixture
def engine(project):
    """Builds that take a moment and record how many ran at once; names in `failing` fail."""
    engine = FakeEngine()
    engine.add(PYTHON_ID, {}, ["python:3.11-slim-bookworm"], size=100)
    engine.failing = set()
    engine.unverified = set()
    engine.running = 0
    engine.most = 0
    engine.order = []
    lock = threading.Lock()

    def build(request, on_progress=None):
        name = Path(request.log_path).stem
        with lock:
            engine.running += 1
            engine.most = max(engine.most, engine.running)
            engine.overlapped |= engine.smoking > 0  # this build started beside a smoke test
            engine.order.append(name)
        time.sleep(0.05)
        with lock:
            engine.running -= 1
        if name in engine.failing:
            raise StepFailed(BOOM)
        image_id = "sha256:" + name.encode().hex().ljust(64, "0")[:64]
        engine.add(image_id, dict(request.labels), size=200)
        engine.names[image_id] = name
        return image_id

    def smoke_test(image_id):
        with lock:
            engine.smoking += 1
            engine.most_smoking = max(engine.most_smoking, engine.smoking)
        time.sleep(engine.smoke_s)
        with lock:
            engine.smoking -= 1
        if engine.names[image_id] in engine.unverified:
            raise verify.SmokeFailed(Diagnosis(Cause.PLUGIN_IMPORT, "plugin import failed in the smoke test: x"))
        return verify.SmokeResult(0, "", 0.0)

    engine.smoking = engine.most_smoking = 0
    engine.overlapped = False
    engine.smoke_s = 0.0
    engine.names = {}
    engine.build, engine.smoke_test = build, smoke_test
    return engine


def run(project, engine, targets, *, jobs=2, fail_fast=False):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    found = catalog.discover(settings)
    plan = make_plan(found, targets, engine, settings)
    builder = Builder(settings, engine, revision=None, run_build=engine.build, smoke_test=engine.smoke_test)
    return {r.name: r for r in builder.run(plan, jobs=jobs, fail_fast=fail_fast)}


def test_parents_first_and_at_most_jobs_at_once(project, engine):
    for name in ("a", "b", "c", "d"):
        add_connector(project, name)
    results = run(project, engine, ["a", "b", "c", "d"], jobs=2)
    assert {r.status for r in results.values()} == {BUILT}
    assert engine.order[0] == "base"
    assert engine.most == 2


def test_a_build_runs_beside_a_smoke_test_and_each_stays_within_jobs(project, engine):
    """Builds wait on downloads, smoke tests on the CPU: the next build need not wait for a smoke test."""
    for name in ("a", "b", "c", "d"):
        add_connector(project, name)
    engine.smoke_s = 0.1
    results = run(project, engine, ["a", "b", "c", "d"], jobs=1)
    assert {r.status for r in results.values()} == {BUILT}
    assert engine.most == 1 and engine.most_smoking == 1
    assert engine.overlapped


def test_a_failure_skips_only_its_dependents(project, engine):
    add_connector(project, "a")
    add_connector(project, "child", "x\n", 'parent = "a"\n')
    add_connector(project, "b")
    engine.failing = {"a"}
    results = run(project, engine, ["child", "b"])
    assert results["a"].status == FAILED and results["a"].details == BOOM.details
    assert results["a"].cause == "build step failed"
    assert results["child"].status == NOT_BUILT and "parent a" in results["child"].detail
    assert results["b"].status == BUILT


def test_fail_fast_starts_nothing_new(project, engine):
    for name in ("a", "b", "c", "d"):
        add_connector(project, name)
    engine.failing = {"a"}
    results = run(project, engine, ["a", "b", "c", "d"], jobs=1, fail_fast=True)
    assert engine.order == ["base", "a"]
    assert results["a"].status == FAILED
    assert {results[n].status for n in "bcd"} == {NOT_BUILT}
    assert "--fail-fast" in results["b"].detail


def test_without_fail_fast_the_others_still_build(project, engine):
    for name in ("a", "b", "c"):
        add_connector(project, name)
    engine.failing = {"a"}
    results = run(project, engine, ["a", "b", "c"], jobs=1)
    assert results["a"].status == FAILED
    assert results["b"].status == BUILT and results["c"].status == BUILT


def test_tags_move_only_after_success_and_pins_are_dropped(project, engine):
    add_connector(project, "a")
    engine.failing = {"a"}
    run(project, engine, ["a"])
    refs = set(engine.refs)
    assert any(ref.endswith(f"ingestion-connector-base:{OM_VERSION}") for ref in refs)
    assert not any("ingestion-connector-a:" in ref for ref in refs)
    assert not any(ref.startswith(verify.PIN_REPOSITORY) for ref in refs)


def test_a_failed_smoke_test_discards_the_image_and_tags_nothing(project, engine):
    add_connector(project, "a")
    engine.unverified = {"a"}
    results = run(project, engine, ["a"])
    assert results["a"].status == FAILED and results["a"].cause == "plugin import failed"
    assert not engine.has("sha256:" + b"a".hex().ljust(64, "0"))
    assert not any("ingestion-connector-a:" in ref for ref in engine.refs)


def test_up_to_date_images_are_kept_and_get_their_tags_back(project, engine):
    add_connector(project, "a")
    built = run(project, engine, ["a"])
    latest = "openmetadata/ingestion-connector-a:latest"
    engine.untag(latest)  # e.g. moved by hand, or by a build of other inputs since reverted
    engine.order.clear()
    results = run(project, engine, ["a"])
    assert engine.order == []
    assert {r.status for r in results.values()} == {UP_TO_DATE}
    assert engine.inspect(latest).id == results["a"].image_id == built["a"].image_id


def test_a_noop_run_moves_no_tag_that_is_already_in_place(project, engine):
    add_connector(project, "a")
    run(project, engine, ["a"])
    engine.log.clear()
    results = run(project, engine, ["a"])
    assert {r.status for r in results.values()} == {UP_TO_DATE}
    assert engine.tagged == []


def test_the_source_label_is_a_remote_without_credentials_or_nothing(tmp_path, monkeypatch):
    from ingestion_factory.workflows import builder as builder_mod

    settings = settings_mod.load(settings_mod.pyproject_defaults(Path(__file__).resolve().parents[2]), tmp_path)
    for remote, label in (("https://user:token@github.com/acme/factory.git", "https://github.com/acme/factory.git"),
                          # a raw `@` or `/` in the password: the whole userinfo goes, up to the last `@`
                          ("https://user:p@ss@word@github.com/acme/factory.git", "https://github.com/acme/factory.git"),
                          ("https://user:pa/ss@github.com/acme/factory.git", "https://github.com/acme/factory.git"),
                          ("https://ghp_token@github.com/acme/factory.git", "https://github.com/acme/factory.git"),
                          ("https://github.com/acme/factory.git", "https://github.com/acme/factory.git"),
                          ("git@github.com:acme/factory.git", "git@github.com:acme/factory.git"),
                          ("/srv/git/factory", ""), ("file:///srv/git/factory", ""), ("", "")):
        monkeypatch.setattr(builder_mod, "_git", lambda settings, *args, remote=remote: remote)
        assert builder_mod._source_url(settings) == label, remote


def test_an_interrupt_moves_no_tag_ends_the_builds_and_keeps_what_was_done(project, engine):
    """Ctrl-C once let in-flight builds finish, smoke-test and tag after the interrupt."""
    import os
    import signal

    add_connector(project, "a")
    ended = threading.Event()
    plain_build = engine.build

    def build(request, on_progress=None):
        if Path(request.log_path).stem == "a":
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while this build runs
            assert ended.wait(60), "the interrupt did not end the running build"  # generous: CI machines are loaded
        return plain_build(request, on_progress)  # it finishes anyway, just after the interrupt

    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    plan = make_plan(catalog.discover(settings), ["a"], engine, settings)
    reasons = []
    builder = Builder(settings, engine, revision=None, run_build=build, smoke_test=engine.smoke_test,
                      end_builds=lambda reason: (reasons.append(reason), ended.set()))
    results = {r.name: r for r in builder.run(plan, jobs=2, fail_fast=False)}
    assert isinstance(builder.interrupted, KeyboardInterrupt) and reasons == ["interrupted (SIGINT)"]
    assert results["base"].status == BUILT  # done before the interrupt: kept, and in the report
    assert (results["a"].status, results["a"].detail, results["a"].details) == (NOT_BUILT, "interrupted (SIGINT)", ())
    assert not any("ingestion-connector-a:" in ref for ref in engine.refs)  # no tag moved after it
    assert not engine.has("sha256:" + b"a".hex().ljust(64, "0"))  # the untagged image is not left behind
    assert not any(ref.startswith(verify.PIN_REPOSITORY) for ref in engine.refs)


def test_an_interrupt_during_the_smoke_test_ends_it_and_runs_no_sbom_check(project, engine):
    """A smoke test under way once ran to its end after Ctrl-C (seconds, up to its timeout), then the SBOM check."""
    import os
    import signal

    add_connector(project, "a")
    ended = threading.Event()
    sbom_checked = []
    plain_smoke_test = engine.smoke_test

    def smoke_test(image_id):
        if engine.names[image_id] == "a":
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            assert ended.wait(60), "the interrupt did not end the running smoke test"
        return plain_smoke_test(image_id)  # it passes anyway, just after the interrupt

    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    plan = make_plan(catalog.discover(settings), ["a"], engine, settings)
    builder = Builder(settings, engine, revision=None, run_build=engine.build, smoke_test=smoke_test,
                      check_sbom=lambda image_id, name: sbom_checked.append(name),
                      end_builds=lambda reason: ended.set())
    results = {r.name: r for r in builder.run(plan, jobs=2, fail_fast=False)}
    assert (results["a"].status, results["a"].detail) == (NOT_BUILT, "interrupted (SIGINT)")
    assert sbom_checked == ["base"]  # none for the image whose smoke test the interrupt ended
    assert not any("ingestion-connector-a:" in ref for ref in engine.refs)


def test_no_verification_step_starts_after_an_interrupt(project, engine):
    add_connector(project, "a")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    plan = make_plan(catalog.discover(settings), ["a"], engine, settings)
    smoke_tested = []
    builder = Builder(settings, engine, revision=None, run_build=engine.build,
                      smoke_test=lambda image_id: smoke_tested.append(image_id))
    try:
        builder.interrupt(KeyboardInterrupt())
        # By default the interrupt ends both the BuildKit builds and the smoke tests of this process.
        assert buildkit.BUILDS.ended == verify.SMOKE_TESTS.ended == "interrupted (SIGINT)"
        with pytest.raises(buildkit.BuildInterrupted, match="interrupted \\(SIGINT\\)"):
            builder._verify(plan.items["a"], "sha256:" + "a" * 64)
        assert smoke_tested == []
    finally:
        buildkit.BUILDS.reset()
        verify.SMOKE_TESTS.reset()


def _smoke_test_waiting_for(engine, parent: str, child: str):
    """The parent's smoke test ends only once the child's build has started (or after 10 s)."""
    started = threading.Event()
    plain_build, plain_smoke = engine.build, engine.smoke_test

    def build(request, on_progress=None):
        if Path(request.log_path).stem == child:
            started.set()
        return plain_build(request, on_progress)

    def smoke_test(image_id):
        if engine.names[image_id] == parent:
            started.wait(10)
        return plain_smoke(image_id)

    engine.build, engine.smoke_test = build, smoke_test
    return started


def test_a_child_builds_while_its_parent_is_smoke_tested(project, engine):
    add_connector(project, "a")
    started = _smoke_test_waiting_for(engine, "base", "a")
    results = run(project, engine, ["a"])
    assert started.is_set()
    assert results["base"].status == BUILT and results["a"].status == BUILT
    assert results["a"].image_id in {image for ref, image in engine.refs.items() if "ingestion-connector-a:" in ref}


def test_a_parent_failing_its_smoke_test_discards_the_child_built_meanwhile(project, engine):
    add_connector(project, "a")
    add_connector(project, "grandchild", "x\n", 'parent = "a"\n')
    started = _smoke_test_waiting_for(engine, "base", "a")
    engine.unverified = {"base"}
    results = run(project, engine, ["grandchild"], jobs=3)
    assert started.is_set()
    assert results["base"].status == FAILED
    assert (results["a"].status, results["a"].detail) == (NOT_BUILT, "parent base was not built")
    assert results["grandchild"].status == NOT_BUILT and "parent a" in results["grandchild"].detail
    assert not engine.has("sha256:" + b"a".hex().ljust(64, "0"))  # built, never tagged, not left behind
    assert not any("ingestion-connector-" in ref for ref in engine.refs)
