"""Checking signed provenance wherever an image is taken in (`inv verify`, --cache-from with trusted_keys).

Checking reads back what signing wrote (trust_sign.py) and answers, check by check: is there such a digest,
does a trusted key sign it, does a trusted key sign an attestation about it, and does the attested record
match what the caller expects.

What is checked is one manifest, read by its digest (the registry client hashes the body it read, so a
registry cannot swap another body under a signed digest), in one repository: a signature counts only when
its docker-reference names that repository, and an attestation only when its subject does (names are
compared canonically: Docker Hub's aliases are one host). The attested record must then be for the image
name, framework version and platform asked for.

A signature or attestation may name the image's ID (its config digest) instead of the manifest digest:
that is what a signed bundle carries (trust_bundle.py), as `docker load` knows images by ID and the registry
digest a mirror will give them is not known when the bundle is made, nor the mirror's host. Such a proof
counts only with the bundle's marker in the signed payload (an attestation: with a record whose image ID is
that digest), only when the manifest declares an image config, and under the bundle's namespace/image path
on whichever registry holds it (where `inv unbundle --push` puts it). The manifest names its config by
digest, and the config its layers, so such a proof binds the manifest just as well.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from ..engine.registry import Manifest, RegistryClient, is_digest
from ..engine.signing import PublicKey, load_public_keys
from ..errors import ConfigError, FactoryError
from ..model import trust_records as records
from ..model.catalog import IMAGE_PREFIX
from ..model.names import repository_on
from ..model.results import StepResult, StepStatus
from ..model.trust_records import RecordError, VerificationRecord
from ..settings import Settings


class Check(str, Enum):
    """The checks `inv verify` (and --cache-from, with trusted_keys) makes, in order."""

    DIGEST = "digest"
    SIGNATURE = "signature"
    ATTESTATION = "attestation"
    SUBJECT = "subject"
    POLICY = "policy"


@dataclass(frozen=True)
class CheckResult:
    check: Check
    ok: bool
    detail: str


class VerifyStatus(StepStatus):
    VERIFIED = "verified", "green"
    NOT_VERIFIED = "not verified", "bold red"

    @property
    def failed(self) -> bool:
        return self is VerifyStatus.NOT_VERIFIED


@dataclass(frozen=True, kw_only=True)
class Verdict(StepResult):
    """The checks of one manifest digest (its name: the reference shown), in order, up to the first that failed.

    Its status and detail follow from them: verified when every check passed; the detail names the one that
    failed ("verified" when none did).
    """

    JSON_KEYS = ("reference=name", "digest", "verified", "key", "checks", "record")

    digest: str
    checks: tuple[CheckResult, ...]
    record: VerificationRecord | None = None
    key: str = ""  # the trusted key file that signed it
    status: VerifyStatus = field(init=False)
    detail: str = field(init=False)

    def __post_init__(self) -> None:
        failed = self.failure
        verified = bool(self.checks) and failed is None
        object.__setattr__(self, "status", VerifyStatus.VERIFIED if verified else VerifyStatus.NOT_VERIFIED)
        object.__setattr__(self, "detail", f"{failed.check.value} check failed: {failed.detail}" if failed
                           else "verified")

    @property
    def verified(self) -> bool:
        return self.status is VerifyStatus.VERIFIED

    @property
    def failure(self) -> CheckResult | None:
        return next((c for c in self.checks if not c.ok), None)


@dataclass(frozen=True)
class Expectation:
    """What the attested record must say; None: not checked (the caller does not know it)."""

    platforms: tuple[str, ...] | None = None
    input_hash: str | None = None
    parent_id: str | None = None
    image: str | None = None  # the catalog name (datahub-sqlite, base-datahub)
    versions: tuple[tuple[str, str], ...] | None = None  # (framework, version) pairs any one of which is asked for


def trusted_keys(settings: Settings) -> tuple[PublicKey, ...]:
    return load_public_keys(settings.root / path for path in settings.trusted_keys)


# --- reading what is in the registry --------------------------------------------------------------


def cosign_layers(client: RegistryClient, repository: str, tag: str) -> list[records.Layer]:
    """The layers already under a signature tag (none when the tag is absent or not a cosign manifest)."""
    manifest = client.manifest(repository, tag)
    if manifest is None:
        return []
    try:
        return records.layers_of(manifest.document)
    except RecordError:
        return []


def signature_by(client, repository: str, layer: records.Layer, subject: Subject, keys) -> PublicKey | str:
    """The trusted key that signed this layer's payload naming `subject`; else a string saying why not."""
    if layer.media_type != records.SIMPLE_SIGNING_TYPE:
        return f"layer {layer.digest[:19]} is {layer.media_type}, not a simple-signing payload"
    try:
        signature = base64.b64decode(layer.annotations.get(records.SIGNATURE_ANNOTATION, ""), validate=True)
    except ValueError:
        return f"the signature of layer {layer.digest[:19]} is not base64"
    payload = client.blob(repository, layer.digest)
    if payload is None:
        return f"the registry has no blob {layer.digest[:19]}"
    key = next((k for k in keys if k.verify(signature, payload)), None)
    if key is None:
        return "it does not verify with any trusted key"
    try:
        signed = records.read_simple_signing(payload)
    except RecordError as exc:
        return str(exc)
    return subject.why_not(signed) or key


