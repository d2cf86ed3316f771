"""Air-gapped sites: `inv bundle` writes verified images and a manifest into one archive; `inv unbundle` loads it.

The archive is a plain tar with two members, in this order:

- `bundle.json`: the format, and per image its name, repository, ID, tags, input hash, framework version,
  parent ID, and the lock digest and SBOM path when the image carries them; plus the size and sha256
  of the second member;
- `images.tar`: one `docker save` of every image at once (shared layers stored once), saved by image
  ID so that loading it creates no tag.

Unbundling checks the checksum before anything reaches the engine, loads the images untagged, checks
every image ID and its labels against the manifest, smoke-tests every image, and only then tags them
(and, with --push, pushes them to a mirror). A bundle that fails any check tags nothing, and the
images it loaded are removed again.

With --push, the mirror's images carry proof as `inv push` leaves it: a signed bundle's signature and
attestation of each image (they name its image ID, which the mirror's manifest names as its config) are
copied next to the mirror's digest, no key needed; with `signing_key` set each digest is also signed here,
which is what cosign and admission controllers need (they accept only proofs naming the manifest digest).

The checksum only proves the copy is whole: whoever writes a bundle also writes its bundle.json. So
the names a bundle may tag are checked too (this factory's `namespace/ingestion-connector-<name>`,
Docker tag syntax), the archive's own names (`RepoTags` in its manifest.json, its `repositories`
and index.json names) are removed while it streams into the engine, and every tag in the engine is
recorded first and restored should anything have moved one.

What is checked is what is loaded: the bundle is read through one open file from the first check to
the load (a file renamed over it meanwhile is never read), images.tar is hashed again as it streams
into the engine (a file written to meanwhile is refused), and in both archives every member is
checked by MemberRules before it is read or passed on (no links, devices, absolute, `..` or
repeated names), so no reader takes one member for another.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from ..documents import DocumentError, load_json
from ..engine.daemon import plan_for
from ..engine.docker_engine import DockerEngine, Engine, EngineRefused, ImageMissing, describe
from ..engine.registry import read_credentials
from ..engine.streams import stream_error
from ..engine.verify import move_tags
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model.failures import StepFailed
from ..model.names import cache_tag, repository_on
from ..model.plan import (
    LABEL_FRAMEWORK,
    LABEL_FRAMEWORK_VERSION,
    LABEL_INPUTS,
    LABEL_LOCK,
    LABEL_NAME,
    LABEL_PARENT,
    LABEL_SBOM,
    require_verified,
)
from ..model.results import human_size, write_json
from ..platforms import DEFAULT as DEFAULT_PLATFORM
from ..progress import Progress
from ..settings import Settings
from ..status import Status
from . import trust
from .push import FAILED, NOT_PUSHED, PRESENT, PUSHED, PushResult, PushRun, TagResult, connect, push_in_turn

BUNDLE_FORMAT = "ingestion-factory-bundle/1"
MANIFEST_MEMBER = "bundle.json"
IMAGES_MEMBER = "images.tar"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK = 1024 * 1024
# Docker's grammar: a tag, and one path component of a repository name.
TAG_SYNTAX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NAME_SYNTAX = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
LOADED_ID = re.compile(r"Loaded image ID: (sha256:[0-9a-f]{64})")


class BundleRefused(ConfigError):
    """The archive is truncated, altered or not a bundle: nothing is tagged (exit 2: bad input)."""


@dataclass(frozen=True)
class BundledImage:
    name: str
    repository: str  # [registry/]namespace/ingestion-connector-<name>, as it was built
    image_id: str
    tags: tuple[str, ...]
    input_hash: str
    framework: str
    framework_version: str
    parent: str | None  # catalog key of the image it is built FROM (None: the Python image)
    parent_id: str
    lock_digest: str = ""
    sbom: str = ""

    @property
    def refs(self) -> list[str]:
        return [f"{self.repository}:{tag}" for tag in self.tags]


@dataclass(frozen=True)
class BundleManifest:
    images: tuple[BundledImage, ...]
    archive_size: int
    archive_sha256: str
    created: str = ""
    format: str = BUNDLE_FORMAT

    def to_json(self) -> str:
        document = asdict(self)
        document["images"] = [asdict(image) for image in self.images]
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> BundleManifest:
        """Parse and validate bundle.json; anything unexpected is BundleRefused."""
        try:
            document = load_json(text, what=f"its {MANIFEST_MEMBER}", limit=MAX_MANIFEST_BYTES)
        except DocumentError as exc:  # too large, nested too deep, or not JSON: one line saying which
            raise BundleRefused(str(exc)) from None
        try:
            if document.get("format") != BUNDLE_FORMAT:
                raise BundleRefused(f"not a bundle of this tool: format {document.get('format')!r}, "
                                    f"expected {BUNDLE_FORMAT!r}")
            images = tuple(BundledImage(**{**image, "tags": _tags(image["tags"])}) for image in document["images"])
            manifest = cls(images=images, archive_size=int(document["archive_size"]),
                           archive_sha256=str(document["archive_sha256"]), created=str(document.get("created", "")))
        except BundleRefused:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleRefused(f"its {MANIFEST_MEMBER} is not a valid manifest ({type(exc).__name__}: {exc})") from None
        problems = [image.name for image in images if not _is_sha256(image.image_id) or not image.tags]
        if not images or problems or not _is_sha256(manifest.archive_sha256):
            raise BundleRefused(f"its {MANIFEST_MEMBER} lacks image IDs, tags or the archive checksum"
                                + (f" ({', '.join(problems)})" if problems else ""))
        for image in images:
            if not isinstance(image.name, str) or not NAME_SYNTAX.fullmatch(image.name):
                raise BundleRefused(f"its {MANIFEST_MEMBER} names an image {image.name!r}, which is no connector name")
            if not isinstance(image.repository, str):
                raise BundleRefused(f"its {MANIFEST_MEMBER} gives {image.name} no repository name")
        return manifest


def _tags(value) -> tuple[str, ...]:
    """The manifest's tags: a list of Docker tags (a string here would be read as its characters)."""
    if not isinstance(value, list):
        raise BundleRefused(f"its {MANIFEST_MEMBER} gives tags as {type(value).__name__}, not a list")
    bad = [tag for tag in value if not isinstance(tag, str) or not TAG_SYNTAX.fullmatch(tag)]
    if bad:
        raise BundleRefused(f"its {MANIFEST_MEMBER} has a tag that is no Docker tag: {bad[0]!r}")
    return tuple(value)


