"""Bundles without Docker: the manifest's round trip and validation, atomic writing, checksum and truncation checks."""

import io
import json
import tarfile
import time

import pytest
from rich.console import Console

from ingestion_factory import settings as settings_mod
from ingestion_factory.workflows import bundle as bundle_mod
from ingestion_factory.workflows.bundle import BundledImage, BundleManifest, BundleRefused

ID_A, ID_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
IMAGES = [
    BundledImage("base-datahub", "ns/ingestion-connector-base-datahub", ID_A, ("1.7.0.17", "latest"),
                 "sha256:" + "1" * 64, "datahub", "1.7.0.17", None, "sha256:" + "9" * 64),
    BundledImage("datahub-sqlite", "ns/ingestion-connector-datahub-sqlite", ID_B, ("1.7.0.17", "latest"),
                 "sha256:" + "2" * 64, "datahub", "1.7.0.17", "base-datahub", ID_A,
                 lock_digest="sha256:" + "3" * 64, sbom="/opt/ingestion/sbom.json"),
]
def _tar(members: dict) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


# What `docker save` by image ID writes: layers, and a manifest.json naming no image.
SAVED = _tar({"l1/layer.tar": b"layer-one " * 1000, "l2/layer.tar": b"layer-two " * 2000,
              "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": None, "Layers": ["l1/layer.tar"]}]).encode()})
PAYLOAD = [SAVED[:5000], SAVED[5000:20000], SAVED[20000:]]
QUIET = Console(quiet=True)


@pytest.fixture
def written(tmp_path):
    output = tmp_path / "out" / "site.bundle"
    manifest = bundle_mod.write_bundle(None, IMAGES, output, QUIET, chunks=iter(PAYLOAD))
    return output, manifest


def test_the_manifest_round_trips_with_lock_digest_and_sbom(written):
    output, manifest = written
    assert manifest.archive_size == sum(len(c) for c in PAYLOAD)
    read = bundle_mod.read_manifest(output)
    assert read == manifest
    assert read.images[1].lock_digest.startswith("sha256:") and read.images[1].sbom == "/opt/ingestion/sbom.json"
    assert read.images[1].refs == ["ns/ingestion-connector-datahub-sqlite:1.7.0.17",
                                   "ns/ingestion-connector-datahub-sqlite:latest"]
    bundle_mod.check_archive(output, read, QUIET)  # intact: no error
    with tarfile.open(output) as tar:
        assert tar.getnames() == ["bundle.json", "images.tar"]
        assert tar.extractfile("images.tar").read() == b"".join(PAYLOAD)


def test_writing_is_atomic(tmp_path):
    output = tmp_path / "site.bundle"
    output.write_bytes(b"the previous bundle")

    def failing():
        yield b"some bytes"
        raise RuntimeError("the engine went away")

    with pytest.raises(RuntimeError):
        bundle_mod.write_bundle(None, IMAGES, output, QUIET, chunks=failing())
    assert output.read_bytes() == b"the previous bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["site.bundle"]  # no temp file left


