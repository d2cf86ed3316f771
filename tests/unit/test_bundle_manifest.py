"""Bundles without Docker: the manifest's round trip and validation, atomic writing, checksum and truncation checks."""

import io
import json
import tarfile
import time

import pytest
from fake_engine import FakeEngine, Image

from ingestion_factory import settings as settings_mod
from ingestion_factory.model import bundle_format
from ingestion_factory.model.bundle_format import BundledImage, BundleManifest, BundleRefused
from ingestion_factory.progress import Quiet
from ingestion_factory.workflows import bundle as bundle_mod
from ingestion_factory.workflows import bundle_archive

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
QUIET = Quiet()


def check(path):
    """unbundle's check of the image archive, before anything is loaded."""
    with bundle_archive.open_bundle(path) as bundle:
        bundle_archive.check_archive(bundle, QUIET)


@pytest.fixture
def written(tmp_path):
    output = tmp_path / "out" / "site.bundle"
    manifest = bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter(PAYLOAD))
    return output, manifest


def test_the_manifest_round_trips_with_lock_digest_and_sbom(written):
    output, manifest = written
    assert manifest.archive_size == sum(len(c) for c in PAYLOAD)
    read = bundle_archive.read_manifest(output)
    assert read == manifest
    assert read.images[1].lock_digest.startswith("sha256:") and read.images[1].sbom == "/opt/ingestion/sbom.json"
    assert read.images[1].refs == ["ns/ingestion-connector-datahub-sqlite:1.7.0.17",
                                   "ns/ingestion-connector-datahub-sqlite:latest"]
    check(output)  # intact: no error
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
        bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=failing())
    assert output.read_bytes() == b"the previous bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["site.bundle"]  # no temp file left