def check_targets(manifest: BundleManifest, settings: Settings) -> None:
    """Every image goes to this factory's repository for its name; any other name is refused (exit 2).

    bundle.json is written by whoever wrote the bundle, so its repositories are a request, not a fact:
    unchecked, a bundle could retag any local image or, with --push, write any repository on the mirror.
    """
    for image in manifest.images:
        expected = settings.repository(catalog_mod.IMAGE_PREFIX + image.name)
        if image.repository != expected:
            raise BundleRefused(f"the bundle's {image.name} is for repository {image.repository!r}; this factory "
                                f"tags it only as {expected!r}; nothing was loaded",
                                "if the bundle comes from a factory with another namespace you trust, "
                                "give it with --namespace")


def _is_sha256(value: str) -> bool:
    algorithm, _, hexdigest = str(value).partition(":")
    return algorithm == "sha256" and len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)


def bundled_image(item, repository: str) -> BundledImage:
    """A manifest entry from an up-to-date plan item (its labels are what the build wrote)."""
    labels = item.current.labels
    return BundledImage(
        name=item.name, repository=repository, image_id=item.current.id, tags=tuple(item.tags),
        input_hash=labels.get(LABEL_INPUTS, ""), framework=labels.get(LABEL_FRAMEWORK, item.spec.framework.name),
        framework_version=labels.get(LABEL_FRAMEWORK_VERSION, item.spec.framework.version),
        parent=item.spec.parent, parent_id=labels.get(LABEL_PARENT, ""),
        lock_digest=labels.get(LABEL_LOCK, ""), sbom=labels.get(LABEL_SBOM, ""),
    )