def test_a_truncated_bundle_is_refused(written, tmp_path):
    output, manifest = written
    data = output.read_bytes()
    for cut in (len(data) // 2, len(data) - 12000, 600):  # the last 10 kB or so are only tar padding
        short = tmp_path / f"short-{cut}.bundle"
        short.write_bytes(data[:cut])
        with pytest.raises(BundleRefused) as refused:
            bundle_mod.check_archive(short, bundle_mod.read_manifest(short), QUIET)
        assert "truncated" in refused.value.message or "has no images.tar" in refused.value.message
        assert refused.value.exit_code == 2


def test_an_altered_archive_is_refused(written, tmp_path):
    output, manifest = written
    data = bytearray(output.read_bytes())
    data[3000] ^= 0xFF  # inside images.tar
    altered = tmp_path / "altered.bundle"
    altered.write_bytes(bytes(data))
    with pytest.raises(BundleRefused, match="altered"):
        bundle_mod.check_archive(altered, bundle_mod.read_manifest(altered), QUIET)


def manifest_json(**changes):
    document = json.loads(BundleManifest(tuple(IMAGES), 10, "sha256:" + "f" * 64).to_json())
    document.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize("text, says", [
    ("not json", "its bundle.json is not JSON"),
    (manifest_json(format="something-else/1"), "not a bundle of this tool"),
    (manifest_json(images=[]), "lacks image IDs"),
    (manifest_json(archive_sha256="md5:x"), "lacks image IDs"),
    (manifest_json(images=[{**json.loads(manifest_json())["images"][0], "image_id": "latest"}]), "base-datahub"),
    (manifest_json(images=[{"name": "x"}]), "not a valid manifest"),
    (manifest_json(images=[{**json.loads(manifest_json())["images"][0], "tags": "latest"}]), "not a list"),
    (manifest_json(images=[{**json.loads(manifest_json())["images"][0], "tags": ["ok", "no/tag"]}]), "no Docker tag"),
    (manifest_json(images=[{**json.loads(manifest_json())["images"][0], "tags": [".hidden"]}]), "no Docker tag"),
    (manifest_json(images=[{**json.loads(manifest_json())["images"][0], "name": "../x"}]), "no connector name"),
])
def test_bad_manifests_are_refused(text, says):
    with pytest.raises(BundleRefused, match=says):
        BundleManifest.from_json(text)


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path):
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    with pytest.raises(BundleRefused, match="does not start with bundle.json"):
        bundle_mod.read_manifest(other)
    (tmp_path / "text").write_text("hello")
    with pytest.raises(BundleRefused, match="cannot be read as a bundle"):
        bundle_mod.read_manifest(tmp_path / "text")


# --- the checks after loading, against a fake engine -----------------------------------------------


class FakeImages:
    def __init__(self, images):
        self.images = images

    @property
    def api(self):
        return self

    def inspect_image(self, ref):
        from docker.errors import NotFound

        if ref not in self.images:
            raise NotFound(f"no such image: {ref}")
        return self.images[ref]


def engine_attrs(image):
    labels = {"io.ingestion-factory.inputs": image.input_hash, "io.ingestion-factory.parent-id": image.parent_id,
              "io.ingestion-factory.name": image.name}
    return {"Id": image.image_id, "Config": {"Labels": labels}}


def test_loaded_images_must_match_the_manifest_and_pass_their_smoke_test():
    from ingestion_factory.engine.verify import SmokeFailed, SmokeResult
    from ingestion_factory.model.failures import Cause, Diagnosis
    from ingestion_factory.workflows.bundle import CheckStatus, check_loaded, smoke_all

    manifest = BundleManifest(tuple(IMAGES), 1, "sha256:" + "f" * 64)
    engine = FakeImages({image.image_id: engine_attrs(image) for image in IMAGES})
    assert [c.status for c in check_loaded(engine, manifest)] == [CheckStatus.VERIFIED, CheckStatus.VERIFIED]

    wrong = engine_attrs(IMAGES[1])
    wrong["Config"]["Labels"]["io.ingestion-factory.inputs"] = "sha256:" + "0" * 64
    engine.images[ID_B] = wrong
    checks = check_loaded(engine, manifest)
    assert checks[1].status is CheckStatus.MISMATCH and "io.ingestion-factory.inputs" in checks[1].detail

    del engine.images[ID_B]
    assert check_loaded(engine, manifest)[1].status is CheckStatus.NOT_LOADED

    def smoke(image_id):
        if image_id == ID_A:
            raise SmokeFailed(Diagnosis(Cause.PLUGIN_IMPORT, "plugin import failed in the smoke test: x"))
        return SmokeResult(0, "", 1.0)

    engine.images[ID_B] = engine_attrs(IMAGES[1])
    results = smoke_all(check_loaded(engine, manifest), smoke, QUIET)
    assert [r.status for r in results] == [CheckStatus.SMOKE_FAILED, CheckStatus.VERIFIED]
    assert results[1].smoke_s == 1.0 and results[0].failed and not results[1].failed