def test_a_truncated_bundle_is_refused(written, tmp_path):
    output, manifest = written
    data = output.read_bytes()
    for cut in (len(data) // 2, len(data) - 12000, 600):  # the last 10 kB or so are only tar padding
        short = tmp_path / f"short-{cut}.bundle"
        short.write_bytes(data[:cut])
        with pytest.raises(BundleRefused) as refused:
            check(short)
        said = refused.value.message.replace(str(short), "FILE")  # its path says "truncated" too
        assert said.startswith("FILE is truncated: ") and said.endswith("; nothing was loaded"), said
        assert refused.value.exit_code == 2


def test_an_altered_archive_is_refused(written, tmp_path):
    output, manifest = written
    data = bytearray(output.read_bytes())
    data[3000] ^= 0xFF  # inside images.tar
    altered = tmp_path / "altered.bundle"
    altered.write_bytes(bytes(data))
    with pytest.raises(BundleRefused, match="altered"):
        check(altered)


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
        bundle_archive.read_manifest(other)
    (tmp_path / "text").write_text("hello")
    with pytest.raises(BundleRefused, match="cannot be read as a bundle"):
        bundle_archive.read_manifest(tmp_path / "text")


# --- the checks after loading, against a fake engine -----------------------------------------------


def engine_image(image) -> Image:
    """A bundled image as the engine holds it once loaded."""
    labels = {"io.ingestion-factory.inputs": image.input_hash, "io.ingestion-factory.parent-id": image.parent_id,
              "io.ingestion-factory.name": image.name}
    return Image(image.image_id, labels)


def holding(images) -> FakeEngine:
    engine = FakeEngine()
    for image in images:
        engine.by_id[image.image_id] = engine_image(image)
    return engine


def test_loaded_images_must_match_the_manifest_and_pass_their_smoke_test():
    from ingestion_factory.engine.verify import SmokeFailed, SmokeResult
    from ingestion_factory.model.failures import Cause, Diagnosis
    from ingestion_factory.workflows.bundle import CheckStatus, check_loaded, smoke_all

    manifest = BundleManifest(tuple(IMAGES), 1, "sha256:" + "f" * 64)
    engine = holding(IMAGES)
    assert [c.status for c in check_loaded(engine, manifest)] == [CheckStatus.VERIFIED, CheckStatus.VERIFIED]

    engine.by_id[ID_B].labels["io.ingestion-factory.inputs"] = "sha256:" + "0" * 64
    checks = check_loaded(engine, manifest)
    assert checks[1].status is CheckStatus.MISMATCH and "io.ingestion-factory.inputs" in checks[1].detail

    engine.remove(ID_B)
    assert check_loaded(engine, manifest)[1].status is CheckStatus.NOT_LOADED

    def smoke(image_id):
        if image_id == ID_A:
            raise SmokeFailed(Diagnosis(Cause.PLUGIN_IMPORT, "plugin import failed in the smoke test: x"))
        return SmokeResult(0, "", 1.0)

    engine.by_id[ID_B] = engine_image(IMAGES[1])
    results = smoke_all(check_loaded(engine, manifest), smoke, QUIET)
    assert [r.status for r in results] == [CheckStatus.SMOKE_FAILED, CheckStatus.VERIFIED]
    assert results[1].duration_s == 1.0 and results[0].failed and not results[1].failed


def test_a_loaded_child_built_from_another_parent_than_the_bundles_is_refused():
    """Its own labels agree with the manifest, but the manifest's parent is another image: not what was tested."""
    from dataclasses import replace

    from ingestion_factory.workflows.bundle import CheckStatus, check_loaded

    other_parent = "sha256:" + "c" * 64
    child = replace(IMAGES[1], parent_id=other_parent)
    manifest = BundleManifest((IMAGES[0], child), 1, "sha256:" + "f" * 64)
    engine = holding(manifest.images)
    checks = check_loaded(engine, manifest)
    assert [c.status for c in checks] == [CheckStatus.VERIFIED, CheckStatus.MISMATCH]
    assert checks[1].detail == f"built FROM {other_parent[:19]}, but the bundle's base-datahub is {ID_A[:19]}"


def test_only_this_factorys_repositories_are_accepted(tmp_path):
    from ingestion_factory.settings import Settings

    manifest = BundleManifest(tuple(IMAGES), 10, "sha256:" + "f" * 64)
    bundle_format.check_targets(manifest, Settings(root=tmp_path, namespace="ns"))
    with pytest.raises(BundleRefused, match="tags it only as 'openmetadata/ingestion-connector-base-datahub'") as refused:
        bundle_format.check_targets(manifest, Settings(root=tmp_path, namespace="openmetadata"))
    assert "--namespace" in refused.value.hint
    forged = BundleManifest((IMAGES[0], BundledImage(**{**IMAGES[1].__dict__, "repository": "ns/victim"})), 10,
                            "sha256:" + "f" * 64)
    with pytest.raises(BundleRefused, match="'ns/victim'"):
        bundle_format.check_targets(forged, Settings(root=tmp_path, namespace="ns"))



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

    rewritten = b"".join(bundle_archive.UntaggedArchive(io.BytesIO(archive)))

    with tarfile.open(fileobj=io.BytesIO(rewritten)) as tar:
        assert tar.getnames() == ["manifest.json", "index.json", "l/layer.tar"]
        assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == []
        assert json.loads(tar.extractfile("index.json").read())["manifests"][0]["annotations"] == {"other": "kept"}
        assert tar.extractfile("l/layer.tar").read() == layer


def test_an_archive_that_is_no_image_archive_is_refused():
    archive = bundle_archive.UntaggedArchive(io.BytesIO(_tar({"manifest.json": b"not json"})))
    with pytest.raises(BundleRefused, match="not an image archive"):
        b"".join(archive)


def test_restoring_puts_back_moved_tags_and_removes_new_ones():
    engine = FakeEngine()
    engine.add(ID_A, {}, ["ns/a:1"])
    engine.add(ID_B, {}, ["localhost:5000/ns/b:2"])
    before = bundle_mod.tag_state(engine)
    engine.tag(ID_B, "ns/a", "1")
    engine.tag(ID_B, "ns/new", "x")

    changed = bundle_mod.restore_tags(engine, before, {ID_B})  # ID_B: an image the bundle brought

    assert engine.refs == {"ns/a:1": ID_A, "localhost:5000/ns/b:2": ID_B}
    assert sorted(changed) == ["ns/a:1", "ns/new:x"]


def test_restoring_leaves_other_users_changes_alone():
    """On a shared engine, tags others add, move or remove during an unbundle are theirs (it used to undo them,
    and to refuse the bundle as "naming images")."""
    other = "sha256:" + "e" * 64
    engine = FakeEngine()
    engine.add(ID_A, {}, ["ns/a:1", "team/x:1", "team/gone:1"])
    engine.add(other, {}, [])
    before = bundle_mod.tag_state(engine)
    engine.tag(other, "team/x", "1")
    engine.tag(other, "team/new", "1")
    engine.untag("team/gone:1")

    assert bundle_mod.restore_tags(engine, before, {ID_B}) == []
    assert engine.refs == {"ns/a:1": ID_A, "team/x:1": other, "team/new:1": other}


@pytest.mark.parametrize("members, says", [
    ({"manifest.json": json.dumps([{"RepoTags": ["python:3.11-slim-bookworm"]}]).encode()}, "names images"),
    ({"repositories": json.dumps({"ns/victim": {"latest": "abc"}}).encode()}, "names images"),
    ({"manifest.json": b"not json"}, "not an image archive"),
])
def test_an_image_archive_that_names_images_is_refused_before_loading(tmp_path, members, says):
    output = tmp_path / "forged.bundle"
    bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter([_tar(members)]))
    with pytest.raises(BundleRefused, match=says) as refused:
        check(output)
    assert "nothing was loaded" in refused.value.message