# --- writing -------------------------------------------------------------------------------------


def write_bundle(engine: Engine, images: list[BundledImage], output: Path, progress: Progress,
                 chunks: Iterable[bytes] | None = None, sign=None) -> BundleManifest:
    """Save the images, then write bundle.json + images.tar to a temp file beside `output` and rename it.

    The engine's archive goes to a scratch file first (its size and checksum must precede it in the
    tar); a failure at any point leaves `output` as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=output.parent) as scratch:
        saved = Path(scratch) / IMAGES_MEMBER
        digest = hashlib.sha256()
        stream = chunks if chunks is not None else engine.save([image.image_id for image in images])
        with progress.transfer(f"saving {len(images)} image(s)") as advance, saved.open("wb") as sink:
            for chunk in stream:
                sink.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        manifest = BundleManifest(images=tuple(images), archive_size=saved.stat().st_size,
                                  archive_sha256="sha256:" + digest.hexdigest(),
                                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        partial = Path(scratch) / "bundle.partial"
        with progress.transfer(f"writing {output.name}", manifest.archive_size) as advance, \
                partial.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            text = manifest.to_json().encode()
            info = tarfile.TarInfo(MANIFEST_MEMBER)
            info.size, info.mtime, info.mode = len(text), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(text))
            info = tarfile.TarInfo(IMAGES_MEMBER)
            info.size, info.mtime, info.mode = manifest.archive_size, int(time.time()), 0o644
            with saved.open("rb") as source:
                tar.addfile(info, _Counting(source, advance))
            if sign is not None:  # signing_key set: trust.json, over bundle.json's exact bytes (trust.py)
                signed = sign(text)
                info = tarfile.TarInfo(trust.TRUST_MEMBER)
                info.size, info.mtime, info.mode = len(signed), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(signed))
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)  # same directory, so the rename is atomic
    return manifest


class _Counting:
    """A file that reports how much has been read from it."""

    def __init__(self, source: IO[bytes], on_read):
        self.source, self.on_read = source, on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.on_read(len(chunk))
        return chunk


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
    signer = trust.signer_from(settings, passphrase_file)
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
    attested = [(image.repository, item.current.id, trust.record_for(item, trust.sbom_digest(engine, item.current.id)))
                for item, image in zip(plan, images, strict=True)]
    return lambda manifest_bytes: trust.sign_bundle(signer, manifest_bytes, attested)


def require_trusted(settings: Settings, bundle: OpenBundle, allow_unsigned: bool, progress: Progress) -> None:
    """With trusted_keys: a bundle signed by one of them, every image attested, or --allow-unsigned (loudly)."""
    keys = trust.trusted_keys(settings)
    if not keys:
        return
    name = bundle.path.name
    why = trust.check_bundle(bundle.trust_bytes, bundle.manifest_bytes,
                             [image.image_id for image in bundle.manifest.images], keys)
    if why is None:
        progress.say(f"{name}: signed by a trusted key; every image attested.")
    elif allow_unsigned:
        progress.fail(f"WARNING: {name} is not trusted ({why}); accepted because of --allow-unsigned")
    else:
        raise BundleRefused(f"refusing {name}: {why}",
                            "get a bundle signed by a key in factory.trusted_keys, or pass --allow-unsigned")


# --- reading -------------------------------------------------------------------------------------

# docker save of engines before 25 (the legacy layout) stores a layer once and links each further copy to it,
# `<v1 ID>/layer.tar -> ../<v1 ID>/layer.tar`: the one kind of link an image archive may hold.
LAYER_PATH = re.compile(r"[0-9a-f]{64}/layer\.tar")
_KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
          tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO", tarfile.DIRTYPE: "a directory"}
# Ends an archive refused part way through. The upload is aborted as well (the stream raises), but should a
# client send what it got: the engine loads a tar that just stops after a member, and refuses a broken header.
BROKEN_HEADER = b"\xff" * tarfile.BLOCKSIZE


class MemberRules:
    """The members of one archive, checked as they are read, before anything is done with them.

    Names are normalized (`./a`, `a//b` and `dir/` name what `a`, `a/b` and `dir` do), and refused when
    absolute, going up (`..`) or naming a member again: otherwise a reader could take another member for
    the one checked (`x/../manifest.json` is the engine's manifest.json). Links, devices and FIFOs are
    refused: a `manifest.json` linked to another member is read by the engine, but not by the checks. The
    one exception is a layer linked as docker save links it (LAYER_PATH), to a layer file of the archive.
    """

    def __init__(self, archive: str, *, directories: bool = False, layer_links: bool = False):
        self.archive = archive  # what messages call it: "images.tar", or "" for the bundle itself
        self.directories, self.layer_links = directories, layer_links
        self.seen: dict[str, str] = {}  # normalized name -> the name as written
        self.files: set[str] = set()
        self.links: dict[str, str] = {}  # a layer link -> the layer it names

    def refused(self, name: str, why: str) -> BundleRefused:
        return BundleRefused(f"{self.archive + ' ' if self.archive else ''}member {name!r} {why}")

    def check(self, member: tarfile.TarInfo) -> str:
        """The member's normalized name; BundleRefused, naming it, for a member no archive of ours holds."""
        raw = member.name
        if raw.startswith("/"):
            raise self.refused(raw, "has an absolute name")
        if ".." in raw.split("/"):
            raise self.refused(raw, "has a '..' component")
        name = posixpath.normpath(raw) if raw else "."
        if name == ".":
            if member.isdir() and self.directories:  # `./`: the top directory, which names no member
                return name
            raise self.refused(raw, "has no name")
        target = member.linkname.removeprefix("../")
        if member.issym() and self.layer_links and member.linkname.startswith("../") \
                and LAYER_PATH.fullmatch(name) and LAYER_PATH.fullmatch(target):
            self.links[name] = target
        elif member.isfile():
            self.files.add(name)
        elif not (member.isdir() and self.directories):
            kind = _KINDS.get(member.type, f"of tar type {member.type!r}")
            to = f" (to {member.linkname!r})" if member.issym() or member.islnk() else ""
            allowed = "files and directories" if self.directories else "files"
            raise self.refused(raw, f"is {kind}{to}; only {allowed} are accepted")
        if name in self.seen:
            raise self.refused(raw, f"names the member {self.seen[name]!r} again")
        self.seen[name] = raw
        return name

    def finish(self) -> None:
        """After the last member: every layer link names a layer file of the archive."""
        for link, target in self.links.items():
            if target not in self.files:
                raise self.refused(link, f"links to {target!r}, which is no file of it")


@dataclass(frozen=True)
class OpenBundle:
    """A bundle read through one open file from the first check to the load, so a file put at its path
    meanwhile is never read. bundle.json and trust.json are read once, into memory; images.tar is read
    where it lies in the file, at each pass (`images()`), and hashed again as it is loaded."""

    path: Path
    file: IO[bytes]
    manifest_bytes: bytes  # what trust.json's signature covers
    manifest: BundleManifest
    trust_bytes: bytes | None  # None: not signed
    images_at: int | None  # where images.tar's bytes start in the file (None: it has none)
    images_size: int

    def images(self) -> _Slice:
        """images.tar from its first byte; BundleRefused when there is none or not of the manifest's size."""
        if self.images_at is None:
            raise BundleRefused(f"{self.path} has no {IMAGES_MEMBER}: truncated, or not a bundle")
        if self.images_size != self.manifest.archive_size:
            raise BundleRefused(f"{self.path}: {IMAGES_MEMBER} is {self.images_size} bytes, the manifest says "
                                f"{self.manifest.archive_size}: altered")
        return _Slice(self.file, self.images_at, self.images_size)


@contextmanager
def open_bundle(path: Path) -> Iterator[OpenBundle]:
    """The bundle at `path`, opened once, its members checked and its manifest read; BundleRefused if it is none."""
    try:
        # Non-blocking: a FIFO at `path` is refused below instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"no bundle at {path}", "give the file `inv bundle -o FILE` wrote") from None
    except OSError as exc:
        raise BundleRefused(f"{path} cannot be read as a bundle ({type(exc).__name__}: {exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"no bundle at {path}", "give the file `inv bundle -o FILE` wrote")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as file:
        yield _read_bundle(file, path)


def _read_bundle(file: IO[bytes], path: Path) -> OpenBundle:
    rules = MemberRules("")
    small: dict[str, bytes] = {}
    images = None
    size = os.fstat(file.fileno()).st_size
    try:
        with tarfile.open(fileobj=file, mode="r:") as tar:
            for member in tar:
                try:
                    name = rules.check(member)
                except BundleRefused as exc:
                    raise BundleRefused(f"{path}: {exc.message}; nothing was loaded") from None
                if not small and name != MANIFEST_MEMBER:
                    break
                if member.offset_data + member.size > size:
                    raise BundleRefused(f"{path} is truncated: its {name} ends at byte "
                                        f"{member.offset_data + member.size}, the file has {size}; nothing was loaded",
                                        "copy the bundle again and compare its size with the original")
                if name in (MANIFEST_MEMBER, trust.TRUST_MEMBER):
                    # A byte over the bound at most: load_json then says it is too large.
                    small[name] = tar.extractfile(member).read(MAX_MANIFEST_BYTES + 1)
                elif name == IMAGES_MEMBER:
                    images = member
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"{path} cannot be read as a bundle ({type(exc).__name__}: {exc})") from None
    if MANIFEST_MEMBER not in small:
        raise BundleRefused(f"{path} is not a bundle: it does not start with {MANIFEST_MEMBER}")
    return OpenBundle(path, file, small[MANIFEST_MEMBER], BundleManifest.from_json(small[MANIFEST_MEMBER]),
                      small.get(trust.TRUST_MEMBER), images.offset_data if images else None,
                      images.size if images else 0)


def read_manifest(path: Path) -> BundleManifest:
    """bundle.json of a bundle; BundleRefused when the file is not one."""
    with open_bundle(path) as bundle:
        return bundle.manifest


class _Slice:
    """`size` bytes of an open file from `offset` (one member of the bundle). Every read seeks first, so a
    pass over it does not depend on where an earlier one left the file."""

    def __init__(self, file: IO[bytes], offset: int, size: int):
        self.file, self.offset, self.left = file, offset, size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        if not size:
            return b""
        self.file.seek(self.offset)
        chunk = self.file.read(size)
        self.offset += len(chunk)
        self.left -= len(chunk)
        return chunk


class _Hashing:
    """A file whose bytes are hashed, counted and reported (to `on_read`) as they are read."""

    def __init__(self, source: IO[bytes], on_read):
        self.source, self.on_read = source, on_read
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.digest.update(chunk)
        self.size += len(chunk)
        self.on_read(len(chunk))
        return chunk

    def matches(self, manifest: BundleManifest) -> bool:
        return self.size == manifest.archive_size and "sha256:" + self.digest.hexdigest() == manifest.archive_sha256


def check_archive(bundle: OpenBundle, progress: Progress) -> None:
    """The image archive's size, sha256, members and names against the manifest, before anything reaches the engine.

    `inv bundle` saves by image ID, so its archive names no image: one that does (RepoTags in its
    manifest.json, a `repositories` file) was made to tag something on load, and is refused; so is one
    holding a member MemberRules refuses.
    """
    path, manifest = bundle.path, bundle.manifest
    try:
        with progress.transfer(f"checking {path.name}", manifest.archive_size) as advance:
            source = _Hashing(bundle.images(), advance)
            names, problem = archive_names(source)
            while source.read(CHUNK):
                pass
    except OSError as exc:
        raise BundleRefused(f"{path} is truncated or damaged ({type(exc).__name__}: {exc}); nothing was loaded",
                            "copy the bundle again and compare its size with the original") from None
    if source.size != manifest.archive_size:
        raise BundleRefused(f"{path} is truncated: {source.size} of {manifest.archive_size} bytes of "
                            f"{IMAGES_MEMBER}; nothing was loaded", "copy the bundle again")
    if not source.matches(manifest):
        raise BundleRefused(f"{path} was altered: the checksum of {IMAGES_MEMBER} is not the manifest's; "
                            "nothing was loaded", "use the bundle as it was written")
    if problem:
        raise BundleRefused(f"{path}: {problem}; nothing was loaded")
    if names:
        raise BundleRefused(f"{path}: its {IMAGES_MEMBER} names images ({', '.join(sorted(names)[:3])}), which "
                            "loading would tag; `inv bundle` saves images by ID, so it did not make this archive; "
                            "nothing was loaded", "make the bundle again with `inv bundle`")


def archive_names(source) -> tuple[list[str], str]:
    """The image names a `docker save` archive would apply on load, read as it streams; and why it is refused
    if it is, in a phrase ("images.tar member 'x' is a symbolic link ...")."""
    names: list[str] = []
    rules = MemberRules(IMAGES_MEMBER, directories=True, layer_links=True)
    try:
        with tarfile.open(fileobj=source, mode="r|") as archive:
            for member in archive:
                name = rules.check(member)
                if not member.isfile() or name not in ("manifest.json", "repositories"):
                    continue
                document = load_json(archive.extractfile(member).read(MAX_MANIFEST_BYTES + 1), what=f"its {name}",
                                     limit=MAX_MANIFEST_BYTES)
                if name == "manifest.json":
                    names += [tag for entry in document for tag in entry.get("RepoTags") or []]
                else:
                    names += [f"{repository}:{tag}" for repository, tags in document.items() for tag in tags]
        rules.finish()
    except BundleRefused as exc:
        return names, exc.message
    except DocumentError as exc:
        return names, f"{IMAGES_MEMBER} is not an image archive ({exc})"
    except (tarfile.TarError, EOFError, ValueError, TypeError, AttributeError) as exc:
        return names, f"{IMAGES_MEMBER} is not an image archive ({type(exc).__name__}: {exc})"
    return names, ""


def load_images(engine: Engine, bundle: OpenBundle, progress: Progress) -> list[str]:
    """Stream images.tar into the engine (no tags: it was saved by ID); returns the IDs the engine reported.

    It is read from the bundle's open file again, and hashed on the way: bytes other than those
    check_archive passed (the file was written to meanwhile) are BundleRefused once loaded, and the
    caller removes what they added.
    """
    path, manifest = bundle.path, bundle.manifest
    loaded: list[str] = []
    with progress.transfer("loading into the engine", manifest.archive_size) as advance:
        source = _Hashing(bundle.images(), advance)
        archive = UntaggedArchive(source)
        try:
            for event in engine.load(iter(archive)):
                if not isinstance(event, dict):
                    continue
                if failure := stream_error(event):
                    archive.raise_failure(path)
                    raise FactoryError(f"the engine refused {path}: {failure}")
                # One event may report several images, one line each.
                loaded += LOADED_ID.findall(str(event.get("stream") or ""))
        except FactoryError:
            raise
        except Exception as exc:  # the engine refused, a dropped connection
            archive.raise_failure(path)
            raise FactoryError(f"loading {path} failed: {describe(exc)}") from None
        archive.raise_failure(path)
    if not source.matches(manifest):
        raise BundleRefused(f"{path} changed while it was loaded: the {IMAGES_MEMBER} loaded is not the one checked; "
                            "nothing was tagged", "let nothing write the bundle while `inv unbundle` reads it")
    return loaded


# The members of a `docker save` archive that name images: docker load applies these names itself.
_NAMING_MEMBERS = frozenset({"repositories"})
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class UntaggedArchive:
    """A `docker save` archive streamed on with every name in it removed, so loading it tags nothing.

    The engine applies the `RepoTags` of the archive's manifest.json (and the names in `repositories`
    and index.json) as it loads, before any check of ours: a forged archive naming an existing local
    tag would move it. The tar is rewritten member by member in a thread, through a pipe, so a
    bundle of many GB needs neither memory nor scratch space for it. Each member is checked again
    (MemberRules) and written under its normalized name with a header of our own, so the engine reads
    only what was checked; the source is read to its end, so that a caller hashing it hashes all of it.
    """

    def __init__(self, source: IO[bytes]):
        self.source = source
        self.failure: str = ""

    def __iter__(self) -> Iterator[bytes]:
        read_fd, write_fd = os.pipe()
        writer = threading.Thread(target=self._rewrite, args=(write_fd,), name="untag-archive", daemon=True)
        writer.start()
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                while True:
                    chunk = pipe.read(CHUNK)
                    if not chunk:
                        break
                    yield chunk
        finally:
            writer.join(timeout=60)
        if self.failure:
            raise BundleRefused(self.failure)

    def raise_failure(self, path: Path) -> None:
        if self.failure:
            raise BundleRefused(f"{path}: {self.failure}; nothing was tagged")

    def _rewrite(self, write_fd: int) -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink:
                try:
                    self._copy(sink)
                except BundleRefused as exc:
                    self.failure = exc.message
                except DocumentError as exc:
                    self.failure = f"{IMAGES_MEMBER} is not an image archive ({exc})"
                except BrokenPipeError:
                    raise
                except (tarfile.TarError, OSError, EOFError, ValueError, TypeError, AttributeError) as exc:
                    self.failure = f"{IMAGES_MEMBER} is not an image archive ({type(exc).__name__}: {exc})"
                if self.failure:
                    sink.write(BROKEN_HEADER)
        except BrokenPipeError:  # the engine stopped reading: its own error says why
            pass

    def _copy(self, sink: IO[bytes]) -> None:
        rules = MemberRules(IMAGES_MEMBER, directories=True, layer_links=True)
        with tarfile.open(fileobj=self.source, mode="r|") as archive, \
                tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:
            for member in archive:
                name = rules.check(member)
                if name in _NAMING_MEMBERS or name == ".":
                    continue
                header = _header(member, name)
                if member.isfile() and name in ("manifest.json", "index.json"):
                    text = _without_names(name, archive.extractfile(member).read(MAX_MANIFEST_BYTES + 1))
                    header.size = len(text)
                    out.addfile(header, io.BytesIO(text))
                else:
                    out.addfile(header, archive.extractfile(member) if member.isfile() else None)
            rules.finish()  # before the end of the archive is written: a refusal ends it with BROKEN_HEADER
        while self.source.read(CHUNK):  # the padding after the archive's end
            pass


def _header(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A header of our own for a checked member: its normalized name, type, size, mode and time, and nothing
    else (an extended header of the original could name the member again)."""
    header = tarfile.TarInfo(name)
    header.type = tarfile.REGTYPE if member.isfile() else member.type
    header.size = member.size if member.isfile() else 0
    header.mode, header.mtime = member.mode, int(member.mtime)
    header.linkname = member.linkname if member.issym() else ""
    return header


def _without_names(member: str, text: bytes) -> bytes:
    document = load_json(text, what=f"its {member}", limit=MAX_MANIFEST_BYTES)
    if member == "manifest.json":
        for entry in document:
            entry["RepoTags"] = []
    else:
        for entry in document.get("manifests") or []:
            for key in _NAME_ANNOTATIONS:
                (entry.get("annotations") or {}).pop(key, None)
    return json.dumps(document).encode()


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


class CheckStatus(Status):
    """What unbundling found for one image."""

    VERIFIED = "verified", "green"  # its ID and labels are the manifest's, and it passed its smoke test
    NOT_LOADED = "not in the archive", "bold red"
    MISMATCH = "does not match the manifest", "bold red"
    SMOKE_FAILED = "smoke test failed", "bold red"


@dataclass(frozen=True)
class ImageCheck:
    name: str
    image_id: str
    status: CheckStatus = CheckStatus.VERIFIED
    detail: str = ""
    smoke_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status is not CheckStatus.VERIFIED


def check_loaded(engine: Engine, manifest: BundleManifest) -> list[ImageCheck]:
    """Every manifest image is in the engine under its ID, with the labels the manifest records."""
    ids = {image.name: image.image_id for image in manifest.images}
    checks = []
    for image in manifest.images:
        found = engine.inspect(image.image_id)
        if found is None:
            checks.append(ImageCheck(image.name, image.image_id, CheckStatus.NOT_LOADED, "image ID not loaded"))
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
        checks.append(ImageCheck(image.name, image.image_id, CheckStatus.MISMATCH if detail else CheckStatus.VERIFIED,
                                 detail))
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
            done.append(replace(check, smoke_s=round(result.seconds, 1)))
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
        signer = trust.signer_from(settings, passphrase_file) if push_to is not None else None
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
                        proofs=trust.bundle_proofs(bundle.trust_bytes, trust.trusted_keys(settings)), signer=signer)


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


def _prove(pusher, engine: Engine, image: BundledImage, result, proof, signer) -> None:
    """The bundle's proofs copied next to the mirror's digest, and a signature of this machine's key if it has one.

    A failure fails the image's push, as in `inv push`: an unsigned image on a mirror is refused downstream.
    """
    client = pusher.client
    try:
        if proof is not None:
            copied = trust.copy_proof(client, result.repository, result.digest, proof)
            result.signed[result.digest] = (ATTESTATION_ONLY if copied.signature == "none in the bundle"
                                            else "copied from the bundle" if "copied" in (copied.signature,
                                                                                         copied.attestation)
                                            else "present")
            pusher.say(f"{result.repository}@{result.digest}: the bundle's signature {copied.signature}, "
                        f"attestation {copied.attestation}")
        if signer is not None:
            # The builder's record when the bundle has one (its smoke test, SBOM, source); else this machine's.
            record = proof.record if proof is not None else trust.record_of(
                image.name, str(DEFAULT_PLATFORM), image.image_id,
                engine.inspect(image.image_id).labels, trust.sbom_digest(engine, image.image_id))
            signed = trust.sign(client, signer, result.repository, result.digest, record)
            result.signed[result.digest] = "signed" if "signed" in (signed.signature, signed.attestation) \
                else result.signed.get(result.digest, "present")
            pusher.say(f"{result.repository}@{result.digest}: signature {signed.signature}, "
                        f"attestation {signed.attestation}")
    except FactoryError as exc:
        result.result, result.reason = FAILED, pusher.redact(f"signing: {exc.message}")
        pusher.fail(f"{result.repository}: signing failed {result.reason}")


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
        tags = list(image.tags) + ([cache_tag(image.input_hash)] if _is_sha256(image.input_hash) else [])
        return f"{image.repository}:{image.tags[0]}", repository_on(target, image.repository), tags

    def push_one(image: BundledImage) -> PushResult:
        ref, repository, tags = where(image)
        result = pusher.push_id(image.name, ref, image.image_id, repository, tags)
        if result.result in (PUSHED, PRESENT) and result.digest:
            _prove(pusher, engine, image, result, proofs.get(image.image_id), signer)
        return result

    def not_pushed(image: BundledImage, why: str) -> PushResult:
        ref, repository, tags = where(image)
        return PushResult(image.name, ref, repository, NOT_PUSHED, tags=tags, image_id=image.image_id, reason=why,
                          tag_results=[TagResult(tag, f"{repository}:{tag}", NOT_PUSHED) for tag in tags])

    results = push_in_turn(manifest.images, push_one, not_pushed)
    unproven = [r.name for r in results if r.result in (PUSHED, PRESENT)
                and set(r.signed.values()) <= {ATTESTATION_ONLY}]
    if unproven:
        progress.warn(f"warning: {', '.join(unproven)} on {target} carry no signature (the bundle has none and "
                      "factory.signing_key is not set): `inv verify` and --cache-from with trusted_keys will refuse "
                      "them")
    report = write_json(settings.output_path / "reports" / "push-latest.json", results, {"registry": target,
                                                                                        "from_bundle": True})
    bad = [r for r in results if r.result in (FAILED, NOT_PUSHED)]
    failure = FactoryError(f"{len(bad)} of {len(results)} image(s) not pushed to {target}: "
                           f"{bad[0].name}: {bad[0].reason}",
                           f"the images are tagged here; details in {report}") if bad else None
    return PushRun(results, f"Pushed to the mirror {target}", report, failure)
