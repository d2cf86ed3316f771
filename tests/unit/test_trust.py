"""Signed provenance: the documents (PAE, DSSE, Statement, simple signing, cosign's layout), keys,
signing into a registry and checking it back, and what a tampered or foreign signature gives."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from test_builder import engine  # noqa: F401  (a fixture)

from ingestion_factory.engine import signing
from ingestion_factory.engine.registry import Manifest
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import trust_records as records
from ingestion_factory.workflows import trust_bundle, trust_check, trust_sign

DIGEST = "sha256:" + "ab" * 32
REPO = "127.0.0.1:5000/openmetadata/ingestion-connector-datahub-sqlite"
PASSPHRASE = b"correct horse battery"


def record(**changes) -> records.VerificationRecord:
    values = dict(image="datahub-sqlite", platform="linux/amd64", input_hash="sha256:" + "11" * 32,
                  parent_id="sha256:" + "22" * 32, image_id="sha256:" + "33" * 32, lock_digest="sha256:" + "44" * 32,
                  sbom_digest="sha256:" + "55" * 32, framework="datahub", framework_version="1.2.0",
                  source_revision="abc123def456", source_uri="https://example.org/factory.git",
                  builder="urn:ingestion-factory:0.1.0@host", smoke_command="python main.py --check",
                  smoke_result="passed")
    values.update(changes)
    return records.VerificationRecord(**values)


# --- documents -----------------------------------------------------------------------------------


def test_pae_is_dsse_v1s_encoding():
    # The DSSE spec's own example: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes.
    assert records.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert records.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"
    assert records.pae("", b"") == b"DSSEv1 0  0 "


def test_envelope_round_trip():
    document = records.envelope(records.INTOTO_PAYLOAD_TYPE, b'{"a":1}', b"\x01\x02", "kid")
    assert document == {"payloadType": "application/vnd.in-toto+json", "payload": "eyJhIjoxfQ==",
                        "signatures": [{"keyid": "kid", "sig": "AQI="}]}
    read = records.read_envelope(json.dumps(document).encode())
    assert read.payload == b'{"a":1}' and read.signatures == (("kid", b"\x01\x02"),)
    assert read.signed_bytes == records.pae(records.INTOTO_PAYLOAD_TYPE, b'{"a":1}')
    for broken in (b"not json", b"{}", b'{"payloadType":"x","payload":"!!","signatures":[]}'):
        with pytest.raises(records.RecordError):
            records.read_envelope(broken)


def test_simple_signing_payload_is_cosigns():
    payload = json.loads(records.simple_signing_payload(REPO, DIGEST))
    assert payload == {"critical": {"identity": {"docker-reference": REPO},
                                    "image": {"docker-manifest-digest": DIGEST},
                                    "type": "cosign container image signature"},
                       "optional": None}
    assert records.read_simple_signing(records.simple_signing_payload(REPO, DIGEST)) == \
        records.SignedName(REPO, DIGEST, {})
    with pytest.raises(records.RecordError):
        records.read_simple_signing(b'{"critical": {"type": "something else"}}')
    with pytest.raises(records.RecordError):
        records.simple_signing_payload(REPO, "sha256:short")


def test_tags_are_where_cosign_looks():
    assert records.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    assert records.attestation_tag(DIGEST) == "sha256-" + "ab" * 32 + ".att"


def test_statement_is_in_toto_v1_with_slsa_provenance_v1_and_the_record():
    document = records.statement(REPO, DIGEST, record())
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["subject"] == [{"name": REPO, "digest": {"sha256": "ab" * 32}}]
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"
    predicate = document["predicate"]
    assert set(predicate) == {"buildDefinition", "runDetails"}
    assert predicate["buildDefinition"]["externalParameters"]["platform"] == "linux/amd64"
    assert predicate["buildDefinition"]["internalParameters"] == {"inputHash": record().input_hash}
    assert {"name": "source", "uri": "git+https://example.org/factory.git@abc123def456",
            "digest": {"gitCommit": "abc123def456"}} in predicate["buildDefinition"]["resolvedDependencies"]
    assert predicate["runDetails"]["builder"] == {"id": record().builder}
    attested = records.read_statement(records.canonical_json(document))
    assert attested.record == record() and attested.subjects == ((REPO, DIGEST),)


def test_a_statement_of_another_kind_is_refused():
    document = records.statement(REPO, DIGEST, record())
    for change, needle in ((("_type", "https://in-toto.io/Statement/v0.1"), "Statement v1"),
                           (("predicateType", "https://slsa.dev/provenance/v0.2"), "SLSA Provenance v1")):
        broken = {**document, change[0]: change[1]}
        with pytest.raises(records.RecordError, match=needle):
            records.read_statement(json.dumps(broken).encode())
    document["predicate"]["runDetails"]["byproducts"] = []
    with pytest.raises(records.RecordError, match="no ingestion-factory-verification record"):
        records.read_statement(json.dumps(document).encode())


def test_signature_image_is_cosigns_layout():
    image = records.signature_image(b"payload", b"sig")
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["config"]["digest"] == records.sha256_digest(image.config)
    [layer] = manifest["layers"]
    assert layer == {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": 7,
                     "digest": records.sha256_digest(b"payload"),
                     "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(b"sig").decode()}}
    config = json.loads(image.config)
    assert config == {"architecture": "", "created": "0001-01-01T00:00:00Z",
                      "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
    attestation = json.loads(records.attestation_image(b"{}").manifest)["layers"][0]
    assert attestation["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert attestation["annotations"] == {"dev.cosignproject.cosign/signature": "",
                                          "predicateType": "https://slsa.dev/provenance/v1"}


def test_a_new_signature_is_appended_to_the_earlier_ones():
    first = records.signature_image(b"one", b"s1")
    earlier = records.layers_of(json.loads(first.manifest))
    second = json.loads(records.signature_image(b"two", b"s2", earlier).manifest)
    assert [layer["digest"] for layer in second["layers"]] == [records.sha256_digest(b"one"),
                                                                records.sha256_digest(b"two")]


# --- keys ------------------------------------------------------------------------------------------


def test_keys_are_p256_pem_and_the_private_key_is_encrypted(tmp_path):
    private, public = signing.write_key_pair(tmp_path, PASSPHRASE)
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert private.stat().st_mode & 0o777 == 0o600
    signer = signing.load_signer(private, PASSPHRASE)
    assert signer.public.keyid == signing.load_public_key(public).keyid
    signature = signer.sign(b"data")
    assert signing.load_public_key(public).verify(signature, b"data")
    assert not signing.load_public_key(public).verify(signature, b"datA")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        signing.load_signer(private, b"another passphrase")
    with pytest.raises(ConfigError, match="already exist"):
        signing.write_key_pair(tmp_path, PASSPHRASE)


def test_the_passphrase_comes_from_a_file_or_the_environment(tmp_path):
    secret = tmp_path / "pass"
    secret.write_text("from a file\n")
    assert signing.read_passphrase(str(secret), environ={}) == b"from a file"
    assert signing.read_passphrase(None, environ={signing.ENV_PASSPHRASE: "from the env"}) == b"from the env"
    with pytest.raises(ConfigError, match="passphrase is not given"):
        signing.read_passphrase(None, environ={})
    secret.write_text("short")
    with pytest.raises(ConfigError, match="shorter"):
        signing.read_passphrase(str(secret), environ={})


# --- signing into a registry and checking it back ---------------------------------------------


class MemoryRegistry:
    """Blobs and manifests in memory, addressed like the distribution API."""

    registry = "127.0.0.1:5000"

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}  # tag or digest -> body
        self.manifests[DIGEST] = b"the image"
        self.digests: dict[str, str] = {}  # tag -> digest, where the test says what a tag names

    def manifest(self, repository, reference):
        body = self.manifests.get(reference)
        if body is None:
            return None
        digest = self.digests.get(reference) or (DIGEST if reference == DIGEST else records.sha256_digest(body))
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        config = (document.get("config") or {}).get("digest") if isinstance(document, dict) else None
        return Manifest(digest, records.OCI_MANIFEST, config, len(body), document)

    def blob(self, repository, digest):
        return self.blobs.get(digest)

    def put_blob(self, repository, data):
        digest = records.sha256_digest(data)
        self.blobs[digest] = data
        return digest

    def put_manifest(self, repository, tag, body, media_type):
        self.manifests[tag] = body
        return records.sha256_digest(body)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Made once per module: each private key file costs 600,000 PBKDF2 rounds to write and again to open."""
    directory = tmp_path_factory.mktemp("keys")
    private, public = signing.write_key_pair(directory / "ours", PASSPHRASE)
    _, other = signing.write_key_pair(directory / "theirs", PASSPHRASE)
    return signing.load_signer(private, PASSPHRASE), signing.load_public_key(public), signing.load_public_key(other)


