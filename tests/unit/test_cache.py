"""The registry cache without Docker: cache tags, the checks on a pulled image, fall-back, the builder's use of it."""

import json
from dataclasses import dataclass, field

import pytest
from fake_engine import FakeEngine, Image
from project_tree import add_connector
from test_builder import BUILT, PYTHON_ID, engine  # noqa: F401  (engine: a fixture)

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine.registry import REDACTED, Credentials, Manifest, RegistryError
from ingestion_factory.errors import FactoryError
from ingestion_factory.model import catalog
from ingestion_factory.model.names import cache_tag, repository_on
from ingestion_factory.model.plan import LABEL_INPUTS, LABEL_NAME, LABEL_PARENT, LABEL_PLATFORM, ImageInfo, make_plan
from ingestion_factory.model.results import BuildStatus
from ingestion_factory.platforms import ARM64, DEFAULT, Platform
from ingestion_factory.workflows.builder import Builder
from ingestion_factory.workflows.cache import (
    CacheMismatch,
    Hit,
    RegistryCache,
    check_pulled,
    read_pull_stream,
)
from ingestion_factory.workflows.push import publish_tags

HASH = "sha256:" + "ab" * 32
IMAGE_ID = "sha256:" + "c" * 64
PARENT_ID = "sha256:" + "d" * 64
DIGEST = "sha256:" + "e" * 64


def test_the_cache_tag_is_the_first_32_hex_digits_of_the_input_hash():
    assert cache_tag(HASH) == "inputs-" + "ab" * 16
    assert len(cache_tag(HASH)) <= 128 and ":" not in cache_tag(HASH)
    for bad in ("", "sha256:xyz", "md5:" + "a" * 64, "sha256:" + "A" * 64):
        with pytest.raises(ValueError):
            cache_tag(bad)


def attrs(image_id=IMAGE_ID, architecture="amd64", **labels) -> Image:
    """The image a pull brings."""
    base = {LABEL_INPUTS: HASH, LABEL_PARENT: PARENT_ID, LABEL_NAME: "a"}
    return Image(image_id, {**base, **labels}, architecture=architecture)


def as_info(image: Image) -> ImageInfo:
    """What the engine says of a pulled image."""
    return ImageInfo(image.id, image.labels, image.size, architecture=image.architecture, os=image.os)


def registry_config(pulled: Image) -> bytes:
    """The config blob a registry holds for an image the engine shows as `pulled`."""
    return json.dumps({"os": pulled.os, "architecture": pulled.architecture,
                       "config": {"Labels": pulled.labels}}).encode()


EXPECTED = {LABEL_INPUTS: HASH, LABEL_PARENT: PARENT_ID, LABEL_NAME: "a"}


def test_a_pulled_image_must_be_the_manifests_config_and_carry_the_plans_labels():
    check_pulled(as_info(attrs()), IMAGE_ID, EXPECTED)
    for pulled, config, says in (
        (attrs(image_id=PARENT_ID), IMAGE_ID, "not the manifest's config"),
        (attrs(), None, "not the manifest's config"),  # an index, or a registry that gave no config
        (attrs(**{LABEL_PARENT: "sha256:" + "0" * 64}), IMAGE_ID, LABEL_PARENT),
        (attrs(**{LABEL_INPUTS: "sha256:" + "0" * 64}), IMAGE_ID, LABEL_INPUTS),
        (attrs(**{LABEL_NAME: "b"}), IMAGE_ID, LABEL_NAME),
    ):
        with pytest.raises(CacheMismatch, match=says):
            check_pulled(as_info(pulled), config, EXPECTED)


def test_the_pull_stream_counts_bytes_and_raises_on_errors():
    events = [{"status": "Pulling fs layer", "id": "l1"},
              {"status": "Downloading", "id": "l1", "progressDetail": {"current": 5, "total": 100}},
              {"status": "Downloading", "id": "l2", "progressDetail": {"current": 5, "total": 50}},
              {"status": "Digest: " + DIGEST}]
    assert read_pull_stream(iter(events)) == 150
    with pytest.raises(FactoryError, match="denied"):
        read_pull_stream(iter([{"errorDetail": {"message": "denied: access"}, "error": "denied: access"}]))


# --- RegistryCache.fetch against fakes -----------------------------------------------------------------


@dataclass
class FakeClient:
    manifests: dict = field(default_factory=dict)  # (repository, tag) -> Manifest
    error: str = ""
    registry: str = "127.0.0.1:5000"
    asked: list = field(default_factory=list)
    blobs: dict = field(default_factory=dict)  # digest -> bytes (image configs)

    def blob(self, repository, digest):
        if self.error:
            raise RegistryError(self.error)
        return self.blobs.get(digest)

    def ping(self):
        if self.error:
            raise RegistryError(self.error)

    def manifest(self, repository, tag):
        self.asked.append((repository, tag))
        if self.error:
            raise RegistryError(self.error)
        return self.manifests.get((repository, tag))