def attests(client, repository: str, layer: records.Layer, keys, digest: str,
              record: VerificationRecord) -> bool:
    """Whether this layer is an attestation by one of `keys` saying exactly `record` about `digest`."""
    found = _read_attestation(client, repository, layer, keys)
    subject = Subject.unread(client, repository, digest)
    return isinstance(found, Found) and found.about(subject) and found.attested.record == record


@dataclass(frozen=True)
class Found:
    """An attestation a trusted key signed, and that key."""

    attested: records.Attested
    key: PublicKey

    def about(self, subject: Subject) -> bool:
        """About the manifest digest, in the repository checked."""
        return any(digest == subject.digest and subject.names(name) for name, digest in self.attested.subjects)

    def about_image(self, subject: Subject) -> bool:
        """A bundle's: about the image ID (its record says so too), under the bundle's namespace/image path."""
        image_id = subject.image_id
        return bool(image_id) and self.attested.record.image_id == image_id and \
            any(digest == image_id and subject.mirrors(name) for name, digest in self.attested.subjects)

    def subjects(self) -> str:
        return ", ".join(f"{name}@{digest[:19]}" for name, digest in self.attested.subjects)


def _read_attestation(client, repository: str, layer: records.Layer, keys):
    """Found, for a layer a trusted key signed; else a string saying why not."""
    if layer.media_type != records.DSSE_TYPE:
        return f"layer {layer.digest[:19]} is {layer.media_type}, not a DSSE envelope"
    data = client.blob(repository, layer.digest)
    if data is None:
        return f"the registry has no blob {layer.digest[:19]}"
    try:
        envelope = records.read_envelope(data)
    except RecordError as exc:
        return str(exc)
    if envelope.payload_type != records.INTOTO_PAYLOAD_TYPE:
        return f"envelope payload type is {envelope.payload_type!r}"
    signed = envelope.signed_bytes
    key = next((k for k in keys for _, sig in envelope.signatures if k.verify(sig, signed)), None)
    if key is None:
        return "the envelope's signature does not verify with any trusted key"
    try:
        return Found(records.read_statement(envelope.payload), key)
    except RecordError as exc:
        return str(exc)


# --- checking -----------------------------------------------------------------------------------

# What `docker push` and OCI name an image's config: only a manifest declaring one is an image with an ID.
IMAGE_CONFIG_TYPES = frozenset({"application/vnd.docker.container.image.v1+json", records.OCI_CONFIG})


