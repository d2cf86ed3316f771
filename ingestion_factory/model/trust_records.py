"""The documents of signed provenance, in the formats cosign and in-toto define (pure data, no I/O, no keys).

- a *signature*: cosign's simple-signing payload naming a repository and a manifest digest, stored as
  the one layer of an OCI image manifest under the tag `sha256-<hex>.sig`, its base64 signature in the
  layer annotation `dev.cosignproject.cosign/signature`;
- an *attestation*: a DSSE envelope (signed over DSSE's pre-authentication encoding, PAE) around an
  in-toto Statement v1 whose predicate is SLSA Provenance v1, stored under `sha256-<hex>.att`.

Both "images" carry the config blob cosign writes for them, so `cosign verify --key` and
`cosign verify-attestation --key` read what this factory writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..documents import DocumentError, load_json
from .names import DOCKER_HUB, canonical_host

JSON = dict[str, Any]  # a parsed or built JSON object

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_TYPE = "application/vnd.dsse.envelope.v1+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_ANNOTATION = "predicateType"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SIGNATURE_KIND = "cosign container image signature"
BUILD_TYPE = "urn:ingestion-factory:build:v1"  # names this factory's build recipe (a URI, as SLSA asks)
RECORD_NAME = "ingestion-factory-verification"  # the byproduct that carries the verification record
BY_IMAGE_ID = {"ingestion-factory.subject": "image-id"}  # a bundle's signature payload names the image ID


class RecordError(ValueError):
    """A document that is not what it claims (wrong type, malformed JSON, too large or deep, missing fields).

    Payloads, envelopes and statements come from a registry or a bundle: they are parsed with load_json.
    """


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(document: object) -> bytes:
    """Compact, key-sorted JSON: the same document always has the same bytes (and digest)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def hex_of(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise RecordError(f"not a sha256 digest: {digest!r}")
    return hexdigest


def signature_tag(digest: str) -> str:
    """Where cosign looks for an image's signatures: `sha256-<hex>.sig` in the image's repository."""
    return f"sha256-{hex_of(digest)}.sig"


def attestation_tag(digest: str) -> str:
    return f"sha256-{hex_of(digest)}.att"


# --- signatures ----------------------------------------------------------------------------------


def simple_signing_payload(repository: str, digest: str, optional: dict[str, str] | None = None) -> bytes:
    """cosign's payload: which manifest (by digest) of which repository the signature is for."""
    hex_of(digest)
    return canonical_json({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_KIND,
        },
        "optional": optional or None,
    })


@dataclass(frozen=True)
class SignedName:
    """What a simple-signing payload says: this digest is the image named `reference`."""

    reference: str  # docker-reference: the repository, without tag or digest
    digest: str  # docker-manifest-digest (a bundle's: the image ID, with its marker in `optional`)
    optional: dict[str, Any]  # the payload's "optional" object ({} when null)


def read_simple_signing(payload: bytes) -> SignedName:
    """The names in a simple-signing payload; RecordError when malformed."""
    try:
        document = load_json(payload, what="the simple-signing payload")
        critical = document["critical"]
        if critical["type"] != SIGNATURE_KIND:
            raise RecordError(f"payload type is {critical['type']!r}, not {SIGNATURE_KIND!r}")
        optional = document.get("optional") or {}
        return SignedName(str(critical["identity"]["docker-reference"]),
                          str(critical["image"]["docker-manifest-digest"]),
                          optional if isinstance(optional, dict) else {})
    except (RecordError, DocumentError) as exc:
        raise RecordError(str(exc)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"not a simple-signing payload ({type(exc).__name__}: {exc})") from None


def canonical_repository(name: str) -> str:
    """`host/path` as a registry knows the repository, so two spellings of one compare equal: Docker Hub's
    aliases are `docker.io`, a one-part Hub name is under `library/`, a host is case-insensitive. A name with
    a tag or digest stays as it is (and so equals no repository)."""
    first, _, rest = name.strip().partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = canonical_host(first.lower()), rest
    else:
        host, path = DOCKER_HUB, name.strip()
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return f"{host}/{path}"