@dataclass(frozen=True)
class FakeItem:
    name: str = "a"
    platform: Platform = DEFAULT

    @property
    def spec(self):
        return self

    image_name = "ingestion-connector-a"


REPO = "127.0.0.1:5000/ns/ingestion-connector-a"


def cache_with(served_attrs=None, *, error="", pull_error=None, config=IMAGE_ID, credentials=None,
               registry_attrs=None):
    """`registry_attrs`: what the registry's config blob says, when it is not what the pull gives."""
    client = FakeClient(error=error)
    daemon = FakeEngine()
    daemon.pull_error = pull_error
    if served_attrs is not None:
        client.manifests[(REPO, cache_tag(HASH))] = Manifest(DIGEST, "application/vnd.oci.image.manifest.v1+json",
                                                              config)
        client.blobs[config] = registry_config(registry_attrs or served_attrs)
        daemon.registry[f"{REPO}@{DIGEST}"] = served_attrs
    warnings = []
    cache = RegistryCache(daemon, client, lambda name: f"127.0.0.1:5000/ns/{name}", credentials=credentials,
                          warn=warnings.append)
    return cache, daemon, client, warnings


def test_a_hit_is_pulled_by_digest_and_checked():
    cache, daemon, client, warnings = cache_with(attrs())
    hit = cache.fetch(FakeItem(), HASH, PARENT_ID)
    assert hit == Hit(IMAGE_ID, f"{REPO}:{cache_tag(HASH)}", DIGEST, 10)
    assert client.asked == [(REPO, cache_tag(HASH))]
    assert daemon.pulls == [f"{REPO}@{DIGEST}"]  # by digest: the manifest just read, whatever the tag does
    assert warnings == []


def test_a_miss_or_a_mismatch_means_build_and_the_cache_stays_on():
    cache, daemon, _, warnings = cache_with(None)
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert daemon.pulls == [] and cache.misses == ["a: not in the cache"] and not cache.off_reason

    # The registry's config says so before anything is pulled.
    cache, daemon, _, warnings = cache_with(attrs(**{LABEL_PARENT: "sha256:" + "0" * 64}))
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert daemon.pulls == [] and "does not match" in cache.misses[0] and not cache.off_reason
    assert len(warnings) == 1 and LABEL_PARENT in warnings[0] and "building it instead" in warnings[0]

    # The pulled image is not what the registry's config said (a registry that lies): checked again.
    cache, daemon, _, warnings = cache_with(attrs(**{LABEL_PARENT: "sha256:" + "0" * 64}), registry_attrs=attrs())
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert daemon.image_ids() == set() and daemon.refs == {}  # the wrong image does not stay behind
    assert "does not match" in cache.misses[0] and len(warnings) == 1 and not cache.off_reason


@pytest.mark.parametrize("served, item, says", [
    (attrs(architecture="arm64"), FakeItem(), "it is a linux/arm64 image, the plan is for linux/amd64"),
    (attrs(**{LABEL_PLATFORM: "linux/arm64"}), FakeItem(), "label io.ingestion-factory.platform is 'linux/arm64'"),
    (attrs(), FakeItem(platform=ARM64), "it is a linux/amd64 image, the plan is for linux/arm64"),
])
def test_an_entry_for_another_platform_is_built_with_one_warning_and_never_pulled(served, item, says):
    cache, daemon, _, warnings = cache_with(served)
    assert cache.fetch(item, HASH, PARENT_ID) is None
    assert daemon.pulls == [] and not cache.off_reason
    assert len(warnings) == 1 and says in warnings[0] and "building it instead" in warnings[0], warnings
    # And should the registry's config say otherwise, the pulled image is checked the same way.
    cache, daemon, _, warnings = cache_with(served, registry_attrs=attrs(architecture=item.platform.architecture))
    assert cache.fetch(item, HASH, PARENT_ID) is None
    assert len(warnings) == 1 and says in warnings[0] and daemon.image_ids() == set()


def test_a_manifest_list_under_a_cache_tag_is_not_pulled():
    cache, daemon, _, warnings = cache_with(attrs(), config=None)
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert daemon.pulls == [] and len(warnings) == 1 and "manifest list" in warnings[0]