def test_a_loaded_child_built_from_another_parent_than_the_bundles_is_refused():
    """Its own labels agree with the manifest, but the manifest's parent is another image: not what was tested."""
    from dataclasses import replace

    from ingestion_factory.workflows.bundle import CheckStatus, check_loaded

    other_parent = "sha256:" + "c" * 64
    child = replace(IMAGES[1], parent_id=other_parent)
    manifest = BundleManifest((IMAGES[0], child), 1, "sha256:" + "f" * 64)
    engine = FakeImages({image.image_id: engine_attrs(image) for image in manifest.images})
    checks = check_loaded(engine, manifest)
    assert [c.status for c in checks] == [CheckStatus.VERIFIED, CheckStatus.MISMATCH]
    assert checks[1].detail == f"built FROM {other_parent[:19]}, but the bundle's base-datahub is {ID_A[:19]}"


def test_only_this_factorys_repositories_are_accepted(tmp_path):
    from ingestion_factory.settings import Settings

    manifest = BundleManifest(tuple(IMAGES), 10, "sha256:" + "f" * 64)
    bundle_mod.check_targets(manifest, Settings(root=tmp_path, namespace="ns"))
    with pytest.raises(BundleRefused, match="tags it only as 'openmetadata/ingestion-connector-base-datahub'") as refused:
        bundle_mod.check_targets(manifest, Settings(root=tmp_path, namespace="openmetadata"))
    assert "--namespace" in refused.value.hint
    forged = BundleManifest((IMAGES[0], BundledImage(**{**IMAGES[1].__dict__, "repository": "ns/victim"})), 10,
                            "sha256:" + "f" * 64)
    with pytest.raises(BundleRefused, match="'ns/victim'"):
        bundle_mod.check_targets(forged, Settings(root=tmp_path, namespace="ns"))



def test_the_archives_own_names_are_removed_as_it_streams():
    layer = b"x" * 300_000
    archive = _tar({
        "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["ns/victim:latest"], "Layers": ["l/layer.tar"]}]).encode(),
        "repositories": json.dumps({"ns/victim": {"latest": "abc"}}).encode(),
        "index.json": json.dumps({"manifests": [{"digest": "sha256:1", "annotations": {
            "io.containerd.image.name": "ns/victim:latest", "org.opencontainers.image.ref.name": "latest",
            "other": "kept"}}]}).encode(),
        "l/layer.tar": layer,
    })

    rewritten = b"".join(bundle_mod.UntaggedArchive(io.BytesIO(archive)))

    with tarfile.open(fileobj=io.BytesIO(rewritten)) as tar:
        assert tar.getnames() == ["manifest.json", "index.json", "l/layer.tar"]
        assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == []
        assert json.loads(tar.extractfile("index.json").read())["manifests"][0]["annotations"] == {"other": "kept"}
        assert tar.extractfile("l/layer.tar").read() == layer


def test_an_archive_that_is_no_image_archive_is_refused():
    archive = bundle_mod.UntaggedArchive(io.BytesIO(_tar({"manifest.json": b"not json"})))
    with pytest.raises(BundleRefused, match="not an image archive"):
        b"".join(archive)


class FakeTags:
    """An engine's tags: image IDs by tag, changed through the SDK's low-level calls."""

    def __init__(self, tags: dict):
        self.tags = dict(tags)
        self.api = self

    def images(self, all=True):
        by_id = {}
        for tag, image_id in self.tags.items():
            by_id.setdefault(image_id, []).append(tag)
        return [{"Id": image_id, "RepoTags": tags} for image_id, tags in by_id.items()]

    def tag(self, image_id, repository, tag, force=False):
        self.tags[f"{repository}:{tag}"] = image_id

    def remove_image(self, ref, noprune=False):
        del self.tags[ref]