EXPECT = trust_check.Expectation(platforms=("linux/amd64",), input_hash=record().input_hash, parent_id=record().parent_id)


def test_signed_and_attested_image_verifies(keys):
    signer, public, _ = keys
    registry = MemoryRegistry()
    assert trust_sign.sign(registry, signer, REPO, DIGEST, record()) == trust_sign.Signed(DIGEST, "signed", "signed")
    assert records.signature_tag(DIGEST) in registry.manifests and records.attestation_tag(DIGEST) in registry.manifests
    verdict = trust_check.check(registry, REPO, DIGEST, [public], EXPECT)
    assert verdict.verified, verdict.detail
    assert [c.check for c in verdict.checks] == list(trust_check.Check)
    assert verdict.record == record()
    # Signing again adds nothing: the registry already holds a signature and attestation by this key.
    before = dict(registry.manifests)
    assert trust_sign.sign(registry, signer, REPO, DIGEST, record()) == trust_sign.Signed(DIGEST, "present", "present")
    assert registry.manifests == before


def test_another_key_does_not_verify(keys):
    signer, _, other = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    verdict = trust_check.check(registry, REPO, DIGEST, [other], EXPECT)
    assert not verdict.verified
    assert verdict.failure.check == trust_check.Check.SIGNATURE
    assert "trusted key" in verdict.detail


def test_one_byte_of_the_attestation_changed_fails_the_attestation_check(keys):
    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    manifest = json.loads(registry.manifests[records.attestation_tag(DIGEST)])
    layer = manifest["layers"][0]
    envelope = json.loads(registry.blobs[layer["digest"]])
    statement = bytearray(base64.b64decode(envelope["payload"]))
    statement[statement.index(b"passed")] = ord("P")  # one byte of the attested record
    envelope["payload"] = base64.b64encode(bytes(statement)).decode()
    tampered = json.dumps(envelope).encode()
    registry.blobs[records.sha256_digest(tampered)] = tampered
    layer["digest"], layer["size"] = records.sha256_digest(tampered), len(tampered)
    registry.manifests[records.attestation_tag(DIGEST)] = json.dumps(manifest).encode()
    verdict = trust_check.check(registry, REPO, DIGEST, [public], EXPECT)
    assert not verdict.verified
    assert verdict.failure.check == trust_check.Check.ATTESTATION
    assert "does not verify" in verdict.failure.detail