@pytest.mark.parametrize("config_blob, says", [
    (b"[" * (4 * 1024 * 1024), "its config is nested deeper than 100 levels"),
    (b"<html>", "its config is not JSON"),
    (json.dumps({"os": "linux", "architecture": "amd64", "config": {"Labels": ["x"]}}).encode(),
     "its config's labels are list, not a mapping"),
], ids=["4 MiB nested", "not JSON", "labels a list"])
def test_a_config_blob_nested_too_deep_or_malformed_is_one_warning_and_a_build(config_blob, says):
    cache, daemon, client, warnings = cache_with(attrs())
    client.blobs[IMAGE_ID] = config_blob
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert daemon.pulls == [] and not cache.off_reason  # the next image may still come from the cache
    assert len(warnings) == 1 and says in warnings[0] and "building it instead" in warnings[0], warnings


def test_the_builder_asks_the_cache_for_the_hash_it_labels_a_build_with_platform_and_install_included(
        project, engine):
    """An arm64 (or cross-installed) image is looked up under its own inputs tag, never under amd64's."""
    add_connector(project, "a")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    engine.hold(ARM64.ref(settings.python_image), ImageInfo("sha256:" + "a1" * 32, {}, 1, architecture="arm64"))
    asked_by_platform = {}
    for platform in (DEFAULT, ARM64):
        plan = make_plan(catalog.discover(settings), ["a"], engine, settings, platform=platform)
        cache = FakeCache(engine, hits=set())
        results = Builder(settings, engine, revision=None, run_build=engine.build,
                          smoke_test=engine.smoke_test, cache=cache).run(plan, jobs=1, fail_fast=False)
        built = {r.name: engine.inspect(r.image_id).labels[LABEL_INPUTS] for r in results}
        asked = {name: hash_ for name, hash_, _ in cache.asked}
        assert asked == built, platform  # the cache key is what the build labels the image with
        asked_by_platform[platform] = asked
    assert asked_by_platform[ARM64]["base"] != asked_by_platform[DEFAULT]["base"]


@pytest.mark.parametrize("error, pull_error", [
    ("127.0.0.1:5000 is not reachable: connection refused", None),
    ("127.0.0.1:5000 requires a login: unauthorized", None),
    ("", RuntimeError("pull access denied")),
])
def test_a_registry_that_is_down_or_refuses_turns_the_cache_off_with_one_warning(error, pull_error):
    cache, _, client, warnings = cache_with(attrs(), error=error, pull_error=pull_error)
    for _ in range(3):
        assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert len(warnings) == 1 and "building instead of pulling" in warnings[0]
    assert len(client.asked) == 1  # off after the first failure: no more round trips
    assert cache.off_reason


def test_ping_failure_is_the_one_warning():
    cache, _, _, warnings = cache_with(attrs(), error="127.0.0.1:5000 is not reachable: connection refused")
    assert cache.ping() is False
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert len(warnings) == 1 and "connection refused" in warnings[0]


PASSWORD = "Pw-7f3c91e2d4"


@pytest.mark.parametrize("error, pull_error", [
    (f"https://factory:{PASSWORD}@127.0.0.1:5000/v2/ refused: unauthorized", None),
    ("", RuntimeError(f"pull access denied for factory:{PASSWORD}")),
])
def test_a_refusal_never_shows_the_password(error, pull_error):
    cache, _, _, warnings = cache_with(attrs(), error=error, pull_error=pull_error,
                                       credentials=Credentials("factory", PASSWORD, source="test"))
    assert cache.fetch(FakeItem(), HASH, PARENT_ID) is None
    assert PASSWORD not in cache.off_reason and REDACTED in cache.off_reason
    assert len(warnings) == 1 and PASSWORD not in warnings[0] and REDACTED in warnings[0]


# --- the builder with a cache ------------------------------------------------------------------------


class FakeCache:
    """Serves images by name: a hit for names in `hits`, None (build it) for the rest."""

    def __init__(self, fake_engine, hits):
        self.engine, self.hits, self.asked = fake_engine, hits, []
        self.misses, self.off_reason = [], ""

    def fetch(self, item, input_hash, parent_id):
        self.asked.append((item.name, input_hash, parent_id))
        if item.name not in self.hits:
            return None
        image_id = "sha256:" + item.name.encode().hex().rjust(64, "f")[:64]
        self.engine.add(image_id, {LABEL_INPUTS: input_hash, LABEL_PARENT: parent_id}, size=300)
        self.engine.names[image_id] = item.name
        return Hit(image_id, f"reg/{item.name}:{input_hash[:10]}", DIGEST)

    def release(self, hit):
        self.released = getattr(self, "released", []) + [hit.ref]