# --- JSON nested too deep or too large: refused in one line (exit 2), never a RecursionError ----------------

DEEP = b"[" * bundle_format.MAX_MANIFEST_BYTES  # 4 MiB of nesting: json.loads alone ends in a RecursionError


def _bundle_of(path, members: dict) -> None:
    path.write_bytes(_tar(members))


def test_a_deeply_nested_bundle_json_is_refused_quickly(tmp_path):
    path = tmp_path / "deep.bundle"
    _bundle_of(path, {"bundle.json": DEEP, "images.tar": SAVED})
    started = time.monotonic()
    with pytest.raises(BundleRefused) as refused:
        bundle_archive.read_manifest(path)
    assert time.monotonic() - started < 2
    assert refused.value.message == "its bundle.json is nested deeper than 100 levels"
    assert refused.value.exit_code == 2
    with pytest.raises(BundleRefused, match="larger than 4 MiB"):
        BundleManifest.from_json(" " * (bundle_format.MAX_MANIFEST_BYTES + 1))


def test_an_image_archive_whose_manifest_json_is_nested_too_deep_is_refused_before_loading(tmp_path):
    output = tmp_path / "deep-images.bundle"
    bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter([_tar({"manifest.json": DEEP})]))
    started = time.monotonic()
    with pytest.raises(BundleRefused, match="its manifest.json is nested deeper than 100 levels") as refused:
        check(output)
    assert time.monotonic() - started < 2 and refused.value.exit_code == 2
    # index.json is rewritten while loading (not read by the check before): refused there, not a dead thread.
    archive = bundle_archive.UntaggedArchive(io.BytesIO(_tar({"index.json": DEEP})))
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
    bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter(PAYLOAD), sign=lambda text: DEEP)
    with pytest.raises(BundleRefused, match="its trust.json is nested deeper than 100 levels") as refused:
        with bundle_archive.open_bundle(output) as bundle:
            bundle_mod.require_trusted(settings, bundle, False, QUIET)
    assert refused.value.exit_code == 2


# --- archive members: names normalized; links, devices, `..`, absolute and repeated names refused -----------

