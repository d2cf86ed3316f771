"""Images a build replaced are removed (issue 30, bug 2): in a git checkout an old image keeps its commit
tag, and a push leaves `inputs-<hash>` and the registry's names on it; those are the factory's own tags and
go with it. Anyone else's tag, or a container, keeps it."""

from __future__ import annotations

import pytest

from ingestion_factory.engine.daemon import remove_replaced
from ingestion_factory.model.names import OwnTags

PIN = "ingestion-factory-pin/image"
REPO = "ns/ingestion-connector-mysql"
OWN = OwnTags(REPO, "2.0.7.0")
OLD = "sha256:" + "0" * 64
NEW = "sha256:" + "1" * 64
INPUTS = "inputs-" + "ab" * 16


class Engine:
    """Images by ID with their tags and digest references; removes what the engine would remove."""

    def __init__(self, images: dict[str, list[str]], digests: dict[str, list[str]] | None = None,
                 containers: tuple[str, ...] = ()):
        self.tags = {image_id: list(tags) for image_id, tags in images.items()}
        self.digests = {image_id: list((digests or {}).get(image_id, [])) for image_id in images}
        self.used_by = containers
        self.api = self
        self.images = self

    def containers(self, all=False):
        return [{"Id": "c1", "ImageID": image_id} for image_id in self.used_by]

    def inspect_image(self, ref):
        from docker.errors import NotFound

        for image_id, tags in self.tags.items():
            if ref == image_id or ref in tags:
                return {"Id": image_id, "RepoTags": tags, "RepoDigests": self.digests[image_id], "Size": 1000}
        raise NotFound(f"no such image: {ref}")

    def remove(self, ref, noprune=False):
        from docker.errors import APIError

        for image_id in list(self.tags):
            if ref in self.tags[image_id] + self.digests[image_id] and len(self.tags[image_id] +
                                                                       self.digests[image_id]) == 1:
                if image_id in self.used_by:  # untagged, kept for its container
                    self.tags[image_id], self.digests[image_id] = [], []
                else:  # the last reference: the image goes with it
                    del self.tags[image_id], self.digests[image_id]
                return
            if ref in self.tags[image_id]:
                self.tags[image_id].remove(ref)
                # As the engine does: a repository's last tag takes its digest references with it.
                repository = ref.rpartition(":")[0]
                if not any(tag.rpartition(":")[0] == repository for tag in self.tags[image_id]):
                    self.digests[image_id] = [d for d in self.digests[image_id] if d.partition("@")[0] != repository]
                return
            if ref in self.digests[image_id]:
                self.digests[image_id].remove(ref)
                return
            if ref == image_id:
                if self.tags[image_id] or self.digests[image_id] or image_id in self.used_by:
                    raise APIError("conflict: unable to delete (must be forced)")
                del self.tags[image_id], self.digests[image_id]
                return
        from docker.errors import NotFound

        raise NotFound(f"no such image: {ref}")


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
    engine = Engine({OLD: [f"{REPO}:0123456789ab", f"{REPO}:fedcba987654-dirty",
                           f"127.0.0.1:5000/{REPO}:2.0.7.0", f"127.0.0.1:5000/{REPO}:{INPUTS}", f"{PIN}:x"],
                     NEW: [f"{REPO}:2.0.7.0", f"{REPO}:latest", f"{REPO}:aaaaaaaaaaaa"]},
                    digests={OLD: [f"127.0.0.1:5000/{REPO}@sha256:" + "f" * 64, f"{REPO}@sha256:" + "e" * 64]})
    removal = remove_replaced(engine, [(OLD, OWN)], PIN)
    assert (removal.removed, removal.freed, removal.kept) == (1, 1000, ())
    assert OLD not in engine.tags and engine.tags[NEW] == [f"{REPO}:2.0.7.0", f"{REPO}:latest", f"{REPO}:aaaaaaaaaaaa"]


@pytest.mark.parametrize("foreign", [f"{REPO}:my-release", "myorg/mysql:prod",
                                     "otherns/ingestion-connector-mysql:0123456789ab"])
def test_a_tag_the_factory_did_not_give_keeps_the_image_and_all_its_tags(foreign):
    tags = [f"{REPO}:0123456789ab", foreign]
    engine = Engine({OLD: tags})
    removal = remove_replaced(engine, [(OLD, OWN)], PIN)
    assert removal.removed == 0 and removal.kept == (f"{OLD[7:19]}: held by {foreign}",)
    assert engine.tags[OLD] == tags


def test_an_image_a_container_uses_is_kept_with_its_tags():
    engine = Engine({OLD: [f"{REPO}:0123456789ab"]}, containers=(OLD,))
    removal = remove_replaced(engine, [(OLD, OWN)], PIN)
    assert removal.removed == 0 and removal.kept == (f"{OLD[7:19]}: a container uses it",)
    assert engine.tags[OLD] == [f"{REPO}:0123456789ab"]


def test_an_image_already_gone_is_passed_over():
    assert remove_replaced(Engine({}), [(OLD, OWN)], PIN) == remove_replaced(Engine({}), [], PIN)
