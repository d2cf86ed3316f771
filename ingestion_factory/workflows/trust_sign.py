"""Signing what `inv push` pushed: for one manifest digest, cosign's signature (`sha256-<hex>.sig`) and
attestation (`sha256-<hex>.att`) in the image's repository, written through the registry's HTTP API.

The attestation carries the image's verification record (its labels, smoke test and SBOM digest), which
trust_check.py reads back; what a trusted copy already holds is kept, not written twice.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .. import __version__
from ..engine.registry import RegistryClient
from ..engine.signing import PublicKey, Signer, load_signer, read_passphrase
from ..engine.verify import SMOKE_COMMAND
from ..model import trust_records as records
from ..model.plan import (
    LABEL_EPOCH,
    LABEL_FRAMEWORK,
    LABEL_FRAMEWORK_VERSION,
    LABEL_INPUTS,
    LABEL_LOCK,
    LABEL_PARENT,
    LABEL_RESOLUTION,
    LABEL_REVISION,
    LABEL_SOURCE,
    SBOM_PATH,
    PlanItem,
)
from ..model.trust_records import VerificationRecord
from ..settings import Settings
from .trust_check import Subject, attests, cosign_layers, signature_by

# --- the signing key -----------------------------------------------------------------------------


def signer_from(settings: Settings, passphrase_file: str | None = None) -> Signer | None:
    """The signing key when `signing_key` is set (opened now, so a wrong passphrase stops before any push)."""
    if not settings.signing_key:
        return None
    return load_signer(settings.root / settings.signing_key, read_passphrase(passphrase_file))


# --- the record of one pushed image -----------------------------------------------------------


def builder_id() -> str:
    return f"urn:ingestion-factory:{__version__}@{socket.gethostname()}"


def record_for(item: PlanItem, sbom_digest: str, platform: str | None = None) -> VerificationRecord:
    """The verification record of a verified, current image (push refuses any other), from its labels."""
    assert item.current is not None
    labels = {LABEL_FRAMEWORK: item.spec.framework.name, LABEL_FRAMEWORK_VERSION: item.spec.framework.version,
              **item.current.labels}
    # The version tag push reads is moved only after the smoke test and the SBOM check passed.
    return record_of(item.name, platform or str(item.platform), item.current.id, labels, sbom_digest)


def record_of(name: str, platform: str, image_id: str, labels: dict, sbom_digest: str) -> VerificationRecord:
    """The record of an image this machine smoke-tested (and checked the SBOM of), from its labels."""
    return VerificationRecord(
        image=name, platform=platform, input_hash=labels.get(LABEL_INPUTS, ""),
        parent_id=labels.get(LABEL_PARENT, ""), image_id=image_id, lock_digest=labels.get(LABEL_LOCK, ""),
        sbom_digest=sbom_digest, framework=labels.get(LABEL_FRAMEWORK, ""),
        framework_version=labels.get(LABEL_FRAMEWORK_VERSION, ""),
        source_revision=labels.get(LABEL_REVISION, ""), source_uri=labels.get(LABEL_SOURCE, ""),
        builder=builder_id(), smoke_command=" ".join(SMOKE_COMMAND), smoke_result="passed",
        resolution=labels.get(LABEL_RESOLUTION, ""), source_date_epoch=labels.get(LABEL_EPOCH, ""),
    )


def sbom_digest(engine, image_id: str) -> str:
    """sha256 of the SBOM the image carries ("" when it has none)."""
    raw = engine.read_files(image_id, [SBOM_PATH])[SBOM_PATH]
    return records.sha256_digest(raw) if raw is not None else ""


# --- signing ------------------------------------------------------------------------------------


@dataclass
class Signed:
    digest: str
    signature: str  # "signed" or "present"
    attestation: str


def sign(client: RegistryClient, signer: Signer, repository: str, digest: str,
         record: VerificationRecord) -> Signed:
    """Write the signature and the attestation of `repository@digest`; what a trusted copy already has is kept."""
    outcome = Signed(digest, "present", "present")
    sig_tag, att_tag = records.signature_tag(digest), records.attestation_tag(digest)
    earlier = cosign_layers(client, repository, sig_tag)
    subject = Subject.unread(client, repository, digest)
    if not any(isinstance(signature_by(client, repository, layer, subject, (signer.public,)), PublicKey)
               for layer in earlier):
        payload = records.simple_signing_payload(repository, digest)
        image = records.signature_image(payload, signer.sign(payload), earlier)
        store_image(client, repository, sig_tag, image)
        outcome.signature = "signed"
    earlier = cosign_layers(client, repository, att_tag)
    if not any(attests(client, repository, layer, (signer.public,), digest, record) for layer in earlier):
        statement = records.canonical_json(records.statement(repository, digest, record))
        signature = signer.sign(records.pae(records.INTOTO_PAYLOAD_TYPE, statement))
        envelope = records.canonical_json(records.envelope(records.INTOTO_PAYLOAD_TYPE, statement, signature,
                                                           signer.public.keyid))
        store_image(client, repository, att_tag, records.attestation_image(envelope, earlier=earlier))
        outcome.attestation = "signed"
    return outcome


def store_image(client: RegistryClient, repository: str, tag: str, image: records.SignatureImage) -> None:
    client.put_blob(repository, image.layer)
    client.put_blob(repository, image.config)
    client.put_manifest(repository, tag, image.manifest, records.OCI_MANIFEST)


# --- the hook `inv push` calls --------------------------------------------------------------------


def sign_pushed(client: RegistryClient, signer: Signer, engine, items: list[PlanItem], repository: str,
                digest: str, platforms: dict[str, str], sbom_of=None) -> list[Signed]:
    """Sign what one image's push left in the registry: each platform variant, and the manifest list.

    Single-platform pushes have one digest (`digest`, `platforms` empty). For a manifest list, the list's
    record is its default variant's with every platform named (a consumer checks each variant's own).
    """
    by_platform = {str(item.platform): item for item in items}
    sbom_of = sbom_of or (lambda image_id: sbom_digest(engine, image_id))  # injectable: tests have no engine
    sboms = {item.current.id: sbom_of(item.current.id) for item in items if item.current}
    done = []
    for platform, variant_digest in platforms.items():
        item = by_platform[platform]
        done.append(sign(client, signer, repository, variant_digest, record_for(item, sboms[item.current.id])))
    if digest:
        item = next((i for i in items if i.platform.is_default), items[0])
        joined = ",".join(platforms) if platforms else None
        done.append(sign(client, signer, repository, digest, record_for(item, sboms[item.current.id], joined)))
    return done