LAYER_A, LAYER_B = "a" * 64 + "/layer.tar", "b" * 64 + "/layer.tar"
UNNAMED = json.dumps([{"Config": "c.json", "RepoTags": None, "Layers": [LAYER_B]}]).encode()
NAMING = json.dumps([{"Config": "c.json", "RepoTags": ["ns/victim:latest"], "Layers": [LAYER_B]}]).encode()


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, linkname: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _archive(*members) -> bytes:
    """A tar of exactly these headers (tarfile.add would tidy names; addfile writes them as given)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return raw.getvalue()


def _streamed(archive: bytes) -> tuple[bytes, BundleRefused | None]:
    """What UntaggedArchive hands the engine, and its refusal if it refused."""
    chunks = []
    try:
        for chunk in bundle_archive.UntaggedArchive(io.BytesIO(archive)):
            chunks.append(chunk)
    except BundleRefused as exc:
        return b"".join(chunks), exc
    return b"".join(chunks), None


@pytest.mark.parametrize("members, says", [
    ([_member("manifest.json", UNNAMED), _member("x/../manifest.json", NAMING)],
     "member 'x/../manifest.json' has a '..' component"),
    ([_member("manifest.json", UNNAMED), _member("./manifest.json", NAMING)],
     "member './manifest.json' names the member 'manifest.json' again"),
    ([_member("b/", kind=tarfile.DIRTYPE), _member("./b", kind=tarfile.DIRTYPE)], "member './b' names the member 'b' again"),
    ([_member("named.json", NAMING), _member("manifest.json", kind=tarfile.SYMTYPE, linkname="named.json")],
     "member 'manifest.json' is a symbolic link (to 'named.json'); only files and directories are accepted"),
    ([_member("named.json", NAMING), _member("manifest.json", kind=tarfile.LNKTYPE, linkname="named.json")],
     "member 'manifest.json' is a hard link (to 'named.json')"),
    ([_member("/manifest.json", NAMING)], "member '/manifest.json' has an absolute name"),
    ([_member("tty", kind=tarfile.CHRTYPE)], "member 'tty' is a character device"),
    ([_member("sda", kind=tarfile.BLKTYPE)], "member 'sda' is a block device"),
    ([_member("pipe", kind=tarfile.FIFOTYPE)], "member 'pipe' is a FIFO"),
    ([_member("x", kind=b"9")], "member 'x' is of tar type b'9'"),
    ([_member("new\nline", kind=tarfile.FIFOTYPE)], "member 'new\\nline' is a FIFO"),  # still one line
    # A layer link is accepted only as docker save writes one: a layer, to a layer file of the archive.
    ([_member(LAYER_A, kind=tarfile.SYMTYPE, linkname="../" + LAYER_B)],
     f"member '{LAYER_A}' links to '{LAYER_B}', which is no file of it"),
    ([_member(LAYER_A, kind=tarfile.SYMTYPE, linkname="../manifest.json"), _member("manifest.json", UNNAMED)],
     f"member '{LAYER_A}' is a symbolic link (to '../manifest.json')"),
    ([_member("manifest.json", kind=tarfile.SYMTYPE, linkname="../" + LAYER_B), _member(LAYER_B, b"layer")],
     "member 'manifest.json' is a symbolic link"),
    ([_member(LAYER_A, kind=tarfile.SYMTYPE, linkname="/" + LAYER_B), _member(LAYER_B, b"layer")],
     f"member '{LAYER_A}' is a symbolic link (to '/{LAYER_B}')"),
])
def test_an_image_archive_member_that_could_be_read_as_another_is_refused(tmp_path, members, says):
    archive = _archive(*members)
    output = tmp_path / "forged.bundle"
    bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter([archive]))  # its checksum is right
    with pytest.raises(BundleRefused) as refused:
        check(output)
    assert refused.value.message.startswith(f"{output}: images.tar {says}")
    assert refused.value.message.endswith("; nothing was loaded") and "\n" not in refused.value.message
    assert refused.value.exit_code == 2
    # Should such an archive be loaded anyway: the same refusal, the engine reads no name, and the stream
    # ends in a header that is none, which makes the engine refuse all of it (a tar cut short, it loads).
    streamed, refusal = _streamed(archive)
    assert refusal is not None and says in refusal.message
    assert streamed.endswith(bundle_archive.BROKEN_HEADER)
    assert _names_read_by_the_engine(streamed) == []


def _names_read_by_the_engine(streamed: bytes) -> list[str]:
    """The RepoTags of the manifest.json in a stream (Python's tarfile, unlike the engine's, stops at a bad header)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(streamed), mode="r|") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    return [tag for entry in json.loads(tar.extractfile(member).read()) for tag in entry["RepoTags"]]
    except tarfile.ReadError:  # nothing before the bad header
        pass
    return []


def test_a_layer_linked_as_docker_save_links_it_is_accepted_and_names_are_normalized(tmp_path):
    """docker save (engines before 25) links a layer stored once from the other images' folders."""
    archive = _archive(_member("./", kind=tarfile.DIRTYPE), _member("a" * 64 + "/", kind=tarfile.DIRTYPE),
                       _member(LAYER_A, kind=tarfile.SYMTYPE, linkname="../" + LAYER_B),
                       _member("b" * 64, kind=tarfile.DIRTYPE), _member("./" + LAYER_B, b"the layer"),
                       _member(".//manifest.json", UNNAMED))
    output = tmp_path / "linked.bundle"
    bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter([archive]))
    check(output)
    streamed, refusal = _streamed(archive)
    assert refusal is None
    with tarfile.open(fileobj=io.BytesIO(streamed)) as tar:
        assert tar.getnames() == ["a" * 64, LAYER_A, "b" * 64, LAYER_B, "manifest.json"]
        assert tar.getmember(LAYER_A).issym() and tar.getmember(LAYER_A).linkname == "../" + LAYER_B
        assert tar.extractfile(LAYER_B).read() == b"the layer"