@dataclass(frozen=True)
class Subject:
    """What a proof must name: one manifest digest in one repository (canonical `host/path`), and the manifest's
    config as read by that digest (the registry client hashes what it read, so the body is the signed one)."""

    repository: str
    digest: str
    config_digest: str | None = None
    config_type: str = ""

    @classmethod
    def read(cls, client, repository: str, manifest: Manifest) -> Subject:
        config = (manifest.document or {}).get("config")
        config_type = config.get("mediaType") if isinstance(config, dict) else None
        return cls(_repository_on_client(client, repository), manifest.digest, manifest.config_digest,
                   config_type if isinstance(config_type, str) else "")

    @classmethod
    def unread(cls, client, repository: str, digest: str) -> Subject:
        """For signing: the digest alone (a proof by image ID is a bundle's, never one `sign` writes)."""
        return cls(_repository_on_client(client, repository), digest)

    @property
    def image_id(self) -> str | None:
        """The image ID a bundle's proofs may name: the config digest, when the manifest declares an image config."""
        return self.config_digest if self.config_type in IMAGE_CONFIG_TYPES else None

    def names(self, reference: str) -> bool:
        return records.canonical_repository(reference) == self.repository

    def mirrors(self, reference: str) -> bool:
        """A bundle's name: its namespace/image path on the registry checked (the mirror's host is not known
        when the bundle is made; `inv unbundle --push` puts the image under the same path)."""
        host = self.repository.partition("/")[0]
        return records.canonical_repository(repository_on(host, reference)) == self.repository

    def why_not(self, signed: records.SignedName) -> str | None:
        """Why a payload a trusted key signed does not count for this subject (None: it does)."""
        if signed.digest == self.digest:
            return None if self.names(signed.reference) else \
                f"it is signed for {signed.reference}, not {self.repository}"
        if self.config_digest and signed.digest == self.config_digest:
            if any(signed.optional.get(key) != value for key, value in records.BY_IMAGE_ID.items()):
                return (f"it names the manifest's config {self.config_digest[:19]} without a bundle's image-ID "
                        "marker")
            if self.image_id is None:
                return (f"it names the manifest's config, which is {self.config_type or 'of no media type'}, "
                        "not an image config")
            return None if self.mirrors(signed.reference) else \
                f"it is a bundle's signature for {signed.reference}, not {self.repository}"
        return f"it is signed for another digest, {signed.digest[:19]}"


def _repository_on_client(client, repository: str) -> str:
    """The repository as the registry being read holds it (a name without a host is on that registry)."""
    return records.canonical_repository(repository_on(client.registry, repository))