# --- DSSE ------------------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is signed, so the type cannot be swapped under the payload."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(payload_type: str, payload: bytes, signature: bytes, keyid: str = "") -> JSON:
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode()}],
    }


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature)

    @property
    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)


def read_envelope(data: bytes) -> Envelope:
    try:
        document = load_json(data, what="the DSSE envelope")
        signatures = tuple((str(s.get("keyid") or ""), base64.b64decode(s["sig"], validate=True))
                           for s in document["signatures"])
        return Envelope(str(document["payloadType"]), base64.b64decode(document["payload"], validate=True),
                        signatures)
    except DocumentError as exc:
        raise RecordError(str(exc)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"not a DSSE envelope ({type(exc).__name__}: {exc})") from None


# --- what the factory attests ------------------------------------------------------------------


OPTIONAL_RECORD_FIELDS = frozenset({"resolution", "source_date_epoch"})


@dataclass(frozen=True)
class VerificationRecord:
    """What this factory checked before it let an image out: the facts a consumer's policy compares."""

    image: str  # the catalog name (datahub-sqlite, base-datahub)
    platform: str  # linux/amd64; for a manifest list, its platforms joined by ","
    input_hash: str  # the plan's hash of every input (the image's io.ingestion-factory.inputs label)
    parent_id: str  # the image ID it was built FROM
    image_id: str  # its own config digest
    lock_digest: str  # sha256 of the requirements.lock it installed
    sbom_digest: str  # sha256 of the CycloneDX SBOM it carries
    framework: str
    framework_version: str
    source_revision: str  # the commit it was built from
    source_uri: str  # where that commit lives ("" for a local checkout)
    builder: str  # who built it: this factory, its version, the host
    smoke_command: str
    smoke_result: str  # "passed": only a verified image gets the tags push reads
    # JSON: the framework version's constraints and uv overrides, what differs from a plain `pip install`
    # ("" when none; absent from records made before it existed).
    resolution: str = ""
    # The image's SOURCE_DATE_EPOCH: with the revision and the parent, what `inv rebuild` needs to build the
    # same image again ("" in records made before it existed).
    source_date_epoch: str = ""

    def as_dict(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSON) -> VerificationRecord:
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data and name not in OPTIONAL_RECORD_FIELDS]
        if missing:
            raise RecordError(f"the verification record lacks {', '.join(missing)}")
        return cls(**{name: str(data[name]) for name in names if name in data})


def _resolution_parameters(record: VerificationRecord) -> JSON:
    """{"resolution": {"constraints": [...], "overrides": [...]}} when the framework version has any."""
    try:  # a record may come from a bundle (unbundle --push signs with the builder's record)
        found = load_json(record.resolution, what="the resolution") if record.resolution else {}
    except DocumentError:
        found = {}
    return {"resolution": found} if isinstance(found, dict) and found else {}


def statement(subject_name: str, digest: str, record: VerificationRecord) -> JSON:
    """An in-toto Statement v1 about one manifest digest, its predicate SLSA Provenance v1."""
    dependencies = [{"name": "parent-image", "digest": {"sha256": hex_of(record.parent_id)}}]
    if record.source_revision:
        source = {"name": "source", "digest": {"gitCommit": record.source_revision}}
        if record.source_uri:
            source["uri"] = f"git+{record.source_uri}@{record.source_revision}"
        dependencies.insert(0, source)
    if record.lock_digest.startswith("sha256:"):
        dependencies.append({"name": "requirements.lock", "digest": {"sha256": hex_of(record.lock_digest)}})
    byproducts = [{"name": RECORD_NAME, "mediaType": "application/json", "annotations": record.as_dict()}]
    if record.sbom_digest.startswith("sha256:"):
        byproducts.append({"name": "sbom.cdx.json", "mediaType": "application/vnd.cyclonedx+json",
                           "digest": {"sha256": hex_of(record.sbom_digest)}})
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": subject_name, "digest": {"sha256": hex_of(digest)}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"image": record.image, "platform": record.platform,
                                       "framework": record.framework,
                                       "frameworkVersion": record.framework_version,
                                       **_resolution_parameters(record)},
                "internalParameters": {"inputHash": record.input_hash,
                                       **({"sourceDateEpoch": record.source_date_epoch}
                                          if record.source_date_epoch else {})},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": record.builder},
                "byproducts": byproducts,
            },
        },
    }


