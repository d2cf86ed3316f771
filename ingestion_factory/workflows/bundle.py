"""Air-gapped sites: `inv bundle` writes verified images and a manifest into one archive; `inv unbundle` loads it.

The format is model/bundle_format.py's; writing and safely reading the archive, bundle_archive.py's. Here: what
the commands do with them.

Unbundling checks the checksum before anything reaches the engine, loads the images untagged, checks
every image ID and its labels against the manifest, smoke-tests every image, and only then tags them
(and, with --push, pushes them to a mirror). A bundle that fails any check tags nothing, and the
images it loaded are removed again; every tag in the engine is recorded first and restored should
anything have moved one.

With --push, the mirror's images carry proof as `inv push` leaves it: a signed bundle's signature and
attestation of each image (they name its image ID, which the mirror's manifest names as its config) are
copied next to the mirror's digest, no key needed; with `signing_key` set each digest is also signed here,
which is what cosign and admission controllers need (they accept only proofs naming the manifest digest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..engine.daemon import plan_for
from ..engine.docker_engine import DockerEngine, Engine, EngineRefused, ImageMissing, describe
from ..engine.registry import read_credentials
from ..engine.verify import move_tags
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model.bundle_format import BundledImage, BundleManifest, BundleRefused, bundled_image, check_targets, is_sha256
from ..model.failures import StepFailed
from ..model.names import cache_tag, repository_on
from ..model.plan import LABEL_INPUTS, LABEL_NAME, LABEL_PARENT, require_verified
from ..model.results import StepResult, StepStatus, human_size, write_json
from ..platforms import DEFAULT as DEFAULT_PLATFORM
from ..progress import Progress
from ..settings import Settings
from . import trust_bundle, trust_check, trust_sign
from .bundle_archive import OpenBundle, check_archive, load_images, open_bundle, write_bundle
from .push import FAILED, NOT_PUSHED, PRESENT, PUSHED, PushResult, PushRun, TagResult, connect, push_in_turn


def bundle(settings: Settings, names: list[str] | None, output: Path, *, progress: Progress, engine=None,
           passphrase_file: str | None = None, framework: str | None = None) -> int:
    """`inv bundle`: the named connectors (default: every available one, of `framework` only when `--version`
    names one) and the images they are built FROM.

    `engine`: an Engine instead of the local one (tests pass the fake)."""
    started = time.monotonic()
    catalog = catalog_mod.discover(settings)
    if not names and catalog.broken:
        raise ConfigError(f"cannot bundle everything: {', '.join(sorted(catalog.broken))} cannot be built",
                          "fix those directories, or name the connectors to bundle with -c")
    chosen = [name for name in catalog.resolve(names) if names or framework in (None, catalog[name].framework.name)]
    plan, engine = plan_for(settings, catalog, chosen, engine=engine)
    require_verified(plan, "bundle")
    signer = trust_sign.signer_from(settings, passphrase_file)
    images = [bundled_image(item, item.ref.rpartition(":")[0]) for item in plan]
    progress.say(f"Bundling {len(images)} image(s) into {output}{', signed' if signer else ''}.")
    manifest = write_bundle(engine, images, output, progress, sign=_bundle_signer(signer, engine, plan, images))
    progress.say(f"Wrote {output}: {len(images)} image(s), {human_size(output.stat().st_size)}, images "
                  f"{manifest.archive_sha256[:19]}... ({time.monotonic() - started:.1f}s).")
    for image in images:
        progress.say(f"  {image.repository}  {image.image_id[:19]}  {', '.join(image.tags)}")
    return 0


def _bundle_signer(signer, engine: Engine, plan, images: list[BundledImage]):
    if signer is None:
        return None
    attested = [(image.repository, item.current.id,
                 trust_sign.record_for(item, trust_sign.sbom_digest(engine, item.current.id)))
                for item, image in zip(plan, images, strict=True)]
    return lambda manifest_bytes: trust_bundle.sign_bundle(signer, manifest_bytes, attested)


def require_trusted(settings: Settings, bundle: OpenBundle, allow_unsigned: bool, progress: Progress) -> None:
    """With trusted_keys: a bundle signed by one of them, every image attested, or --allow-unsigned (loudly)."""
    keys = trust_check.trusted_keys(settings)
    if not keys:
        return
    name = bundle.path.name
    why = trust_bundle.check_bundle(bundle.trust_bytes, bundle.manifest_bytes,
                             [image.image_id for image in bundle.manifest.images], keys)
    if why is None:
        progress.say(f"{name}: signed by a trusted key; every image attested.")
    elif allow_unsigned:
        progress.fail(f"WARNING: {name} is not trusted ({why}); accepted because of --allow-unsigned")
    else:
        raise BundleRefused(f"refusing {name}: {why}",
                            "get a bundle signed by a key in factory.trusted_keys, or pass --allow-unsigned")


def tag_state(engine: Engine) -> dict[str, str]:
    """Every tag in the engine and the image ID it names."""
    return {tag: image.id for image in engine.images() for tag in image.tags}


def restore_tags(engine: Engine, before: dict[str, str], suspects: set[str]) -> list[str]:
    """Put back every tag that now names one of `suspects` (the images the bundle brought) but did not before:
    back on the image it named, or removed if it is new. Returns the tags changed.

    Only those: a load or our own tagging can only point a tag at the bundle's images. Any other change in the
    engine meanwhile (another user's build, tag or removal) is theirs, and is left alone. Tags go back first:
    removing a new tag first could take an image's last name, and the engine the image with it, before its old
    tag is back on it.
    """
    moved = [tag for tag, image_id in tag_state(engine).items()
             if image_id in suspects and before.get(tag) != image_id]
    for tag in moved:
        if tag in before:
            repository, _, name = tag.rpartition(":")
            try:
                engine.tag(before[tag], repository, name)
            except (EngineRefused, ImageMissing):  # its old image removed meanwhile: reported, not fatal
                pass
    for tag in moved:
        if tag not in before:
            try:
                engine.untag(tag)
            except (EngineRefused, ImageMissing):  # in use by a container: the tag stays, and is reported
                pass
    return moved


class CheckStatus(StepStatus):
    """What unbundling found for one image."""

    VERIFIED = "verified", "green"  # its ID and labels are the manifest's, and it passed its smoke test
    NOT_LOADED = "not in the archive", "bold red"
    MISMATCH = "does not match the manifest", "bold red"
    SMOKE_FAILED = "smoke test failed", "bold red"

    @property
    def failed(self) -> bool:
        return self is not CheckStatus.VERIFIED


@dataclass(frozen=True, kw_only=True)
class ImageCheck(StepResult):
    """Unbundling's result for one image; its duration is its smoke test's (the checks before it take no time)."""

    JSON_KEYS = ("name", "image_id", "status", "detail", "smoke_s=duration_s")

    image_id: str
    status: CheckStatus = CheckStatus.VERIFIED


def check_loaded(engine: Engine, manifest: BundleManifest) -> list[ImageCheck]:
    """Every manifest image is in the engine under its ID, with the labels the manifest records."""
    ids = {image.name: image.image_id for image in manifest.images}
    checks = []
    for image in manifest.images:
        found = engine.inspect(image.image_id)
        if found is None:
            checks.append(ImageCheck(name=image.name, image_id=image.image_id, status=CheckStatus.NOT_LOADED,
                                     detail="image ID not loaded"))
            continue
        labels = found.labels
        expected = {LABEL_INPUTS: image.input_hash, LABEL_PARENT: image.parent_id, LABEL_NAME: image.name}
        wrong = [key for key, value in expected.items() if labels.get(key) != value]
        if found.id != image.image_id:
            detail = f"the engine has {found.id} for {image.image_id}"
        elif wrong:
            detail = f"label {wrong[0]} is {labels.get(wrong[0])!r}, the manifest says {expected[wrong[0]]!r}"
        elif image.parent and ids.get(image.parent) not in (None, image.parent_id):
            detail = f"built FROM {image.parent_id[:19]}, but the bundle's {image.parent} is {ids[image.parent][:19]}"
        else:
            detail = ""
        checks.append(ImageCheck(name=image.name, image_id=image.image_id,
                                 status=CheckStatus.MISMATCH if detail else CheckStatus.VERIFIED, detail=detail))
    return checks


def smoke_all(checks: list[ImageCheck], smoke_test, progress: Progress) -> list[ImageCheck]:
    """Smoke-test every image that matched; the result per image, in order."""
    done = []
    for check in checks:
        if check.failed:
            done.append(check)
            continue
        progress.say(f"{check.name}: smoke test")
        try:
            result = smoke_test(check.image_id)
            done.append(replace(check, duration_s=round(result.seconds, 1)))
        except StepFailed as exc:
            done.append(replace(check, status=CheckStatus.SMOKE_FAILED, detail=exc.message))
        except Exception as exc:  # the engine went away
            done.append(replace(check, status=CheckStatus.SMOKE_FAILED, detail=describe(exc)))
    return done


def remove_new(engine: Engine, manifest: BundleManifest, existed: set[str]) -> None:
    """Images this unbundle added and nobody tagged: removed, children first."""
    for image in reversed(manifest.images):
        if image.image_id not in existed:
            _remove_if_untagged(engine, image.image_id)


def _remove_if_untagged(engine: Engine, image_id: str) -> None:
    try:
        found = engine.inspect(image_id)
        if found is not None and not found.tags:
            engine.remove(image_id)
    except Exception:  # gone meanwhile, or in use: leave it
        pass


def unbundle(settings: Settings, path: Path, *, push_to: str | None = None, username: str | None = None,
             password_file: str | None = None, progress: Progress, smoke_test=None, allow_unsigned: bool = False,
             passphrase_file: str | None = None) -> PushRun | None:
    """`inv unbundle`: check, load, verify and smoke-test every image, then tag them all; optionally push
    (the mirror push's run is returned for the command layer to show; None without --push).

    Whatever fails before the images are tagged, every tag in the engine is left as it was.
    """
    # One open file from the first check to the load: what is checked is what is loaded (OpenBundle).
    with open_bundle(path) as bundle:
        manifest = bundle.manifest
        check_targets(manifest, settings)
        require_trusted(settings, bundle, allow_unsigned, progress)
        credentials = _push_setup(settings, push_to, username, password_file) if push_to is not None else None
        # Opened before anything is loaded: a wrong passphrase stops here, not after the smoke tests.
        signer = trust_sign.signer_from(settings, passphrase_file) if push_to is not None else None
        engine = DockerEngine()
        before = tag_state(engine)
        try:
            _unbundle(settings, engine, bundle, progress, smoke_test)
        except BaseException:
            try:
                restore_tags(engine, before, {image.image_id for image in manifest.images})
            except Exception as exc:  # the engine went away: say so, but keep the failure that got us here
                progress.fail(f"could not check the engine's tags after the failure: {exc}")
            raise
    if push_to is None:
        return None
    return _push_mirror(settings, engine, manifest, push_to, credentials, progress,
                        proofs=trust_bundle.bundle_proofs(bundle.trust_bytes, trust_check.trusted_keys(settings)),
                        signer=signer)


def _unbundle(settings: Settings, engine: Engine, bundle: OpenBundle, progress: Progress, smoke_test) -> None:
    started = time.monotonic()
    path, manifest = bundle.path, bundle.manifest
    progress.say(f"Bundle {path.name}: {len(manifest.images)} image(s), written {manifest.created or '?'}.")
    check_archive(bundle, progress)
    smoke_test = smoke_test or engine.smoke_test
    existed = engine.image_ids()  # what load adds is what a failure removes again
    before = tag_state(engine)
    listed = {image.image_id for image in manifest.images}
    try:
        loaded = load_images(engine, bundle, progress)
    except BaseException:
        restore_tags(engine, before, listed | (engine.image_ids() - existed))
        remove_new(engine, manifest, existed)
        raise
    # None, as the archive's names were removed; an engine may add its own.
    moved = restore_tags(engine, before, listed | set(loaded))
    if moved:
        remove_new(engine, manifest, existed)
        raise BundleRefused(f"loading {path.name} tagged {', '.join(sorted(moved)[:3])}: its archive names images; "
                            "every tag was put back and nothing was tagged", "make the bundle again with `inv bundle`")
    _remove_unlisted(engine, manifest, loaded, existed)
    checks = smoke_all(check_loaded(engine, manifest), smoke_test, progress)
    write_json(settings.output_path / "reports" / "unbundle-latest.json", checks, {"bundle": str(path)})
    bad = [check for check in checks if check.failed]
    if bad:
        remove_new(engine, manifest, existed)
        for check in bad:
            progress.fail(f"{check.name}: {check.status}: {check.detail}")
        raise FactoryError(f"{len(bad)} of {len(checks)} image(s) in {path.name} failed their checks "
                           f"({', '.join(check.name for check in bad)}); nothing was tagged",
                           "the images are not what the bundle's manifest says; make the bundle again")
    for image in manifest.images:
        move_tags(engine, image.image_id, image.repository, list(image.tags))
        progress.say(f"  {image.repository}:{image.tags[0]}  {image.image_id[:19]}  verified, tagged "
                      f"{', '.join(image.tags)}")
    progress.say(f"Unbundled {len(manifest.images)} image(s), every one checked and smoke-tested "
                  f"({time.monotonic() - started:.1f}s).")


def _remove_unlisted(engine: Engine, manifest: BundleManifest, loaded: list[str], existed: set[str]) -> None:
    """An image in the archive that the manifest does not list is never tagged, so it would only take space."""
    listed = {image.image_id for image in manifest.images}
    for image_id in loaded:
        if image_id not in listed and image_id not in existed:
            _remove_if_untagged(engine, image_id)


ATTESTATION_ONLY = "attestation only (the bundle has no signatures)"


def _prove(pusher, engine: Engine, image: BundledImage, result: PushResult, proof, signer) -> PushResult:
    """The bundle's proofs copied next to the mirror's digest, and a signature of this machine's key if it has one.

    A failure fails the image's push, as in `inv push`: an unsigned image on a mirror is refused downstream.
    """
    client = pusher.client
    signed = dict(result.signed)
    try:
        if proof is not None:
            copied = trust_bundle.copy_proof(client, result.repository, result.digest, proof)
            signed[result.digest] = (ATTESTATION_ONLY if copied.signature == "none in the bundle"
                                     else "copied from the bundle" if "copied" in (copied.signature,
                                                                                  copied.attestation)
                                     else "present")
            pusher.say(f"{result.repository}@{result.digest}: the bundle's signature {copied.signature}, "
                        f"attestation {copied.attestation}")
        if signer is not None:
            # The builder's record when the bundle has one (its smoke test, SBOM, source); else this machine's.
            record = proof.record if proof is not None else trust_sign.record_of(
                image.name, str(DEFAULT_PLATFORM), image.image_id,
                engine.inspect(image.image_id).labels, trust_sign.sbom_digest(engine, image.image_id))
            here = trust_sign.sign(client, signer, result.repository, result.digest, record)
            signed[result.digest] = "signed" if "signed" in (here.signature, here.attestation) \
                else signed.get(result.digest, "present")
            pusher.say(f"{result.repository}@{result.digest}: signature {here.signature}, "
                        f"attestation {here.attestation}")
    except FactoryError as exc:
        detail = pusher.redact(f"signing: {exc.message}")
        pusher.fail(f"{result.repository}: signing failed {detail}")
        return replace(result, signed=signed, status=FAILED, detail=detail)
    return replace(result, signed=signed)


def _push_setup(settings: Settings, registry: str, username: str | None, password_file: str | None):
    """Credentials for the mirror, read before anything is loaded (a bad password file is exit 2 up front)."""
    # FACTORY_REGISTRY_* are for the factory's own registry: a mirror named here gets the flags' credentials.
    return read_credentials(registry.strip(), username=username, password_file=password_file, home=settings.registry)


def _push_mirror(settings: Settings, engine: Engine, manifest: BundleManifest, registry: str, credentials, progress: Progress, *,
                 proofs: dict | None = None, signer=None) -> PushRun:
    """Every image to the mirror with the same tags (and its cache tag), through push.py's pusher; then each
    pushed digest gets the bundle's proofs of its image and, with a signing key, a signature made here."""
    target = registry.strip()
    pusher = connect(engine, target, credentials, progress)
    proofs = proofs or {}

    def where(image: BundledImage) -> tuple[str, str, list[str]]:
        tags = list(image.tags) + ([cache_tag(image.input_hash)] if is_sha256(image.input_hash) else [])
        return f"{image.repository}:{image.tags[0]}", repository_on(target, image.repository), tags

    def push_one(image: BundledImage) -> PushResult:
        ref, repository, tags = where(image)
        result = pusher.push_id(image.name, ref, image.image_id, repository, tags)
        if result.status in (PUSHED, PRESENT) and result.digest:
            result = _prove(pusher, engine, image, result, proofs.get(image.image_id), signer)
        return result

    def not_pushed(image: BundledImage, why: str) -> PushResult:
        ref, repository, tags = where(image)
        return PushResult(name=image.name, image=ref, repository=repository, status=NOT_PUSHED, tags=tags,
                          image_id=image.image_id, detail=why,
                          tag_results=[TagResult(name=tag, ref=f"{repository}:{tag}", status=NOT_PUSHED)
                                       for tag in tags])

    results = push_in_turn(manifest.images, push_one, not_pushed)
    unproven = [r.name for r in results if r.status in (PUSHED, PRESENT)
                and set(r.signed.values()) <= {ATTESTATION_ONLY}]
    if unproven:
        progress.warn(f"warning: {', '.join(unproven)} on {target} carry no signature (the bundle has none and "
                      "factory.signing_key is not set): `inv verify` and --cache-from with trusted_keys will refuse "
                      "them")
    report = write_json(settings.output_path / "reports" / "push-latest.json", results, {"registry": target,
                                                                                        "from_bundle": True})
    bad = [r for r in results if r.status in (FAILED, NOT_PUSHED)]
    failure = FactoryError(f"{len(bad)} of {len(results)} image(s) not pushed to {target}: "
                           f"{bad[0].name}: {bad[0].detail}",
                           f"the images are tagged here; details in {report}") if bad else None
    return PushRun(results, f"Pushed to the mirror {target}", report, failure)