def check(client: RegistryClient, repository: str, digest: str, keys: Iterable[PublicKey],
          expect: Expectation, reference: str = "") -> Verdict:
    """Every check for one manifest digest, stopping at the first that fails (later ones cannot be trusted)."""
    keys = tuple(keys)
    reference = reference or f"{repository}@{digest}"
    done: list[CheckResult] = []

    def verdict(record=None, key="") -> Verdict:
        return Verdict(name=reference, digest=digest, checks=tuple(done), record=record, key=key)

    if not is_digest(digest):  # a manifest list entry names its variants as it likes
        done.append(CheckResult(Check.DIGEST, False, f"{digest[:80]!r} is not a sha256 manifest digest"))
        return verdict()
    try:
        manifest = client.manifest(repository, digest)  # by digest: a body that hashes to another is an error
    except FactoryError as exc:
        done.append(CheckResult(Check.DIGEST, False, exc.message))
        return verdict()
    if manifest is None or manifest.digest != digest:
        done.append(CheckResult(Check.DIGEST, False, f"the registry has no {repository}@{digest}"))
        return verdict()
    done.append(CheckResult(Check.DIGEST, True, digest))
    subject = Subject.read(client, repository, manifest)

    tag = records.signature_tag(digest)
    try:
        layers = cosign_layers(client, repository, tag)
        found = [signature_by(client, repository, layer, subject, keys) for layer in layers]
    except FactoryError as exc:
        done.append(CheckResult(Check.SIGNATURE, False, exc.message))
        return verdict()
    signer = next((item for item in found if isinstance(item, PublicKey)), None)
    if signer is None:
        why = (f"no signature ({tag} is absent)" if not layers
               else f"none of the {len(layers)} signature(s) in {tag} counts: " + "; ".join(dict.fromkeys(found)))
        done.append(CheckResult(Check.SIGNATURE, False, why))
        return verdict()
    done.append(CheckResult(Check.SIGNATURE, True, f"signed by {signer.source}"))

    try:
        layers = cosign_layers(client, repository, records.attestation_tag(digest))
        found = [_read_attestation(client, repository, layer, keys) for layer in layers]
    except FactoryError as exc:
        done.append(CheckResult(Check.ATTESTATION, False, exc.message))
        return verdict(key=signer.source)
    good = [item for item in found if isinstance(item, Found)]
    if not good:
        why = (f"no attestation ({records.attestation_tag(digest)} is absent)" if not layers
               else "; ".join(str(item) for item in found))
        done.append(CheckResult(Check.ATTESTATION, False, why))
        return verdict(key=signer.source)
    done.append(CheckResult(Check.ATTESTATION, True, f"SLSA provenance signed by {good[-1].key.source}"))

    about = [item for item in good if item.about(subject)] or [item for item in good if item.about_image(subject)]
    if not about:
        subjects = "; ".join(item.subjects() for item in good)
        done.append(CheckResult(Check.SUBJECT, False, f"the attestation is about {subjects}, not "
                                                      f"{subject.repository}@{digest}"))
        return verdict(key=signer.source)
    done.append(CheckResult(Check.SUBJECT, True, digest if about[0].about(subject)
                            else f"{digest} by its image ID {subject.image_id[:19]} (attested in a bundle)"))

    record = about[-1].attested.record  # the newest one (cosign appends)
    problem = policy_problem(record, expect)
    done.append(CheckResult(Check.POLICY, problem is None, problem or _policy_summary(record, expect)))
    return verdict(record, signer.source)


def policy_problem(record: VerificationRecord, expect: Expectation) -> str | None:
    if record.smoke_result != "passed":
        return f"the smoke test result is {record.smoke_result!r}"
    if expect.image and record.image != expect.image:
        return f"the record is for {record.image}, not {expect.image}"
    if expect.versions is not None and (record.framework, record.framework_version) not in expect.versions:
        asked = " or ".join(f"{framework} {version}" for framework, version in expect.versions) or "no version"
        return f"the record is for {record.framework} {record.framework_version}, not {asked}"
    if expect.platforms is not None and record.platform not in expect.platforms:
        return f"platform {record.platform}, the policy accepts {', '.join(expect.platforms)}"
    if expect.input_hash and record.input_hash != expect.input_hash:
        return f"input hash {record.input_hash[:19]}, the plan's is {expect.input_hash[:19]}"
    if expect.parent_id and record.parent_id != expect.parent_id:
        return f"parent {record.parent_id[:19]}, the plan's is {expect.parent_id[:19]}"
    return None


def _policy_summary(record: VerificationRecord, expect: Expectation) -> str:
    checked = ["smoke test passed"]
    if expect.image:
        checked.append(f"image {record.image}")
    if expect.versions is not None and not expect.input_hash:
        checked.append(f"{record.framework} {record.framework_version} only (input hash not checked: another "
                       "build of that version would pass too)")
    elif expect.versions is not None:
        checked.append(f"{record.framework} {record.framework_version}")
    elif not expect.input_hash:
        checked.append("version not checked (the reference names none)")
    if expect.platforms is not None:
        checked.append(f"platform {record.platform}")
    if expect.input_hash:
        checked.append("input hash matches the plan")
    if expect.parent_id:
        checked.append("parent matches the plan")
    return ", ".join(checked)


def summary_json(verdicts: list[Verdict]) -> str:
    return json.dumps({"verified": all(v.verified for v in verdicts), "images": [v.as_json() for v in verdicts]},
                      indent=2)