@dataclass(frozen=True)
class Attested:
    """What a verified attestation says: the digests it is about and the factory's record."""

    subjects: tuple[tuple[str, str], ...]  # (name, sha256:<hex>)
    record: VerificationRecord


def read_statement(payload: bytes) -> Attested:
    """The subjects and verification record of a Statement this factory wrote; RecordError otherwise."""
    try:
        document = load_json(payload, what="the statement")
    except DocumentError as exc:
        raise RecordError(str(exc)) from None
    if not isinstance(document, dict) or document.get("_type") != STATEMENT_V1:
        raise RecordError(f"not an in-toto Statement v1 (_type {document.get('_type') if isinstance(document, dict) else None!r})")
    if document.get("predicateType") != SLSA_PROVENANCE_V1:
        raise RecordError(f"predicate is {document.get('predicateType')!r}, not SLSA Provenance v1")
    try:
        subjects = tuple((str(s.get("name", "")), "sha256:" + s["digest"]["sha256"]) for s in document["subject"])
        byproducts = document["predicate"]["runDetails"].get("byproducts") or []
        records = [b.get("annotations") for b in byproducts if b.get("name") == RECORD_NAME]
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"malformed statement ({type(exc).__name__}: {exc})") from None
    if not records or not isinstance(records[0], dict):
        raise RecordError(f"the provenance has no {RECORD_NAME} record")
    return Attested(subjects, VerificationRecord.from_dict(records[0]))


# --- cosign's "images" ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]

    def descriptor(self) -> JSON:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest,
                "annotations": dict(self.annotations)}


@dataclass(frozen=True)
class SignatureImage:
    """One cosign signature or attestation "image" as the registry stores it: manifest, config, new layer."""

    manifest: bytes
    config: bytes
    layer: bytes  # the layer this signing adds (earlier ones are in the registry already)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def cosign_image(layer: bytes, layer_type: str, annotations: dict[str, str],
                 earlier: list[Layer] | None = None) -> SignatureImage:
    """The OCI image cosign writes: its config (zero times, a diff ID per layer), earlier layers, then this one.

    Like cosign, a new signature is appended: signatures of other keys in the same tag are kept.
    """
    layers = [*(earlier or []), Layer(layer_type, sha256_digest(layer), len(layer), dict(annotations))]
    config = canonical_json({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "", "rootfs": {"type": "layers", "diff_ids": [item.digest for item in layers]}, "config": {},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256_digest(config)},
        "layers": [item.descriptor() for item in layers],
    })
    return SignatureImage(manifest, config, layer)


def signature_image(payload: bytes, signature: bytes, earlier: list[Layer] | None = None) -> SignatureImage:
    return cosign_image(payload, SIMPLE_SIGNING_TYPE, {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
                        earlier)


def attestation_image(envelope_bytes: bytes, predicate_type: str = SLSA_PROVENANCE_V1,
                      earlier: list[Layer] | None = None) -> SignatureImage:
    # cosign leaves an attestation's signature annotation empty: the signature is inside the envelope.
    return cosign_image(envelope_bytes, DSSE_TYPE, {SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate_type},
                        earlier)


def layers_of(manifest: JSON | None) -> list[Layer]:
    """The layers a signature manifest lists (cosign appends one per signature)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise RecordError("not an OCI image manifest with layers")
    found = []
    for layer in manifest["layers"]:
        try:
            found.append(Layer(str(layer["mediaType"]), str(layer["digest"]), int(layer.get("size", 0)),
                               dict(layer.get("annotations") or {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"malformed layer in the signature manifest ({exc})") from None
    return found
