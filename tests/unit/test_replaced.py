"""Images a build replaced are removed (issue 30, bug 2): in a git checkout an old image keeps its commit
tag, and a push leaves `inputs-<hash>` and the registry's names on it; those are the factory's own tags and
go with it. Anyone else's tag, or a container, keeps it."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine

from ingestion_factory.engine.daemon import remove_replaced
from ingestion_factory.model.names import OwnTags

PIN = "ingestion-factory-pin/image"
REPO = "ns/ingestion-connector-mysql"
OWN = OwnTags(REPO, "2.0.7.0")
OLD = "sha256:" + "0" * 64
NEW = "sha256:" + "1" * 64
INPUTS = "inputs-" + "ab" * 16


def engine_with(images: dict[str, list[str]], digests: dict[str, list[str]] | None = None,
                containers: tuple[str, ...] = ()) -> FakeEngine:
    """Images by ID with their tags and digest references, and the containers that use some of them."""
    engine = FakeEngine()
    for image_id, tags in images.items():
        engine.add(image_id, {}, tags, size=1000)
    for image_id, refs in (digests or {}).items():
        engine.refs.update(dict.fromkeys(refs, image_id))
    for image_id in containers:
        engine.run_container(image_id)
    return engine


@pytest.mark.parametrize("ref, owned", [
    (f"{REPO}:2.0.7.0", True), (f"{REPO}:latest", True), (f"{REPO}:0123456789ab", True),
    (f"{REPO}:0123456789ab-dirty", True), (f"{REPO}:0123456789ab-dirty-arm64", True),
    (f"{REPO}:2.0.7.0-arm64", True), (f"127.0.0.1:5000/{REPO}:{INPUTS}", True),
    (f"registry.example.com/{REPO}:2.0.7.0-amd64", True), (f"localhost/{REPO}:latest", True),
    (f"127.0.0.1:5000/{REPO}@sha256:" + "f" * 64, True),
    (f"{REPO}:my-release", False), (f"{REPO}:1.12.14.2", False), (f"{REPO}:0123", False),
    ("other/ingestion-connector-mysql:0123456789ab", False), (f"team/{REPO}:latest", False),
    (f"{REPO}-extra:latest", False), (f"{REPO}:{INPUTS}-x", False),
])
def test_the_factory_owns_only_the_tags_it_gives(ref, owned):
    assert OWN.owns(ref) is owned


def test_an_old_image_with_an_older_commit_tag_and_a_pushs_tags_is_removed():
    """Before: any tag kept the old image, so in a git checkout nothing was ever removed."""
    engine = engine_with({OLD: [f"{REPO}:0123456789ab", f"{REPO}:fedcba987654-dirty",
                           f"127.0.0.1:5000/{REPO}:2.0.7.0", f"127.0.0.1:5000/{REPO}:{INPUTS}", f"{PIN}:x"],
                     NEW: [f"{REPO}:2.0.7.0", f"{REPO}:latest", f"{REPO}:aaaaaaaaaaaa"]},
                    digests={OLD: [f"127.0.0.1:5000/{REPO}@sha256:" + "f" * 64, f"{REPO}@sha256:" + "e" * 64]})
    removal = remove_replaced(engine, [(OLD, OWN)], PIN)
    assert (removal.removed, removal.freed, removal.kept) == (1, 1000, ())
    assert not engine.has(OLD) and engine.tags_of(NEW) == [f"{REPO}:2.0.7.0", f"{REPO}:latest", f"{REPO}:aaaaaaaaaaaa"]
    assert engine.refs.keys() == set(engine.tags_of(NEW))  # no digest reference of the old image left either


@pytest.mark.parametrize("foreign", [f"{REPO}:my-release", "myorg/mysql:prod",
                                     "otherns/ingestion-connector-mysql:0123456789ab"])
def test_a_tag_the_factory_did_not_give_keeps_the_image_and_all_its_tags(foreign):
    tags = [f"{REPO}:0123456789ab", foreign]
    engine = engine_with({OLD: tags})
    removal = remove_replaced(engine, [(OLD, OWN)], PIN)
    assert removal.removed == 0 and removal.kept == (f"{OLD[7:19]}: held by {foreign}",)
    assert engine.tags_of(OLD) == tags


def test_an_image_a_container_uses_is_kept_with_its_tags():
    engine = engine_with({OLD: [f"{REPO}:0123456789ab"]}, containers=(OLD,))
    removal = remove_replaced(engine, [(OLD, OWN)], PIN)
    assert removal.removed == 0 and removal.kept == (f"{OLD[7:19]}: a container uses it",)
    assert engine.tags_of(OLD) == [f"{REPO}:0123456789ab"]


def test_an_image_already_gone_is_passed_over():
    assert remove_replaced(engine_with({}), [(OLD, OWN)], PIN) == remove_replaced(engine_with({}), [], PIN)