def test_a_normalized_name_is_checked_as_the_engine_reads_it(tmp_path):
    output = tmp_path / "dotted.bundle"
    bundle_archive.write_bundle(None, IMAGES, output, QUIET, chunks=iter([_archive(_member("./manifest.json", NAMING))]))
    with pytest.raises(BundleRefused, match=r"names images \(ns/victim:latest\)"):
        check(output)


MANIFEST_BYTES = BundleManifest(tuple(IMAGES), len(SAVED), "sha256:" + __import__("hashlib").sha256(SAVED).hexdigest(),
                                ).to_json().encode()


@pytest.mark.parametrize("members, says", [
    ([_member("bundle.json", kind=tarfile.SYMTYPE, linkname="other.json"), _member("other.json", MANIFEST_BYTES)],
     "member 'bundle.json' is a symbolic link (to 'other.json'); only files are accepted"),
    ([_member("bundle.json", MANIFEST_BYTES), _member("images.tar", kind=tarfile.LNKTYPE, linkname="bundle.json")],
     "member 'images.tar' is a hard link (to 'bundle.json'); only files are accepted"),
    ([_member("bundle.json", MANIFEST_BYTES), _member("images.tar", SAVED), _member("./images.tar", SAVED)],
     "member './images.tar' names the member 'images.tar' again"),
    ([_member("bundle.json", MANIFEST_BYTES), _member("x/../trust.json", b"{}")], "member 'x/../trust.json' has a '..' component"),
    ([_member("bundle.json", MANIFEST_BYTES), _member("/images.tar", SAVED)], "member '/images.tar' has an absolute name"),
    ([_member("bundle.json", MANIFEST_BYTES), _member("fifo", kind=tarfile.FIFOTYPE)],
     "member 'fifo' is a FIFO; only files are accepted"),
    ([_member("bundle.json", MANIFEST_BYTES), _member("d", kind=tarfile.DIRTYPE)],
     "member 'd' is a directory; only files are accepted"),
])
def test_a_bundle_member_that_could_be_read_as_another_is_refused(tmp_path, members, says):
    path = tmp_path / "forged.bundle"
    path.write_bytes(_archive(*members))
    with pytest.raises(BundleRefused) as refused:
        bundle_archive.read_manifest(path)
    assert refused.value.message == f"{path}: {says}; nothing was loaded"
    assert refused.value.exit_code == 2


def test_a_bundle_with_normalized_member_names_is_read_as_written(tmp_path):
    path = tmp_path / "dotted.bundle"
    path.write_bytes(_archive(_member("./bundle.json", MANIFEST_BYTES), _member(".//images.tar", SAVED)))
    check(path)
    assert bundle_archive.read_manifest(path).archive_size == len(SAVED)


# --- one open file from the first check to the load ------------------------------------------------------


def loader(loads, tags: dict) -> FakeEngine:
    """An engine whose next load brings `loads`, holding images under `tags` (tag -> image ID) already."""
    engine = FakeEngine()
    for tag, image_id in tags.items():
        engine.by_id.setdefault(image_id, Image(image_id))
        engine.refs[tag] = image_id
    engine.archive_images = [engine_image(image) for image in loads]
    return engine


VICTIM = {"ns/victim:latest": "sha256:" + "c" * 64}


def passing_smoke_test(image_id):
    from ingestion_factory.engine.verify import SmokeResult

    return SmokeResult(0, "", 0.1)


def unbundled(settings, path, engine, monkeypatch) -> tuple[int, str]:
    """`inv unbundle PATH` against `engine`: its exit code and what it says."""
    from invoke import Exit

    import tasks

    monkeypatch.setattr(bundle_mod, "DockerEngine", lambda: engine)
    try:
        tasks.reports_errors(bundle_mod.unbundle)(settings, path, progress=QUIET, smoke_test=passing_smoke_test)
    except Exit as exc:
        return exc.code, exc.message or ""
    return 0, ""


def _same_size_forgery(tmp_path):
    """A whole, consistent bundle of the same size as `written`'s, whose layers are others."""
    forged = tmp_path / "forged.bundle"
    bundle_archive.write_bundle(None, IMAGES, forged, QUIET, chunks=iter([SAVED.replace(b"layer-one", b"layer-111")]))
    return forged