def test_a_signature_for_another_digest_does_not_count(keys):
    signer, public, _ = keys
    registry = MemoryRegistry()
    other = "sha256:" + "cd" * 32
    registry.manifests[other] = b"another image"
    trust_sign.sign(registry, signer, REPO, other, record())
    # Copy the other image's signature under this digest's tag: signed, but for another manifest.
    registry.manifests[records.signature_tag(DIGEST)] = registry.manifests[records.signature_tag(other)]
    verdict = trust_check.check(registry, REPO, DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE
    registry.manifests[records.signature_tag(DIGEST)] = b""
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    registry.manifests[records.attestation_tag(DIGEST)] = registry.manifests[records.attestation_tag(other)]
    verdict = trust_check.check(registry, REPO, DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SUBJECT


@pytest.mark.parametrize("expect, needle", [
    (trust_check.Expectation(platforms=("linux/arm64",)), "platform linux/amd64"),
    (trust_check.Expectation(input_hash="sha256:" + "99" * 32), "input hash"),
    (trust_check.Expectation(parent_id="sha256:" + "99" * 32), "parent"),
    (trust_check.Expectation(image="mysql"), "not mysql"),
])
def test_a_record_that_does_not_match_the_policy_fails_the_policy_check(keys, expect, needle):
    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    verdict = trust_check.check(registry, REPO, DIGEST, [public], expect)
    assert verdict.failure.check == trust_check.Check.POLICY and needle in verdict.failure.detail


def test_unsigned_and_missing_images(keys):
    _, public, _ = keys
    registry = MemoryRegistry()
    verdict = trust_check.check(registry, REPO, DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE and "absent" in verdict.failure.detail
    verdict = trust_check.check(registry, REPO, "sha256:" + "ef" * 32, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.DIGEST
    assert json.loads(trust_check.summary_json([verdict]))["verified"] is False


def test_keyid_is_the_sha256_of_the_public_key(keys):
    signer, public, _ = keys
    from cryptography.hazmat.primitives import serialization

    der = public.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert signer.public.keyid == hashlib.sha256(der).hexdigest()


# --- --cache-from with trusted keys ------------------------------------------------------------------


def trusted_cache(keys_used, signer=None, signed_record=None):
    """A RegistryCache over a MemoryRegistry holding one cache image (signed when `signer` is given)."""
    from dataclasses import dataclass

    from fake_engine import FakeEngine
    from test_cache import attrs, registry_config

    from ingestion_factory.platforms import DEFAULT
    from ingestion_factory.workflows.cache import RegistryCache, cache_tag

    @dataclass(frozen=True)
    class Item:
        name: str = "datahub-sqlite"
        image_name: str = "ingestion-connector-datahub-sqlite"
        platform: object = DEFAULT

        @property
        def spec(self):
            return self

    registry = MemoryRegistry()
    image_id = "sha256:" + "33" * 32
    body = json.dumps({"config": {"digest": image_id}}).encode()
    registry.manifests[cache_tag(record().input_hash)] = body
    registry.digests[cache_tag(record().input_hash)] = DIGEST
    registry.manifests[DIGEST] = body
    daemon = FakeEngine()
    from ingestion_factory.model.plan import LABEL_NAME

    daemon.registry[f"{REPO}@{DIGEST}"] = attrs(image_id, **{"io.ingestion-factory.inputs": record().input_hash,
                                                          "io.ingestion-factory.parent-id": record().parent_id,
                                                          LABEL_NAME: "datahub-sqlite"})
    registry.blobs[image_id] = registry_config(daemon.registry[f"{REPO}@{DIGEST}"])
    if signer:
        trust_sign.sign(registry, signer, REPO, DIGEST, signed_record or record())
    warnings = []
    cache = RegistryCache(daemon, registry, lambda name: REPO, warn=warnings.append, keys=tuple(keys_used))
    return cache, Item(), daemon, warnings



def test_cache_takes_a_signed_attested_image_as_attested(keys):
    signer, public, _ = keys
    cache, item, daemon, warnings = trusted_cache([public], signer)
    hit = cache.fetch(item, record().input_hash, record().parent_id)
    assert hit is not None and hit.attested and warnings == []


@pytest.mark.parametrize("case, needle", [
    ("unsigned", "signature check failed"),
    ("other key", "signature check failed"),
    ("other inputs", "policy check failed: input hash"),
])
def test_cache_builds_an_unsigned_untrusted_or_mismatched_image_with_one_warning(keys, case, needle):
    signer, public, other = keys
    if case == "unsigned":
        cache, item, daemon, warnings = trusted_cache([public])
    elif case == "other key":
        cache, item, daemon, warnings = trusted_cache([other], signer)
    else:
        cache, item, daemon, warnings = trusted_cache([public], signer,
                                                      record(input_hash="sha256:" + "99" * 32))
    assert cache.fetch(item, record().input_hash, record().parent_id) is None
    assert daemon.pulls == []  # never pulled
    assert len(warnings) == 1 and needle in warnings[0] and "building it instead" in warnings[0]
    assert not cache.off_reason


def test_an_attested_hit_skips_the_smoke_test_unless_reverify(project, engine):
    from project_tree import add_connector
    from test_cache import FakeCache

    from ingestion_factory import settings as settings_mod
    from ingestion_factory.model import catalog
    from ingestion_factory.model.plan import make_plan
    from ingestion_factory.model.results import BuildStatus
    from ingestion_factory.workflows.builder import Builder
    from ingestion_factory.workflows.cache import Hit

    class AttestedCache(FakeCache):
        def fetch(self, item, input_hash, parent_id):
            hit = super().fetch(item, input_hash, parent_id)
            return Hit(hit.image_id, hit.ref, hit.digest, attested=True) if hit else None

    add_connector(project, "a")
    add_connector(project, "b")
    engine.unverified = {"a", "b"}  # their smoke tests would fail
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    for name, reverify, expected in (("a", False, BuildStatus.PULLED), ("b", True, BuildStatus.FAILED)):
        plan = make_plan(catalog.discover(settings), [name], engine, settings)
        builder = Builder(settings, engine, revision=None, run_build=engine.build,
                          smoke_test=engine.smoke_test, cache=AttestedCache(engine, {"base", name}),
                          reverify=reverify)
        results = {r.name: r for r in builder.run(plan, jobs=1, fail_fast=False)}
        assert results[name].status == expected, results[name]
        if not reverify:
            assert "smoke test not re-run" in results[name].detail


# --- bundles -------------------------------------------------------------------------------------------


IMAGE_ID = "sha256:" + "33" * 32


def test_a_bundle_signature_covers_bundle_json_and_every_image(keys):
    signer, public, other = keys
    manifest = b'{"format": "ingestion-factory-bundle/1"}\n'
    signed = trust_bundle.sign_bundle(signer, manifest, [(REPO, IMAGE_ID, record())])
    assert trust_bundle.check_bundle(signed, manifest, [IMAGE_ID], [public]) is None
    assert "not signed" in trust_bundle.check_bundle(None, manifest, [IMAGE_ID], [public])
    assert "does not verify" in trust_bundle.check_bundle(signed, manifest, [IMAGE_ID], [other])
    assert "another bundle.json" in trust_bundle.check_bundle(signed, manifest.replace(b"1", b"2"), [IMAGE_ID], [public])
    assert "no trusted attestation" in trust_bundle.check_bundle(signed, manifest, [IMAGE_ID, DIGEST], [public])
    assert "malformed" in trust_bundle.check_bundle(b"{}", manifest, [IMAGE_ID], [public])


def test_unbundle_refuses_an_unsigned_bundle_unless_allowed(keys, tmp_path):
    from rich.console import Console
    from test_bundle_manifest import IMAGES, PAYLOAD, QUIET

    from ingestion_factory import settings as settings_mod
    from ingestion_factory.model import bundle_format
    from ingestion_factory.workflows import bundle as bundle_mod
    from ingestion_factory.workflows import bundle_archive

    signer, public, _ = keys
    settings = settings_mod.load({**settings_mod.pyproject_defaults(settings_mod.Path.cwd()),
                                  "trusted_keys": [public.source]}, settings_mod.Path.cwd())
    ids = [image.image_id for image in IMAGES]
    signed_path, unsigned_path = tmp_path / "signed.tar", tmp_path / "unsigned.tar"
    bundle_archive.write_bundle(None, IMAGES, signed_path, QUIET, chunks=iter(PAYLOAD),
                            sign=lambda text: trust_bundle.sign_bundle(signer, text, [(REPO, i, record()) for i in ids]))
    bundle_archive.write_bundle(None, IMAGES, unsigned_path, QUIET, chunks=iter(PAYLOAD))

    def require(path, allow_unsigned, console=QUIET):
        with bundle_archive.open_bundle(path) as bundle:
            bundle_mod.require_trusted(settings, bundle, allow_unsigned, console)

    require(signed_path, False)
    with pytest.raises(bundle_format.BundleRefused, match="not signed") as refused:
        require(unsigned_path, False)
    assert refused.value.exit_code == 2
    from ingestion_factory.cli.console_progress import ConsoleProgress

    loud = Console(record=True, width=200)
    require(unsigned_path, True, ConsoleProgress(loud))
    shown = loud.export_text()
    assert "WARNING" in shown and "--allow-unsigned" in shown


def test_an_independent_dsse_implementation_verifies_our_attestation(keys):
    """securesystemslib (in-toto's DSSE and key library) checks the envelope `sign` stored: PAE, base64, ECDSA."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    layer = json.loads(registry.manifests[records.attestation_tag(DIGEST)])["layers"][0]
    envelope = Envelope.from_dict(json.loads(registry.blobs[layer["digest"]]))
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pem = open(public.source, "rb").read()
    key = SSlibKey.from_crypto(load_pem_public_key(pem), keyid=signer.public.keyid)
    assert key.scheme == "ecdsa-sha2-nistp256"
    assert set(envelope.verify([key], 1)) == {signer.public.keyid}
    assert envelope.pae() == records.pae(records.INTOTO_PAYLOAD_TYPE, envelope.payload)


def test_a_multi_platform_push_signs_each_variant_and_the_manifest_list(keys, project):
    from test_platforms import variants

    signer, public, _ = keys
    items = variants(project)
    for item in items:
        item.current = replace_labels(item.current, {"io.ingestion-factory.inputs": item.input_hash,
                                                     "io.ingestion-factory.parent-id": "sha256:" + "22" * 32})
    registry = MemoryRegistry()
    amd64, arm64, index = ("sha256:" + c * 64 for c in "123")
    for digest in (amd64, arm64, index):
        registry.manifests[digest] = b"an image"
        registry.digests[digest] = digest
    done = trust_sign.sign_pushed(registry, signer, None, items, REPO, index,
                             {"linux/amd64": amd64, "linux/arm64": arm64}, sbom_of=lambda image_id: "")
    assert [s.digest for s in done] == [amd64, arm64, index]
    for digest, platform in ((amd64, "linux/amd64"), (arm64, "linux/arm64")):
        verdict = trust_check.check(registry, REPO, digest, [public], trust_check.Expectation(platforms=(platform,)))
        assert verdict.verified, verdict.detail
        assert verdict.record.platform == platform
    verdict = trust_check.check(registry, REPO, index, [public], trust_check.Expectation())
    assert verdict.verified and verdict.record.platform == "linux/amd64,linux/arm64"


def replace_labels(info, labels):
    from dataclasses import replace

    return replace(info, labels={**info.labels, **labels})


# --- unbundle --push: the mirror's digests carry the bundle's proofs ------------------------------------

MIRROR_DIGEST = "sha256:" + "4d" * 32  # the digest the mirror gives the pushed image; not known to `inv bundle`


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"  # what `docker push` names an image's config


def image_manifest(image_id=IMAGE_ID, config_type=DOCKER_CONFIG) -> bytes:
    """An image's manifest as `docker push` leaves it: its config (the image ID) and a layer."""
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                       "config": {"mediaType": config_type, "size": 1234, "digest": image_id},
                       "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                   "size": 5678, "digest": "sha256:" + "77" * 32}]}).encode()


def mirror_with_image(image_id=IMAGE_ID, config_type=DOCKER_CONFIG) -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.manifests[MIRROR_DIGEST] = image_manifest(image_id, config_type)
    registry.digests[MIRROR_DIGEST] = MIRROR_DIGEST
    return registry


def test_a_bundles_proofs_copied_to_a_mirror_verify_there_without_a_signing_key(keys):
    signer, public, other = keys
    signed = trust_bundle.sign_bundle(signer, b"{}", [(REPO, IMAGE_ID, record(image_id=IMAGE_ID))])
    proofs = trust_bundle.bundle_proofs(signed, [public])
    assert set(proofs) == {IMAGE_ID} and proofs[IMAGE_ID].record.image_id == IMAGE_ID
    assert trust_bundle.bundle_proofs(signed, [other]) == {}  # only what a trusted key signed is copied
    registry = mirror_with_image()
    assert trust_bundle.copy_proof(registry, REPO, MIRROR_DIGEST, proofs[IMAGE_ID]) == \
        trust_sign.Signed(MIRROR_DIGEST, "copied", "copied")
    verdict = trust_check.check(registry, REPO, MIRROR_DIGEST, [public], EXPECT)
    assert verdict.verified, verdict.detail
    assert "by its image ID" in {c.check: c for c in verdict.checks}[trust_check.Check.SUBJECT].detail
    assert not trust_check.check(registry, REPO, MIRROR_DIGEST, [other], EXPECT).verified
    # Copying again adds nothing; signing with a key afterwards adds cosign's own proof next to the copy.
    before = dict(registry.manifests)
    assert trust_bundle.copy_proof(registry, REPO, MIRROR_DIGEST, proofs[IMAGE_ID]).signature == "present"
    assert registry.manifests == before
    assert trust_sign.sign(registry, signer, REPO, MIRROR_DIGEST, proofs[IMAGE_ID].record) == \
        trust_sign.Signed(MIRROR_DIGEST, "signed", "signed")
    layers = json.loads(registry.manifests[records.signature_tag(MIRROR_DIGEST)])["layers"]
    assert len(layers) == 2 and trust_check.check(registry, REPO, MIRROR_DIGEST, [public], EXPECT).verified


def test_a_copied_proof_does_not_vouch_for_a_manifest_of_another_image(keys):
    signer, public, _ = keys
    proofs = trust_bundle.bundle_proofs(trust_bundle.sign_bundle(signer, b"{}", [(REPO, IMAGE_ID, record())]), [public])
    registry = mirror_with_image("sha256:" + "66" * 32)  # the mirror's manifest names another config
    trust_bundle.copy_proof(registry, REPO, MIRROR_DIGEST, proofs[IMAGE_ID])
    verdict = trust_check.check(registry, REPO, MIRROR_DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE


def test_a_bundle_from_before_bundles_carried_signatures_gives_the_attestation_alone(keys):
    signer, public, _ = keys
    document = json.loads(trust_bundle.sign_bundle(signer, b"{}", [(REPO, IMAGE_ID, record())]))
    del document["signatures"]
    proofs = trust_bundle.bundle_proofs(json.dumps(document).encode(), [public])
    registry = mirror_with_image()
    assert trust_bundle.copy_proof(registry, REPO, MIRROR_DIGEST, proofs[IMAGE_ID]) == \
        trust_sign.Signed(MIRROR_DIGEST, "none in the bundle", "copied")
    verdict = trust_check.check(registry, REPO, MIRROR_DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE and "absent" in verdict.failure.detail
    assert trust_bundle.check_bundle(json.dumps(document).encode(), b"{}", [IMAGE_ID], [public]) is None  # still trusted


def test_unbundle_push_proves_each_pushed_digest_by_copy_and_with_a_key_by_signing(keys):
    from test_bundle_manifest import IMAGES

    from ingestion_factory.workflows import bundle as bundle_mod
    from ingestion_factory.workflows.push import PUSHED, PushResult

    signer, public, _ = keys
    image = IMAGES[0]
    proofs = trust_bundle.bundle_proofs(trust_bundle.sign_bundle(signer, b"{}", [(REPO, image.image_id,
                                                                    record(image_id=image.image_id))]), [public])

    class Pusher:
        def __init__(self, client):
            self.client, self.said = client, []

        def say(self, text):
            self.said.append(text)

        fail = say

        def redact(self, text):
            return text

    def pushed(image) -> PushResult:
        return PushResult(name=image.name, image="ref", repository=REPO, status=PUSHED, digest=MIRROR_DIGEST,
                          image_id=image.image_id)

    for signer_here, expected in ((None, "copied from the bundle"), (signer, "signed")):
        registry = mirror_with_image(image.image_id)
        result = bundle_mod._prove(Pusher(registry), None, image, pushed(image), proofs[image.image_id], signer_here)
        assert result.status == PUSHED and result.signed == {MIRROR_DIGEST: expected}
        assert trust_check.check(registry, REPO, MIRROR_DIGEST, [public], EXPECT).verified
    # A bundle from before bundles carried signatures, no key: the attestation alone, which the caller warns of.
    from dataclasses import replace

    result = bundle_mod._prove(Pusher(mirror_with_image(image.image_id)), None, image, pushed(image),
                               replace(proofs[image.image_id], payload=b"", signature=b""), None)
    assert result.signed == {MIRROR_DIGEST: bundle_mod.ATTESTATION_ONLY}
    # Neither a proof nor a key: nothing to write; the caller warns.
    result = bundle_mod._prove(Pusher(mirror_with_image(image.image_id)), None, image, pushed(image), None, None)
    assert result.signed == {} and result.status == PUSHED


# --- documents from outside nested too deep: refused in one line, never a RecursionError ------------------

DEEP = b"[" * (4 * 1024 * 1024)  # 4 MiB of nesting: json.loads alone ends in a RecursionError


@pytest.mark.parametrize("reader, what", [(records.read_envelope, "the DSSE envelope"),
                                          (records.read_statement, "the statement"),
                                          (records.read_simple_signing, "the simple-signing payload")])
def test_a_deeply_nested_envelope_statement_or_payload_is_a_record_error(reader, what):
    started = time.monotonic()
    with pytest.raises(records.RecordError) as refused:
        reader(DEEP)
    assert time.monotonic() - started < 2
    assert str(refused.value) == f"{what} is nested deeper than 100 levels"


def test_a_bundles_trust_json_nested_too_deep_is_refused_with_its_reason(keys):
    _, public, _ = keys
    assert trust_bundle.check_bundle(DEEP, b"{}", [IMAGE_ID], [public]) == "its trust.json is nested deeper than 100 levels"
    assert trust_bundle.bundle_proofs(DEEP, [public]) == {}
    # An attestation whose statement is nested too deep is skipped, before any key is asked.
    deep_statement = records.envelope(records.INTOTO_PAYLOAD_TYPE, DEEP[:100_000], b"sig")
    assert trust_bundle.bundle_proofs(json.dumps({"attestations": [deep_statement]}).encode(), [public]) == {}


def test_a_deeply_nested_attestation_in_the_registry_fails_the_attestation_check(keys):
    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    manifest = json.loads(registry.manifests[records.attestation_tag(DIGEST)])
    deep = DEEP[:1_000_000]
    registry.blobs[records.sha256_digest(deep)] = deep
    manifest["layers"][0]["digest"] = records.sha256_digest(deep)
    registry.manifests[records.attestation_tag(DIGEST)] = json.dumps(manifest).encode()
    verdict = trust_check.check(registry, REPO, DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.ATTESTATION
    assert verdict.failure.detail == "the DSSE envelope is nested deeper than 100 levels"


# --- a proof binds one image: the manifest body read, its repository, its name and version (#29) ------------

MYSQL_REPO = "127.0.0.1:5000/openmetadata/ingestion-connector-mysql"
POSTGRES_REPO = "127.0.0.1:5000/openmetadata/ingestion-connector-postgres"
MIRROR_HOST = "mirror.example:5000"


class HttpRegistry:
    """A MemoryRegistry served over the distribution API to a real RegistryClient, honestly or not: `lies` maps
    a manifest reference (tag or digest) to the body served there and the Docker-Content-Digest it claims."""

    host = "127.0.0.1:5000"

    def __init__(self, memory: MemoryRegistry, lies=None):
        self.memory, self.lies = memory, dict(lies or {})

    def request(self, method, url, headers=None, **kwargs):
        from test_registry import Reply

        if url.startswith("https://"):
            raise ConnectionError("connection refused")  # plain HTTP, as for an insecure registry
        _, kind, reference = url.partition("/v2/")[2].rsplit("/", 2)
        if kind == "blobs":
            data = self.memory.blobs.get(reference)
            return Reply(200, raw=data) if data is not None else Reply(404)
        body, claimed = self.lies.get(reference) or (self.memory.manifests.get(reference), None)
        if body is None:
            return Reply(404)
        return Reply(200, {"Content-Type": DOCKER_MANIFEST,
                           "Docker-Content-Digest": claimed or records.sha256_digest(body)}, raw=body)

    def client(self):
        from ingestion_factory.engine.registry import RegistryClient

        return RegistryClient(self.host, None, insecure=True, session=self)


@pytest.mark.parametrize("lie_by_digest_too", [False, True])
def test_a_registry_serving_another_body_under_the_signed_digest_fails_the_digest_check(keys, lie_by_digest_too):
    """The tag answers with an unsigned image's manifest under the signed digest's Docker-Content-Digest (and,
    in the second case, so does the signed digest itself): the client hashes what it read, so the digest
    check fails instead of `inv verify` vouching for a tag that names another image."""
    signer, public, _ = keys
    memory = MemoryRegistry()
    signed_body, other_body = image_manifest(), image_manifest("sha256:" + "66" * 32)
    signed = records.sha256_digest(signed_body)
    memory.manifests[signed] = memory.manifests["1.7.0.17"] = signed_body
    trust_sign.sign(memory, signer, REPO, signed, record())
    ref = trust_check.parse_reference(f"{REPO}:1.7.0.17")
    [honest] = trust_check.check_reference(HttpRegistry(memory).client(), ref, [public], EXPECT)
    assert honest.verified and honest.digest == signed, honest.detail
    lies = {"1.7.0.17": (other_body, signed), **({signed: (other_body, signed)} if lie_by_digest_too else {})}
    [verdict] = trust_check.check_reference(HttpRegistry(memory, lies).client(), ref, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.DIGEST and "names the digest" in verdict.failure.detail
    assert not verdict.verified


def test_a_pushed_proof_does_not_vouch_for_a_manifest_that_names_its_digest_as_config(keys):
    """`inv push` signs a manifest digest D. A forged manifest whose "config" is D is not a bundle's image-ID
    proof: the payload lacks the bundle's marker (and the attested record's image ID is not D)."""
    signer, public, _ = keys
    registry = MemoryRegistry()
    signed = records.sha256_digest(image_manifest())
    registry.manifests[signed] = image_manifest()
    trust_sign.sign(registry, signer, REPO, signed, record())
    forged_body = image_manifest(image_id=signed)
    forged = records.sha256_digest(forged_body)
    registry.manifests[forged] = forged_body
    for tag in (records.signature_tag, records.attestation_tag):
        registry.manifests[tag(forged)] = registry.manifests[tag(signed)]
    verdict = trust_check.check(registry, REPO, forged, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE and "marker" in verdict.failure.detail, verdict.detail


def test_a_bundles_proof_counts_only_for_a_manifest_whose_config_is_an_image_config(keys):
    signer, public, _ = keys
    proofs = trust_bundle.bundle_proofs(trust_bundle.sign_bundle(signer, b"{}", [(REPO, IMAGE_ID, record())]), [public])
    for config_type, verified in ((DOCKER_CONFIG, True), (records.OCI_CONFIG, True),
                                  ("application/vnd.cncf.helm.config.v1+json", False), (None, False)):
        registry = mirror_with_image(config_type=config_type)
        trust_bundle.copy_proof(registry, REPO, MIRROR_DIGEST, proofs[IMAGE_ID])
        verdict = trust_check.check(registry, REPO, MIRROR_DIGEST, [public], EXPECT)
        assert verdict.verified is verified, (config_type, verdict.detail)
        if not verified:
            assert verdict.failure.check == trust_check.Check.SIGNATURE and "image config" in verdict.failure.detail


def test_an_images_proofs_copied_under_another_repository_do_not_verify_there(keys):
    """The mysql image with its .sig and .att copied under ingestion-connector-postgres: signed and attested,
    but for mysql. (MemoryRegistry's tags are shared by every repository: the copy is made already.)"""
    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, MYSQL_REPO, DIGEST, record(image="mysql"))
    assert trust_check.check(registry, MYSQL_REPO, DIGEST, [public], EXPECT).verified
    verdict = trust_check.check(registry, POSTGRES_REPO, DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE and MYSQL_REPO in verdict.failure.detail, verdict.detail


def test_inv_verify_image_asks_for_the_image_its_repository_names(keys, project):
    """Even signed for the postgres repository (a key that signs what it should not), a record of mysql does
    not pass `inv verify .../ingestion-connector-postgres:TAG`."""
    from ingestion_factory import settings as settings_mod

    signer, public, _ = keys
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    registry = MemoryRegistry()
    registry.manifests["2.0.7.0"] = b"the image"
    registry.digests["2.0.7.0"] = DIGEST
    trust_sign.sign(registry, signer, POSTGRES_REPO, DIGEST, record(image="mysql", framework="openmetadata",
                                                                framework_version="2.0.7.0"))
    ref = trust_check.parse_reference(f"{POSTGRES_REPO}:2.0.7.0")
    [verdict] = trust_check.check_reference(registry, ref, [public], trust_check.image_expectation(ref, settings))
    assert verdict.failure.check == trust_check.Check.POLICY and "not postgres" in verdict.failure.detail


@pytest.mark.parametrize("signed_as, checked, same", [
    ("openmetadata/x", "docker.io/openmetadata/x", True),
    ("index.docker.io/openmetadata/x", "openmetadata/x", True),
    ("registry-1.docker.io/library/x", "x", True),
    ("127.0.0.1:5000/openmetadata/x", "127.0.0.1:5000/openmetadata/x", True),
    ("Registry.Example/openmetadata/x", "registry.example/openmetadata/x", True),
    ("127.0.0.1:5000/openmetadata/x", "127.0.0.1:5001/openmetadata/x", False),
    ("127.0.0.1:5000/openmetadata/x", "openmetadata/x", False),
    ("127.0.0.1:5000/openmetadata/x", "127.0.0.1:5000/other/x", False),
    ("127.0.0.1:5000/openmetadata/x:1.0", "127.0.0.1:5000/openmetadata/x", False),
])
def test_repositories_are_compared_canonically(signed_as, checked, same):
    assert (records.canonical_repository(signed_as) == records.canonical_repository(checked)) is same


def test_a_bundles_proofs_count_under_the_same_path_on_any_registry_and_nowhere_else(keys):
    """A bundle names its images as this factory does locally; `unbundle --push` puts them under that path on
    the mirror, whose host the bundle cannot know (as it cannot know the mirror's digest). So a bundle's proof
    counts under the same namespace/image on any registry, and under no other path."""
    signer, public, _ = keys
    local = "openmetadata/ingestion-connector-datahub-sqlite"
    proofs = trust_bundle.bundle_proofs(trust_bundle.sign_bundle(signer, b"{}", [(local, IMAGE_ID, record())]), [public])
    for host, path, verified in ((MIRROR_HOST, local, True), ("127.0.0.1:5000", local, True),
                                 (MIRROR_HOST, "openmetadata/ingestion-connector-postgres", False),
                                 (MIRROR_HOST, "elsewhere/ingestion-connector-datahub-sqlite", False)):
        registry = mirror_with_image()
        registry.registry = host
        trust_bundle.copy_proof(registry, f"{host}/{path}", MIRROR_DIGEST, proofs[IMAGE_ID])
        verdict = trust_check.check(registry, f"{host}/{path}", MIRROR_DIGEST, [public], EXPECT)
        assert verdict.verified is verified, (host, path, verdict.detail)


def test_a_pushed_proof_copied_to_another_registry_counts_there_once_signed_there(keys):
    """`inv push`'s proofs name the registry they were pushed to: copied to a mirror (crane, cosign copy) they
    do not count there until the mirror's digest is signed for the mirror's repository."""
    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())
    registry.registry = MIRROR_HOST
    mirrored = f"{MIRROR_HOST}/openmetadata/ingestion-connector-datahub-sqlite"
    verdict = trust_check.check(registry, mirrored, DIGEST, [public], EXPECT)
    assert verdict.failure.check == trust_check.Check.SIGNATURE and REPO in verdict.failure.detail
    assert trust_sign.sign(registry, signer, mirrored, DIGEST, record()) == trust_sign.Signed(DIGEST, "signed", "signed")
    assert trust_check.check(registry, mirrored, DIGEST, [public], EXPECT).verified


def test_inv_verify_image_asks_for_the_version_its_tag_names(project):
    from ingestion_factory import settings as settings_mod

    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    expect = trust_check.image_expectation(trust_check.parse_reference(f"{POSTGRES_REPO}:1.12.14.2"), settings)
    assert expect.image == "postgres" and expect.versions == (("openmetadata", "1.12.14.2"),)
    assert expect.platforms == ("linux/amd64",)
    latest = trust_check.image_expectation(trust_check.parse_reference(f"{POSTGRES_REPO}:latest"), settings)
    assert set(latest.versions) == {("openmetadata", "2.0.7.0"), ("datahub", "1.7.0.17")}  # the defaults
    for other in ("abc1234", "inputs-" + "ab" * 16):  # a commit or cache tag names no version
        assert trust_check.image_expectation(trust_check.parse_reference(f"{POSTGRES_REPO}:{other}"), settings).versions is None
    assert trust_check.image_expectation(trust_check.parse_reference(f"{POSTGRES_REPO}@{DIGEST}"), settings).versions is None
    base = trust_check.image_expectation(trust_check.parse_reference("openmetadata/ingestion-connector-base-datahub:1.0"),
                                   settings)
    assert base.image == "base-datahub"


def test_a_record_of_another_version_fails_the_policy_check(keys):
    signer, public, _ = keys
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, REPO, DIGEST, record())  # datahub 1.2.0
    verdict = trust_check.check(registry, REPO, DIGEST, [public], trust_check.Expectation(versions=(("datahub", "1.7.0.17"),)))
    assert verdict.failure.check == trust_check.Check.POLICY
    assert verdict.failure.detail == "the record is for datahub 1.2.0, not datahub 1.7.0.17"
    ok = trust_check.check(registry, REPO, DIGEST, [public], trust_check.Expectation(versions=(("datahub", "1.2.0"),)))
    assert ok.verified


def test_inv_verify_c_name_that_cannot_plan_checks_the_version_and_says_that_is_all(keys, project, monkeypatch):
    from project_tree import add_connector

    from ingestion_factory import settings as settings_mod
    from ingestion_factory.cli import trust_commands
    from ingestion_factory.errors import FactoryError

    signer, public, _ = keys
    add_connector(project, "a")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)

    def no_engine(*args, **kwargs):
        raise FactoryError("no engine")

    monkeypatch.setattr(trust_commands, "plan_for", no_engine)
    ref, expect = trust_commands._connector_reference(settings, "a", "127.0.0.1:5000", ("linux/amd64",))
    assert (ref.repository, ref.tag) == ("127.0.0.1:5000/openmetadata/ingestion-connector-a", "2.0.7.0")
    assert expect.image == "a" and expect.input_hash is None and expect.versions == (("openmetadata", "2.0.7.0"),)
    registry = MemoryRegistry()
    trust_sign.sign(registry, signer, ref.repository, DIGEST, record(image="a", framework="openmetadata",
                                                                  framework_version="2.0.7.0"))
    verdict = trust_check.check(registry, ref.repository, DIGEST, [public], expect)
    assert verdict.verified, verdict.detail
    policy = verdict.checks[-1].detail
    assert "openmetadata 2.0.7.0 only" in policy and "input hash not checked" in policy, policy
    older = MemoryRegistry()
    trust_sign.sign(older, signer, ref.repository, DIGEST, record(image="a", framework="openmetadata",
                                                               framework_version="1.12.14.2"))
    assert trust_check.check(older, ref.repository, DIGEST, [public], expect).failure.check == trust_check.Check.POLICY


def test_inv_verify_sends_the_factory_registry_credentials_to_no_other_registry(keys, project, monkeypatch,
                                                                               tmp_path):
    """FACTORY_REGISTRY_* belong to the factory's registry (or FACTORY_REGISTRY_HOST), as for --cache-from:
    `inv verify IMAGE` of another host does not send them there."""
    from ingestion_factory import settings as settings_mod
    from ingestion_factory.cli import trust_commands

    _, public, _ = keys
    monkeypatch.setenv("FACTORY_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("FACTORY_REGISTRY_PASSWORD", "s3cret-for-the-factory")
    monkeypatch.delenv("FACTORY_REGISTRY_HOST", raising=False)
    monkeypatch.delenv("FACTORY_REGISTRY_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no `docker login` here
    settings = settings_mod.load({**settings_mod.pyproject_defaults(project), "registry": "factory.example:5000",
                                  "trusted_keys": [public.source]}, project)
    clients = []

    class Recorder:
        def __init__(self, registry, credentials=None, **options):
            clients.append((registry, credentials))

    monkeypatch.setattr(trust_commands, "RegistryClient", Recorder)
    monkeypatch.setattr(trust_commands, "_insecure", lambda registry: True)
    monkeypatch.setattr(trust_check, "check_reference", lambda client, ref, keys, expect: [
        trust_check.Verdict(name=ref.repository, digest=DIGEST,
                            checks=(trust_check.CheckResult(trust_check.Check.DIGEST, True, DIGEST),))])
    assert trust_commands.verify(settings, "elsewhere.example/openmetadata/ingestion-connector-a:1.0",
                                 as_json=True) == 0
    assert clients[-1] == ("elsewhere.example", None)
    trust_commands.verify(settings, "factory.example:5000/openmetadata/ingestion-connector-a:1.0", as_json=True)
    assert clients[-1][0] == "factory.example:5000" and clients[-1][1].username == "ci"
