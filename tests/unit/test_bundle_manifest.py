"""Bundles without Docker: the manifest's round trip and validation, atomic writing, checksum and truncation checks."""

import io
import json
import tarfile

import pytest
from rich.console import Console

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
PAYLOAD = [b"layer-one " * 1000, b"layer-two " * 2000, b"manifest.json"]
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
    ("not json", "not a valid manifest"),
    (manifest_json(format="something-else/1"), "not a bundle of this tool"),
    (manifest_json(images=[]), "lacks image IDs"),
    (manifest_json(archive_sha256="md5:x"), "lacks image IDs"),
    (manifest_json(images=[{**json.loads(manifest_json())["images"][0], "image_id": "latest"}]), "base-datahub"),
    (manifest_json(images=[{"name": "x"}]), "not a valid manifest"),
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