def test_restoring_puts_back_moved_tags_and_removes_new_ones():
    engine = FakeTags({"ns/a:1": ID_A, "localhost:5000/ns/b:2": ID_B})
    before = bundle_mod.tag_state(engine)
    engine.tags.update({"ns/a:1": ID_B, "ns/new:x": ID_B})
    del engine.tags["localhost:5000/ns/b:2"]

    changed = bundle_mod.restore_tags(engine, before)

    assert engine.tags == {"ns/a:1": ID_A, "localhost:5000/ns/b:2": ID_B}
    assert sorted(changed) == ["localhost:5000/ns/b:2", "ns/a:1", "ns/new:x"]


@pytest.mark.parametrize("members, says", [
    ({"manifest.json": json.dumps([{"RepoTags": ["python:3.11-slim-bookworm"]}]).encode()}, "names images"),
    ({"repositories": json.dumps({"ns/victim": {"latest": "abc"}}).encode()}, "names images"),
    ({"manifest.json": b"not json"}, "not an image archive"),
])
def test_an_image_archive_that_names_images_is_refused_before_loading(tmp_path, members, says):
    output = tmp_path / "forged.bundle"
    bundle_mod.write_bundle(None, IMAGES, output, QUIET, chunks=iter([_tar(members)]))
    with pytest.raises(BundleRefused, match=says) as refused:
        bundle_mod.check_archive(output, bundle_mod.read_manifest(output), QUIET)
    assert "nothing was loaded" in refused.value.message


# --- JSON nested too deep or too large: refused in one line (exit 2), never a RecursionError ----------------

DEEP = b"[" * bundle_mod.MAX_MANIFEST_BYTES  # 4 MiB of nesting: json.loads alone ends in a RecursionError


def _bundle_of(path, members: dict) -> None:
    path.write_bytes(_tar(members))


def test_a_deeply_nested_bundle_json_is_refused_quickly(tmp_path):
    path = tmp_path / "deep.bundle"
    _bundle_of(path, {"bundle.json": DEEP, "images.tar": SAVED})
    started = time.monotonic()
    with pytest.raises(BundleRefused) as refused:
        bundle_mod.read_manifest(path)
    assert time.monotonic() - started < 2
    assert refused.value.message == "its bundle.json is nested deeper than 100 levels"
    assert refused.value.exit_code == 2
    with pytest.raises(BundleRefused, match="larger than 4 MiB"):
        BundleManifest.from_json(" " * (bundle_mod.MAX_MANIFEST_BYTES + 1))


def test_an_image_archive_whose_manifest_json_is_nested_too_deep_is_refused_before_loading(tmp_path):
    output = tmp_path / "deep-images.bundle"
    bundle_mod.write_bundle(None, IMAGES, output, QUIET, chunks=iter([_tar({"manifest.json": DEEP})]))
    started = time.monotonic()
    with pytest.raises(BundleRefused, match="its manifest.json is nested deeper than 100 levels") as refused:
        bundle_mod.check_archive(output, bundle_mod.read_manifest(output), QUIET)
    assert time.monotonic() - started < 2 and refused.value.exit_code == 2
    # index.json is rewritten while loading (not read by the check before): refused there, not a dead thread.
    archive = bundle_mod.UntaggedArchive(io.BytesIO(_tar({"index.json": DEEP})))
    with pytest.raises(BundleRefused, match="its index.json is nested deeper than 100 levels"):
        b"".join(archive)


def test_a_bundle_whose_trust_json_is_nested_too_deep_is_refused(tmp_path):
    from ingestion_factory.engine import signing

    _, public = signing.generate(b"correct horse battery")
    (tmp_path / "trusted.pub").write_bytes(public)
    root = settings_mod.Path.cwd()
    keys = [str(tmp_path / "trusted.pub")]
    settings = settings_mod.load({**settings_mod.pyproject_defaults(root), "trusted_keys": keys}, root)
    output = tmp_path / "deep-trust.bundle"
    manifest = bundle_mod.write_bundle(None, IMAGES, output, QUIET, chunks=iter(PAYLOAD), sign=lambda text: DEEP)
    with pytest.raises(BundleRefused, match="its trust.json is nested deeper than 100 levels") as refused:
        bundle_mod.require_trusted(settings, output, manifest, False, QUIET)
    assert refused.value.exit_code == 2
