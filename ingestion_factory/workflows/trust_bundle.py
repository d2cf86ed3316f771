"""A bundle's proofs: trust.json, signed when the bundle is made and checked when it is unbundled.

In a bundle an image is named by its ID (its config digest), not a registry manifest digest: `docker load`
knows images by ID, and the digest a mirror will give them is not known when the bundle is made. trust.json
holds a DSSE envelope over bundle.json's exact bytes and, per image, an attestation and a simple-signing
signature; `inv unbundle --push` copies the last two next to the mirror's digests (copy_proof), where
trust_check.py accepts them by the manifest's config.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from ..documents import DocumentError, load_json
from ..engine.registry import RegistryClient
from ..engine.signing import PublicKey, Signer
from ..model import trust_records as records
from ..model.bundle_format import TRUST_MEMBER
from ..model.trust_records import RecordError, VerificationRecord
from .trust_check import cosign_layers
from .trust_sign import Signed, store_image

BUNDLE_PAYLOAD_TYPE = "application/vnd.ingestion-factory.bundle.v1+json"  # the envelope's payload: bundle.json


def sign_bundle(signer: Signer, manifest_bytes: bytes, attested: list[tuple[str, str, VerificationRecord]]) -> bytes:
    """trust.json: a DSSE envelope over bundle.json's exact bytes, and per (repository, image ID, record) an
    attestation and a simple-signing signature; in a bundle an image is named by its ID (its config digest),
    not a registry manifest digest. `inv unbundle --push` copies the last two next to the mirror's digests."""
    def envelope(payload_type: str, payload: bytes) -> dict:
        return records.envelope(payload_type, payload, signer.sign(records.pae(payload_type, payload)),
                                signer.public.keyid)

    attestations = [envelope(records.INTOTO_PAYLOAD_TYPE,
                             records.canonical_json(records.statement(repository, image_id, record)))
                    for repository, image_id, record in attested]
    signatures = []
    for repository, image_id, _ in attested:
        payload = records.simple_signing_payload(repository, image_id, records.BY_IMAGE_ID)
        signatures.append({"payload": base64.b64encode(payload).decode(),
                           "signature": base64.b64encode(signer.sign(payload)).decode()})
    return records.canonical_json({"bundle": envelope(BUNDLE_PAYLOAD_TYPE, manifest_bytes),
                                   "attestations": attestations, "signatures": signatures})


@dataclass(frozen=True)
class ImageProof:
    """What a signed bundle carries for one image ID: its attestation (the envelope's exact bytes) and, from
    bundles made since unbundle --push copies them, its signature."""

    attestation: bytes
    record: VerificationRecord
    payload: bytes = b""
    signature: bytes = b""


def bundle_proofs(trust_bytes: bytes | None, keys=()) -> dict[str, ImageProof]:
    """image ID -> its proof, from trust.json; with `keys`, only what one of them signed. {} for no or a broken
    trust.json (check_bundle says why, where that matters)."""
    if trust_bytes is None:
        return {}
    try:
        document = load_json(trust_bytes, what=TRUST_MEMBER)
        attestations = [records.canonical_json(item) for item in document.get("attestations") or []]
        signatures = [(base64.b64decode(item["payload"], validate=True), base64.b64decode(item["signature"],
                                                                                            validate=True))
                      for item in document.get("signatures") or []]
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    signed_ids = {}
    for payload, signature in signatures:
        try:
            image_id = records.read_simple_signing(payload).digest
        except RecordError:
            continue
        if not keys or any(key.verify(signature, payload) for key in keys):
            signed_ids[image_id] = (payload, signature)
    proofs = {}
    for data in attestations:
        try:
            envelope = records.read_envelope(data)
            attested = records.read_statement(envelope.payload)
        except RecordError:
            continue
        if envelope.payload_type != records.INTOTO_PAYLOAD_TYPE or (keys and not _signed_by(envelope, keys)):
            continue
        for _, image_id in attested.subjects:
            payload, signature = signed_ids.get(image_id, (b"", b""))
            proofs[image_id] = ImageProof(data, attested.record, payload, signature)
    return proofs


def copy_proof(client: RegistryClient, repository: str, digest: str, proof: ImageProof) -> Signed:
    """Store a bundle's proofs of an image ID under the tags of `repository@digest` (a manifest with that config),
    next to what the tags hold; no signing key needed. What is there already is kept, not added twice.

    They still name the bundle's repository (`[registry/]namespace/image` as the factory names it locally), so
    they count only where that namespace/image path is `repository`'s (check); to bind a mirror digest to the
    mirror's own repository, sign it there (`sign`, as `inv unbundle --push` does with a signing key)."""
    outcome = Signed(digest, "present", "present")
    for tag, layer, make in (
            (records.signature_tag(digest), proof.payload,
             lambda earlier: records.signature_image(proof.payload, proof.signature, earlier)),
            (records.attestation_tag(digest), proof.attestation,
             lambda earlier: records.attestation_image(proof.attestation, earlier=earlier))):
        if not layer:  # a bundle made before bundles carried signatures: its attestation alone
            if tag.endswith(".sig"):
                outcome.signature = "none in the bundle"
            continue
        earlier = cosign_layers(client, repository, tag)
        if any(item.digest == records.sha256_digest(layer) for item in earlier):
            continue
        store_image(client, repository, tag, make(earlier))
        if tag.endswith(".sig"):
            outcome.signature = "copied"
        else:
            outcome.attestation = "copied"
    return outcome


def check_bundle(trust_bytes: bytes | None, manifest_bytes: bytes, image_ids: list[str], keys) -> str | None:
    """Why a bundle is not trusted (None: signed by a trusted key, every image attested by one)."""
    if trust_bytes is None:
        return f"it is not signed (no {TRUST_MEMBER})"
    try:
        document = load_json(trust_bytes, what=f"its {TRUST_MEMBER}")
        bundle = records.read_envelope(json.dumps(document["bundle"]).encode())
        attestations = [records.read_envelope(json.dumps(item).encode()) for item in document["attestations"]]
    except DocumentError as exc:  # too large or deep, or not JSON: the reason is one line of its own
        return str(exc)
    except (ValueError, KeyError, TypeError, RecordError) as exc:
        return f"its {TRUST_MEMBER} is malformed ({exc})"
    if bundle.payload_type != BUNDLE_PAYLOAD_TYPE or bundle.payload != manifest_bytes:
        return "its signature is over another bundle.json"
    if not _signed_by(bundle, keys):
        return "its signature does not verify with any trusted key"
    attested_ids = set()
    for item in attestations:
        if item.payload_type != records.INTOTO_PAYLOAD_TYPE or not _signed_by(item, keys):
            return "an image attestation does not verify with any trusted key"
        try:
            attested_ids.update(digest for _, digest in records.read_statement(item.payload).subjects)
        except RecordError as exc:
            return f"an image attestation is malformed ({exc})"
    missing = [image_id for image_id in image_ids if image_id not in attested_ids]
    if missing:
        return f"no trusted attestation for image {missing[0][:19]}"
    return None


def _signed_by(envelope: records.Envelope, keys) -> PublicKey | None:
    return next((key for key in keys for _, sig in envelope.signatures if key.verify(sig, envelope.signed_bytes)),
                None)