def test_a_file_put_in_the_bundles_place_after_the_checks_is_not_loaded(written, tmp_path, monkeypatch):
    """The path is replaced (renamed over) between the checks and the load: the file checked is the one loaded."""
    import os

    from ingestion_factory.settings import Settings

    path, _ = written
    forged = _same_size_forgery(tmp_path)
    checked = bundle_archive.check_archive

    def check_then_swap(*args):
        checked(*args)
        os.replace(forged, path)

    monkeypatch.setattr(bundle_mod, "check_archive", check_then_swap)
    engine = loader(IMAGES, VICTIM)
    assert unbundled(Settings(root=tmp_path, namespace="ns"), path, engine, monkeypatch) == (0, "")
    assert engine.received == b"".join(bundle_archive.UntaggedArchive(io.BytesIO(SAVED)))  # the checked bytes
    assert b"layer-111" not in engine.received
    assert engine.refs["ns/ingestion-connector-datahub-sqlite:latest"] == ID_B


def test_a_bundle_written_to_while_it_is_loaded_tags_nothing(written, tmp_path, monkeypatch):
    """The same file rewritten in place after the checks: what is loaded is hashed again, and refused."""
    from ingestion_factory.settings import Settings

    path, _ = written
    forged = _same_size_forgery(tmp_path)
    checked = bundle_archive.check_archive

    def check_then_overwrite(*args):
        checked(*args)
        path.write_bytes(forged.read_bytes())  # the same inode: the open file reads the new bytes

    monkeypatch.setattr(bundle_mod, "check_archive", check_then_overwrite)
    engine = loader(IMAGES, VICTIM)
    code, said = unbundled(Settings(root=tmp_path, namespace="ns"), path, engine, monkeypatch)
    assert code == 2
    assert said.splitlines()[0] == (f"error: {path} changed while it was loaded: the images.tar loaded is not the "
                                    "one checked; nothing was tagged")
    assert engine.refs == VICTIM and engine.image_ids() == set(VICTIM.values())  # nothing tagged; what was loaded is removed again


# --- JSON from a bundle, 4 MiB nested deep: exit 2 with one line, quickly --------------------------------


@pytest.mark.parametrize("where", ["bundle.json", "trust.json", "manifest.json", "repositories", "index.json"])
def test_deeply_nested_json_anywhere_in_a_bundle_is_exit_2_in_one_line_quickly(tmp_path, monkeypatch, where):
    from ingestion_factory.engine import signing
    from ingestion_factory.settings import Settings

    _, public = signing.generate(b"correct horse battery")
    (tmp_path / "trusted.pub").write_bytes(public)
    settings = Settings(root=tmp_path, namespace="ns", trusted_keys=("trusted.pub",) if where == "trust.json" else ())
    path = tmp_path / "deep.bundle"
    if where == "bundle.json":
        path.write_bytes(_tar({"bundle.json": DEEP, "images.tar": SAVED}))
    elif where == "trust.json":
        bundle_archive.write_bundle(None, IMAGES, path, QUIET, chunks=iter(PAYLOAD), sign=lambda text: DEEP)
    else:
        bundle_archive.write_bundle(None, IMAGES, path, QUIET, chunks=iter([_tar({where: DEEP})]))
    engine = loader(IMAGES, VICTIM)

    started = time.monotonic()
    code, said = unbundled(settings, path, engine, monkeypatch)

    assert time.monotonic() - started < 2
    assert code == 2
    error = said.splitlines()[0]
    assert error.startswith("error: ") and f"its {where} is nested deeper than 100 levels" in error
    assert all(line.startswith("hint: ") for line in said.splitlines()[1:])
    assert engine.refs == VICTIM and engine.image_ids() == set(VICTIM.values())


def test_a_path_that_is_no_file_is_refused_without_waiting(tmp_path):
    import os

    from ingestion_factory.errors import ConfigError

    os.mkfifo(tmp_path / "fifo")  # opening it to read would wait for a writer
    for path in (tmp_path / "fifo", tmp_path, tmp_path / "missing"):
        with pytest.raises(ConfigError, match=f"no bundle at {path}$") as refused:
            bundle_archive.read_manifest(path)
        assert refused.value.exit_code == 2
