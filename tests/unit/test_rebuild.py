"""inv rebuild without Docker: the scratch namespace, what is taken from the record, the verdicts, bad input.

The builds are test_builder's fake runner (an image ID made from the image's name, so a rebuild is identical
unless the test makes it differ); the engine is the strict fake, so "nothing left behind" is the engine's rules.
"""

from contextlib import nullcontext

import pytest
from project_tree import add_connector
from test_builder import FakeEngine, engine  # noqa: F401  (the fixture)

from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog, image_diff
from ingestion_factory.model.plan import LABEL_EPOCH, LABEL_REVISION, make_plan
from ingestion_factory.progress import Quiet
from ingestion_factory.workflows import rebuild as rebuild_mod
from ingestion_factory.workflows.builder import Builder
from ingestion_factory.workflows.rebuild import RebuildStatus


@pytest.fixture
def built(project, engine, monkeypatch):
    """Connector `a` and its base built into the engine (the run a rebuild compares with), locks taken as current."""
    monkeypatch.setattr(rebuild_mod.lock_mod, "require_current", lambda targets, settings, names: {})
    monkeypatch.setattr(rebuild_mod.lock_mod, "targets", lambda found, settings: {})
    add_connector(project, "a")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    found = catalog.discover(settings)
    builder = Builder(settings, engine, revision="abc123", run_build=engine.build, smoke_test=engine.smoke_test)
    results = {r.name: r for r in builder.run(make_plan(found, ["a"], engine, settings), jobs=1, fail_fast=True)}
    assert {r.status.value for r in results.values()} == {"built"}
    engine.builds_before = len(engine.order)
    return settings, found, results


def rebuild(engine, settings, found, names, **options):
    def make_builder(*args, **kwargs):
        return Builder(*args, run_build=engine.build, smoke_test=engine.smoke_test, **kwargs)

    return rebuild_mod.rebuild(settings, found, names, engine=engine, progress=Quiet(),
                               display=lambda plan: nullcontext(None), make_builder=make_builder, **options)


def scratch_left(engine):
    return [ref for ref in engine.refs if "-rebuild-" in ref]


def test_an_identical_rebuild_builds_only_the_image_from_its_recorded_parent_and_leaves_no_scratch_tag(built, engine):
    settings, found, first = built
    before = dict(engine.refs)
    (result,) = rebuild(engine, settings, found, ["a"])
    assert result.status is RebuildStatus.IDENTICAL and not result.failed
    assert result.image_id == result.rebuilt_id == first["a"].image_id
    assert result.parent_id == first["base"].image_id and result.revision == "abc123"
    assert engine.order[engine.builds_before:] == ["a"]  # the base is taken as recorded, not rebuilt
    assert scratch_left(engine) == [] and engine.refs == before  # the user's tags exactly as they were


def test_the_rebuild_takes_the_recorded_revision_and_epoch_not_the_checkout_s(built, engine):
    settings, found, first = built
    requests = []
    build = engine.build
    engine.build = lambda request, on_progress=None: requests.append(request) or build(request, on_progress)
    original = engine.by_id[first["a"].image_id]
    original.labels[LABEL_EPOCH] = "1700000000"
    rebuild(engine, settings, found, ["a"])
    assert requests[-1].build_args["SOURCE_DATE_EPOCH"] == "1700000000"
    assert requests[-1].labels[LABEL_REVISION] == "abc123" and requests[-1].labels[LABEL_EPOCH] == "1700000000"


def test_a_different_rebuild_is_reported_with_its_diff_and_removed_unless_kept(built, engine, monkeypatch):
    settings, found, first = built
    build = engine.build

    def other_image(request, on_progress=None):
        image_id = build(request, on_progress)
        engine.add("sha256:" + "d" * 64, engine.by_id[image_id].labels, size=200)
        engine.names["sha256:" + "d" * 64] = "a"
        return "sha256:" + "d" * 64

    engine.build = other_image
    diff = image_diff.ImageDiff(first["a"].image_id, "sha256:" + "d" * 64)
    monkeypatch.setattr(rebuild_mod, "compare", lambda engine, before, after, progress: diff)
    (result,) = rebuild(engine, settings, found, ["a"])
    assert result.status is RebuildStatus.DIFFERENT and result.failed and result.diff is diff
    assert scratch_left(engine) == [] and "sha256:" + "d" * 64 not in engine.by_id
    assert engine.inspect(first["a"].ref).id == first["a"].image_id
    (kept,) = rebuild(engine, settings, found, ["a"], keep=True)
    assert kept.kept and all(engine.inspect(ref).id == "sha256:" + "d" * 64 for ref in kept.kept)
    assert set(scratch_left(engine)) == set(kept.kept)


def test_a_smoke_test_that_fails_on_the_rebuild_never_removes_the_original(built, engine):
    """The rebuild lands on the original's very ID; the failed verification must not discard it."""
    settings, found, first = built
    engine.unverified = {"a"}
    (result,) = rebuild(engine, settings, found, ["a"])
    assert result.status is RebuildStatus.NOT_REBUILT and result.failed
    assert engine.inspect(first["a"].ref).id == first["a"].image_id
    assert scratch_left(engine) == []


def test_bad_input_is_refused_before_anything_is_built(built, engine, project):
    settings, found, first = built
    with pytest.raises(ConfigError, match="name the images to rebuild"):
        rebuild(engine, settings, found, [])
    with pytest.raises(ConfigError, match="unknown connector 'nope'"):
        rebuild(engine, settings, found, ["a", "nope"])
    add_connector(project, "b")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    found = catalog.discover(settings)
    with pytest.raises(ConfigError, match="is not in the engine") as missing:
        rebuild(engine, settings, found, ["a", "b"])
    assert "inv build-connectors -c b" in missing.value.hint
    assert engine.order[engine.builds_before:] == [] and scratch_left(engine) == []


def test_a_checkout_whose_inputs_are_not_the_image_s_names_the_revision_it_was_built_at(built, engine, project):
    settings, found, first = built
    (project / "images" / "connectors" / "a" / "requirements.txt").write_text("pymysql>=1.2\n")
    found = catalog.discover(settings)
    with pytest.raises(ConfigError, match="is not what this checkout builds: inputs hash") as stale:
        rebuild(engine, settings, found, ["a"])
    assert "(abc123)" in stale.value.hint
    assert engine.order[engine.builds_before:] == [] and scratch_left(engine) == []


def test_a_recorded_parent_the_engine_no_longer_has_is_bad_input(built, engine):
    settings, found, first = built
    engine.by_id[first["a"].image_id].labels["io.ingestion-factory.parent-id"] = "sha256:" + "9" * 64
    with pytest.raises(ConfigError, match="records its parent as sha256:9+, which is not in the engine"):
        rebuild(engine, settings, found, ["a"])
    assert scratch_left(engine) == []


def test_the_same_name_twice_is_rebuilt_once(built, engine):
    settings, found, _ = built
    assert len(rebuild(engine, settings, found, ["a", "ingestion-connector-a"])) == 1