def require_keys(keys: tuple[PublicKey, ...], what: str) -> None:
    if not keys:
        raise ConfigError(f"{what} needs trusted keys", "set factory.trusted_keys to a list of public key files "
                          "(e.g. the factory-signing.pub `inv keys generate` wrote)")


# --- `inv verify` --------------------------------------------------------------------------------

REFERENCE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/:\[\]-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                       r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]; "docker.io" for Docker Hub
    repository: str  # as push names it: host/namespace/image, or namespace/image on Docker Hub
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return self.digest or self.tag


def looks_like_image(text: str) -> bool:
    return any(mark in text for mark in "/:@")


def parse_reference(text: str) -> Reference:
    """`[host[:port]/]path[:tag][@sha256:...]` -> its parts; ConfigError (bad input) otherwise."""
    found = REFERENCE.match(text.strip())
    if not found or "//" in found["name"] or found["name"].endswith("/"):
        raise ConfigError(f"{text!r} is not an image reference",
                          "give registry/namespace/image:tag, or an image @sha256:<digest>, or -c NAME")
    name = found["name"]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, name
    else:
        registry, repository = "docker.io", name
    return Reference(registry, repository, found["tag"] or ("" if found["digest"] else "latest"),
                     found["digest"] or "")


def image_expectation(ref: Reference, settings: Settings) -> Expectation:
    """What `inv verify IMAGE` asks of the record: the image its repository is named for (this factory names
    them `ingestion-connector-NAME`), a platform of `factory.platforms`, and the version its tag names: a
    supported version, or `latest` (a default version's); a commit, cache or digest reference names none."""
    image = ref.repository.rpartition("/")[2].removeprefix(IMAGE_PREFIX)
    frameworks = list(settings.frameworks.values())
    if ref.tag == "latest":
        versions = tuple((f.name, f.default_version or f.version) for f in frameworks)
    else:
        versions = tuple((f.name, ref.tag) for f in frameworks if ref.tag and ref.tag in f.supported) or None
    return Expectation(platforms=tuple(p.name for p in settings.target_platforms), image=image, versions=versions)


def check_reference(client: RegistryClient, ref: Reference, keys, expect: Expectation) -> list[Verdict]:
    """Resolve a tag (or take the digest) and check it; a manifest list is checked, then each of its variants."""
    try:
        manifest = client.manifest(ref.repository, ref.reference)
    except FactoryError as exc:
        return [Verdict(name=f"{ref.repository}:{ref.reference}", digest="",
                        checks=(CheckResult(Check.DIGEST, False, exc.message),))]
    if manifest is None or (ref.digest and manifest.digest != ref.digest):
        missing = CheckResult(Check.DIGEST, False, f"the registry has no {ref.repository}:{ref.reference}")
        return [Verdict(name=f"{ref.repository}:{ref.reference}", digest=ref.digest, checks=(missing,))]
    shown = f"{ref.repository}:{ref.tag}" if ref.tag else ref.repository
    variants = [entry for entry in (manifest.document or {}).get("manifests") or [] if isinstance(entry, dict)]
    if not variants:
        return [check(client, ref.repository, manifest.digest, keys, expect, f"{shown}@{manifest.digest}")]
    # The list's record names every platform; each variant's record names its own, checked against the policy.
    verdicts = [check(client, ref.repository, manifest.digest, keys,
                      Expectation(image=expect.image, versions=expect.versions),
                      f"{shown}@{manifest.digest} (manifest list)")]
    for entry in variants:
        platform = entry.get("platform") or {}
        name = "/".join(part for part in (platform.get("os"), platform.get("architecture"), platform.get("variant"))
                        if part)
        wanted = expect.platforms is None or name in expect.platforms
        verdicts.append(check(client, ref.repository, str(entry.get("digest", "")), keys,
                              Expectation(platforms=(name,) if wanted else expect.platforms,
                                          input_hash=expect.input_hash if name == "linux/amd64" else None,
                                          image=expect.image, versions=expect.versions),
                              f"{shown}@{entry.get('digest')} ({name})"))
    return verdicts