def run_with_cache(project, fake_engine, targets, hits, *, force=False):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    plan = make_plan(catalog.discover(settings), targets, fake_engine, settings, force=force)
    cache = FakeCache(fake_engine, hits)
    builder = Builder(settings, fake_engine, revision=None, run_build=fake_engine.build,
                      smoke_test=fake_engine.smoke_test, cache=cache)
    return {r.name: r for r in builder.run(plan, jobs=2, fail_fast=False)}, cache


def test_pulled_images_are_verified_and_tagged_and_children_hash_the_pulled_parent(project, engine):
    add_connector(project, "a")
    add_connector(project, "b")
    results, cache = run_with_cache(project, engine, ["a", "b"], hits={"base", "a"})
    assert results["base"].status == BuildStatus.PULLED and results["a"].status == BuildStatus.PULLED
    assert results["b"].status == BUILT
    assert engine.order == ["b"]  # only the miss was built
    base_id = results["base"].image_id
    asked = {name: parent for name, _, parent in cache.asked}
    assert asked == {"base": PYTHON_ID, "a": base_id, "b": base_id}
    assert any(ref.endswith("ingestion-connector-a:latest") for ref in engine.refs)
    assert len(cache.released) == 2  # the pulls' digest references are dropped once the tags are in place


def test_a_pulled_image_that_fails_its_smoke_test_fails_like_a_built_one(project, engine):
    add_connector(project, "a")
    engine.unverified = {"a"}
    results, _ = run_with_cache(project, engine, ["a"], hits={"base", "a"})
    assert results["a"].status == BuildStatus.FAILED and results["a"].cause == "plugin import failed"
    assert not any("ingestion-connector-a:" in ref for ref in engine.refs)


def test_force_rebuilds_even_when_the_cache_has_the_image_and_the_rest_may_still_be_pulled(project, engine):
    """--force means "rebuild it": pulling the cache's copy of the same inputs would rebuild nothing."""
    add_connector(project, "a")
    run_with_cache(project, engine, ["a"], hits=set())  # base and a exist and are up to date
    add_connector(project, "b")  # missing: not forced, so the cache may serve it
    engine.order.clear()
    results, cache = run_with_cache(project, engine, ["a", "b"], hits={"a", "b"}, force=True)
    assert results["a"].status == BUILT and results["a"].detail == "--force"
    assert results["b"].status == BuildStatus.PULLED
    assert engine.order == ["a"]  # the forced image was built, the missing one pulled
    assert [name for name, _, _ in cache.asked] == ["b"]  # a forced image is never looked up


# --- pushing the cache tag --------------------------------------------------------------------------


def test_push_adds_the_inputs_tag_after_the_builds_tags():
    @dataclass
    class Item:
        tags: list
        input_hash: str | None

    assert publish_tags(Item(["1.0", "abc", "latest"], HASH)) == ["1.0", "abc", "latest", cache_tag(HASH)]
    assert publish_tags(Item(["1.0", "latest"], HASH), latest=False) == ["1.0", cache_tag(HASH)]
    assert publish_tags(Item(["1.0"], None)) == ["1.0"]


@pytest.mark.parametrize("registry, repository, expected", [
    ("mirror.local:5000", "ns/ingestion-connector-a", "mirror.local:5000/ns/ingestion-connector-a"),
    ("mirror.local:5000", "registry.example.com/ns/ingestion-connector-a", "mirror.local:5000/ns/ingestion-connector-a"),
    ("", "127.0.0.1:5000/ns/ingestion-connector-a", "ns/ingestion-connector-a"),
])
def test_a_mirror_gets_the_same_repository_path(registry, repository, expected):
    assert repository_on(registry, repository) == expected


@pytest.mark.parametrize("flag, used", [(None, "reg:5000"), ("mirror:5000", "mirror:5000"), ("", "")])
def test_build_connectors_takes_the_cache_from_the_setting_unless_the_flag_names_another_or_turns_it_off(
        monkeypatch, flag, used):
    """factory.cache_from is the default; `--cache-from R` replaces it and `--cache-from ''` turns it off."""
    import contextlib

    import invoke

    import tasks

    builds = []
    monkeypatch.setattr(tasks, "_one_run", lambda settings, no_wait: contextlib.nullcontext())
    monkeypatch.setattr(tasks.commands, "build_versions", lambda views, names, **options: builds.append(views))
    configured = {**settings_mod.pyproject_defaults(tasks.ROOT), "cache_from": "reg:5000"}
    tasks.build_connectors(invoke.Context(invoke.Config(overrides={"factory": configured})), cache_from=flag)
    [views] = builds
    assert {settings.cache_from for settings, _ in views} == {used}
