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
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterable, Iterator

from rich.console import Console
from rich.markup import escape

from ..documents import DocumentError, load_json
from ..engine import verify
from ..engine.daemon import DockerImageStore, client, plan_for
from ..engine.registry import read_credentials
from ..engine.verify import move_tags
from ..engine.streams import stream_error
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
from ..settings import Settings
from ..status import Status
from . import trust
from .push import FAILED, NOT_PUSHED, PRESENT, PUSHED, PushResult, TagResult, connect, push_in_turn, push_table

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
    def from_json(cls, text: str) -> "BundleManifest":
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


# --- progress ------------------------------------------------------------------------------------


class ByteProgress:
    """Bytes done (of a total, when known): a live bar on a terminal, a line every 25 % / 256 MB elsewhere."""

    def __init__(self, console: Console, what: str, total: int | None = None):
        self.console, self.what, self.total = console, what, total
        self.done = 0
        self.next_line = self._step()
        self.bar = None

    def _step(self) -> int:
        return max(self.total // 4, CHUNK) if self.total else 256 * 1024 * 1024

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), console=self.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.what, total=self.total)
        return self

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar:
            self.bar.update(self.task, completed=self.done)
        elif self.done >= self.next_line:
            self.next_line += self._step()
            of = f" of {human_size(self.total)}" if self.total else ""
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {self.what}: {human_size(self.done)}{of}",
                               markup=False, highlight=False)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)


# --- writing -------------------------------------------------------------------------------------


def save_stream(api, image_ids: list[str]) -> Iterator[bytes]:
    """`docker save` of several images in one archive, through the SDK's connection (DOCKER_HOST included).

    The SDK's get_image() takes one name; the engine's /images/get takes many, and stores each layer once.
    """
    response = api.api._get(api.api._url("/images/get"), params={"names": image_ids}, stream=True)
    return api.api._stream_raw_result(response, CHUNK, False)


def write_bundle(api, images: list[BundledImage], output: Path, console: Console,
                 chunks: Iterable[bytes] | None = None, sign=None) -> BundleManifest:
    """Save the images, then write bundle.json + images.tar to a temp file beside `output` and rename it.

    The engine's archive goes to a scratch file first (its size and checksum must precede it in the
    tar); a failure at any point leaves `output` as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=output.parent) as scratch:
        saved = Path(scratch) / IMAGES_MEMBER
        digest = hashlib.sha256()
        stream = chunks if chunks is not None else save_stream(api, [image.image_id for image in images])
        with ByteProgress(console, f"saving {len(images)} image(s)") as progress, saved.open("wb") as sink:
            for chunk in stream:
                sink.write(chunk)
                digest.update(chunk)
                progress.advance(len(chunk))
        manifest = BundleManifest(images=tuple(images), archive_size=saved.stat().st_size,
                                  archive_sha256="sha256:" + digest.hexdigest(),
                                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        partial = Path(scratch) / "bundle.partial"
        with ByteProgress(console, f"writing {output.name}", manifest.archive_size) as progress, \
                partial.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            text = manifest.to_json().encode()
            info = tarfile.TarInfo(MANIFEST_MEMBER)
            info.size, info.mtime, info.mode = len(text), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(text))
            info = tarfile.TarInfo(IMAGES_MEMBER)
            info.size, info.mtime, info.mode = manifest.archive_size, int(time.time()), 0o644
            with saved.open("rb") as source:
                tar.addfile(info, _Counting(source, progress.advance))
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


def bundle(settings: Settings, names: list[str] | None, output: Path, *, console: Console, engine=None,
           passphrase_file: str | None = None, framework: str | None = None) -> int:
    """`inv bundle`: the named connectors (default: every available one, of `framework` only when `--version`
    names one) and the images they are built FROM.

    `engine`: an (API client, image store) pair instead of the local engine (tests pass fakes)."""
    started = time.monotonic()
    catalog = catalog_mod.discover(settings)
    if not names and catalog.broken:
        raise ConfigError(f"cannot bundle everything: {', '.join(sorted(catalog.broken))} cannot be built",
                          "fix those directories, or name the connectors to bundle with -c")
    chosen = [name for name in catalog.resolve(names) if names or framework in (None, catalog[name].framework.name)]
    plan, api, _ = plan_for(settings, catalog, chosen, engine=engine)
    require_verified(plan, "bundle")
    signer = trust.signer_from(settings, passphrase_file)
    images = [bundled_image(item, item.ref.rpartition(":")[0]) for item in plan]
    console.print(f"Bundling {len(images)} image(s) into {output}{', signed' if signer else ''}.")
    manifest = write_bundle(api, images, output, console, sign=_bundle_signer(signer, api, plan, images))
    console.print(f"Wrote {output}: {len(images)} image(s), {human_size(output.stat().st_size)}, images "
                  f"{manifest.archive_sha256[:19]}... ({time.monotonic() - started:.1f}s).")
    for image in images:
        console.print(f"  {image.repository}  {image.image_id[:19]}  {', '.join(image.tags)}", markup=False)
    return 0


def _bundle_signer(signer, api, plan, images: list[BundledImage]):
    if signer is None:
        return None
    attested = [(image.repository, item.current.id, trust.record_for(item, trust.sbom_digest(api, item.current.id)))
                for item, image in zip(plan, images)]
    return lambda manifest_bytes: trust.sign_bundle(signer, manifest_bytes, attested)


def read_signed(path: Path) -> tuple[bytes, bytes | None]:
    """bundle.json's exact bytes, and trust.json's (None: the bundle is not signed)."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            manifest_bytes = tar.extractfile(tar.next()).read()
            member = next((m for m in tar if m.name == trust.TRUST_MEMBER and m.isfile()), None)
            signed = tar.extractfile(member).read() if member and member.size <= MAX_MANIFEST_BYTES else None
    except (tarfile.TarError, OSError, EOFError, AttributeError) as exc:
        raise BundleRefused(f"{path} cannot be read as a bundle ({type(exc).__name__}: {exc})") from None
    return manifest_bytes, signed


def require_trusted(settings: Settings, path: Path, manifest: BundleManifest, allow_unsigned: bool,
                    console: Console) -> None:
    """With trusted_keys: a bundle signed by one of them, every image attested, or --allow-unsigned (loudly)."""
    keys = trust.trusted_keys(settings)
    if not keys:
        return
    manifest_bytes, signed = read_signed(path)
    why = trust.check_bundle(signed, manifest_bytes, [image.image_id for image in manifest.images], keys)
    if why is None:
        console.print(f"{path.name}: signed by a trusted key; every image attested.")
    elif allow_unsigned:
        console.print(f"[bold red]WARNING: {escape(path.name)} is not trusted ({escape(why)}); accepted because "
                      f"of --allow-unsigned[/]")
    else:
        raise BundleRefused(f"refusing {path.name}: {why}",
                            "get a bundle signed by a key in factory.trusted_keys, or pass --allow-unsigned")


# --- reading -------------------------------------------------------------------------------------


def read_manifest(path: Path) -> BundleManifest:
    """bundle.json of a bundle; BundleRefused when the file is not one."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST_MEMBER or not member.isfile():
                raise BundleRefused(f"{path} is not a bundle: it does not start with {MANIFEST_MEMBER}")
            if member.size > MAX_MANIFEST_BYTES:
                raise BundleRefused(f"{path}: {MANIFEST_MEMBER} is {member.size} bytes, more than a manifest is")
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"{path} cannot be read as a bundle ({type(exc).__name__}: {exc})") from None
    return BundleManifest.from_json(text)


def images_archive(tar: tarfile.TarFile, path: Path, manifest: BundleManifest) -> IO[bytes]:
    member = tar.next()  # right after bundle.json
    while member is not None and member.name != IMAGES_MEMBER:
        member = tar.next()
    if member is None:
        raise BundleRefused(f"{path} has no {IMAGES_MEMBER}: truncated, or not a bundle")
    if member.size != manifest.archive_size:
        raise BundleRefused(f"{path}: {IMAGES_MEMBER} is {member.size} bytes, the manifest says "
                            f"{manifest.archive_size}: altered")
    return tar.extractfile(member)


def check_archive(path: Path, manifest: BundleManifest, console: Console) -> None:
    """The image archive's size, sha256 and names against the manifest, before anything reaches the engine.

    `inv bundle` saves by image ID, so its archive names no image: one that does (RepoTags in its
    manifest.json, a `repositories` file) was made to tag something on load, and is refused.
    """
    digest = hashlib.sha256()
    size = 0

    def count(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)
        progress.advance(len(chunk))

    try:
        with tarfile.open(path, mode="r:") as tar, \
                ByteProgress(console, f"checking {path.name}", manifest.archive_size) as progress:
            source = _Tee(images_archive(tar, path, manifest), count)
            names, problem = archive_names(source)
            if source.error is not None:
                raise source.error
            while source.read(CHUNK):
                pass
    except BundleRefused:
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"{path} is truncated or damaged ({type(exc).__name__}: {exc}); nothing was loaded",
                            "copy the bundle again and compare its size with the original") from None
    if size != manifest.archive_size:
        raise BundleRefused(f"{path} is truncated: {size} of {manifest.archive_size} bytes of {IMAGES_MEMBER}; "
                            "nothing was loaded", "copy the bundle again")
    if "sha256:" + digest.hexdigest() != manifest.archive_sha256:
        raise BundleRefused(f"{path} was altered: the checksum of {IMAGES_MEMBER} is not the manifest's; "
                            "nothing was loaded", "use the bundle as it was written")
    if problem:
        raise BundleRefused(f"{path}: {IMAGES_MEMBER} is not an image archive ({problem}); nothing was loaded")
    if names:
        raise BundleRefused(f"{path}: its {IMAGES_MEMBER} names images ({', '.join(sorted(names)[:3])}), which "
                            "loading would tag; `inv bundle` saves images by ID, so it did not make this archive; "
                            "nothing was loaded", "make the bundle again with `inv bundle`")


class _Tee:
    """A file whose reads are also handed to `on_read`; remembers a failure of the file itself."""

    def __init__(self, source: IO[bytes], on_read):
        self.source, self.on_read = source, on_read
        self.error: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self.source.read(size)
        except Exception as exc:  # the bundle's own tar is damaged: not the image archive's fault
            self.error = exc
            raise
        self.on_read(chunk)
        return chunk


def archive_names(source) -> tuple[list[str], str]:
    """The image names a `docker save` archive would apply on load, read as it streams; and a problem, if any."""
    names: list[str] = []
    try:
        with tarfile.open(fileobj=source, mode="r|") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if not member.isfile() or name not in ("manifest.json", "repositories"):
                    continue
                if member.size > MAX_MANIFEST_BYTES:
                    return names, f"its {name} is {member.size} bytes"
                document = load_json(archive.extractfile(member).read(), what=f"its {name}", limit=MAX_MANIFEST_BYTES)
                if name == "manifest.json":
                    names += [tag for entry in document for tag in entry.get("RepoTags") or []]
                else:
                    names += [f"{repository}:{tag}" for repository, tags in document.items() for tag in tags]
    except DocumentError as exc:
        return names, str(exc)
    except (tarfile.TarError, EOFError, ValueError, TypeError, AttributeError) as exc:
        if getattr(source, "error", None) is not None:
            return names, ""
        return names, f"{type(exc).__name__}: {exc}"
    return names, ""


def load_images(api, path: Path, manifest: BundleManifest, console: Console) -> list[str]:
    """Stream images.tar into the engine (no tags: it was saved by ID); returns the IDs the engine reported."""
    loaded: list[str] = []
    with tarfile.open(path, mode="r:") as tar, \
            ByteProgress(console, "loading into the engine", manifest.archive_size) as progress:
        source = _Counting(images_archive(tar, path, manifest), progress.advance)
        archive = UntaggedArchive(source)
        try:
            for event in api.api.load_image(iter(archive)):
                if not isinstance(event, dict):
                    continue
                if failure := stream_error(event):
                    archive.raise_failure(path)
                    raise FactoryError(f"the engine refused {path}: {failure}")
                # One event may report several images, one line each.
                loaded += LOADED_ID.findall(str(event.get("stream") or ""))
        except FactoryError:
            raise
        except Exception as exc:  # the SDK's APIError, a dropped connection
            archive.raise_failure(path)
            raise FactoryError(f"loading {path} failed: {type(exc).__name__}: {exc}") from None
        archive.raise_failure(path)
    return loaded


# The members of a `docker save` archive that name images: docker load applies these names itself.
_NAMING_MEMBERS = frozenset({"repositories"})
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class UntaggedArchive:
    """A `docker save` archive streamed on with every name in it removed, so loading it tags nothing.

    The engine applies the `RepoTags` of the archive's manifest.json (and the names in `repositories`
    and index.json) as it loads, before any check of ours: a forged archive naming an existing local
    tag would move it. The tar is rewritten member by member in a thread, through a pipe, so a
    bundle of many GB needs neither memory nor scratch space for it.
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
            with os.fdopen(write_fd, "wb") as sink, tarfile.open(fileobj=self.source, mode="r|") as archive, \
                    tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:
                for member in archive:
                    name = member.name.removeprefix("./")
                    if name in _NAMING_MEMBERS:
                        continue
                    if not member.isfile():
                        out.addfile(member)
                    elif name in ("manifest.json", "index.json"):
                        if member.size > MAX_MANIFEST_BYTES:
                            raise ValueError(f"its {name} is {member.size} bytes")
                        text = _without_names(name, archive.extractfile(member).read())
                        member.size = len(text)
                        out.addfile(member, io.BytesIO(text))
                    else:
                        out.addfile(member, archive.extractfile(member))
        except BrokenPipeError:  # the engine stopped reading: its own error says why
            pass
        except DocumentError as exc:
            self.failure = f"{IMAGES_MEMBER} is not an image archive ({exc})"
        except (tarfile.TarError, OSError, EOFError, ValueError, TypeError, AttributeError) as exc:
            self.failure = f"{IMAGES_MEMBER} is not an image archive ({type(exc).__name__}: {exc})"


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


def tag_state(api) -> dict[str, str]:
    """Every tag in the engine and the image ID it names."""
    return {tag: image["Id"] for image in api.api.images(all=True)
            for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"}


def restore_tags(api, before: dict[str, str]) -> list[str]:
    """Put every tag back on the image it named in `before`, remove tags that did not exist; returns the changed."""
    changed = []
    now = tag_state(api)
    for tag, image_id in now.items():
        if before.get(tag) == image_id:
            continue
        changed.append(tag)
        if tag in before:
            repository, _, name = tag.rpartition(":")
            api.api.tag(before[tag], repository, name, force=True)
        else:
            try:
                api.api.remove_image(tag, noprune=True)
            except Exception:  # in use by a container: the tag stays, and is reported
                pass
    for tag, image_id in before.items():
        if tag not in now:
            changed.append(tag)
            repository, _, name = tag.rpartition(":")
            api.api.tag(image_id, repository, name, force=True)
    return changed


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


def check_loaded(api, manifest: BundleManifest) -> list[ImageCheck]:
    """Every manifest image is in the engine under its ID, with the labels the manifest records."""
    from docker.errors import NotFound

    ids = {image.name: image.image_id for image in manifest.images}
    checks = []
    for image in manifest.images:
        try:
            attrs = api.api.inspect_image(image.image_id)
        except NotFound:
            checks.append(ImageCheck(image.name, image.image_id, CheckStatus.NOT_LOADED, "image ID not loaded"))
            continue
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        expected = {LABEL_INPUTS: image.input_hash, LABEL_PARENT: image.parent_id, LABEL_NAME: image.name}
        wrong = [key for key, value in expected.items() if labels.get(key) != value]
        if attrs.get("Id") != image.image_id:
            detail = f"the engine has {attrs.get('Id')} for {image.image_id}"
        elif wrong:
            detail = f"label {wrong[0]} is {labels.get(wrong[0])!r}, the manifest says {expected[wrong[0]]!r}"
        elif image.parent and ids.get(image.parent) not in (None, image.parent_id):
            detail = f"built FROM {image.parent_id[:19]}, but the bundle's {image.parent} is {ids[image.parent][:19]}"
        else:
            detail = ""
        checks.append(ImageCheck(image.name, image.image_id, CheckStatus.MISMATCH if detail else CheckStatus.VERIFIED,
                                 detail))
    return checks


def smoke_all(checks: list[ImageCheck], smoke_test, console: Console) -> list[ImageCheck]:
    """Smoke-test every image that matched; the result per image, in order."""
    done = []
    for check in checks:
        if check.failed:
            done.append(check)
            continue
        console.print(f"[{time.strftime('%H:%M:%S')}] {check.name}: smoke test", markup=False)
        try:
            result = smoke_test(check.image_id)
            done.append(replace(check, smoke_s=round(result.seconds, 1)))
        except StepFailed as exc:
            done.append(replace(check, status=CheckStatus.SMOKE_FAILED, detail=exc.message))
        except Exception as exc:  # the engine went away
            done.append(replace(check, status=CheckStatus.SMOKE_FAILED, detail=f"{type(exc).__name__}: {exc}"))
    return done


def remove_new(api, manifest: BundleManifest, existed: set[str]) -> None:
    """Images this unbundle added and nobody tagged: removed, children first."""
    for image in reversed(manifest.images):
        if image.image_id in existed:
            continue
        try:
            if not api.api.inspect_image(image.image_id).get("RepoTags"):
                api.api.remove_image(image.image_id)
        except Exception:  # gone already, or in use: leave it
            pass


def unbundle(settings: Settings, path: Path, *, push_to: str | None = None, username: str | None = None,
             password_file: str | None = None, console: Console, smoke_test=None, allow_unsigned: bool = False,
             passphrase_file: str | None = None) -> int:
    """`inv unbundle`: check, load, verify and smoke-test every image, then tag them all; optionally push.

    Whatever fails before the images are tagged, every tag in the engine is left as it was.
    """
    started = time.monotonic()
    if not path.is_file():
        raise ConfigError(f"no bundle at {path}", "give the file `inv bundle -o FILE` wrote")
    manifest = read_manifest(path)
    check_targets(manifest, settings)
    require_trusted(settings, path, manifest, allow_unsigned, console)
    credentials = _push_setup(settings, push_to, username, password_file) if push_to is not None else None
    # Opened before anything is loaded: a wrong passphrase stops here, not after the smoke tests.
    signer = trust.signer_from(settings, passphrase_file) if push_to is not None else None
    api = client()
    before = tag_state(api)
    try:
        _unbundle(settings, api, path, manifest, console, smoke_test)
    except BaseException:
        try:
            restore_tags(api, before)
        except Exception as exc:  # the engine went away: say so, but keep the failure that got us here
            console.print(f"[bold red]could not check the engine's tags after the failure: {escape(str(exc))}[/]")
        raise
    if push_to is not None:
        _push_mirror(settings, api, manifest, push_to, credentials, console,
                     proofs=trust.bundle_proofs(read_signed(path)[1], trust.trusted_keys(settings)), signer=signer)
    return 0


def _unbundle(settings: Settings, api, path: Path, manifest: BundleManifest, console: Console, smoke_test) -> None:
    started = time.monotonic()
    console.print(f"Bundle {path.name}: {len(manifest.images)} image(s), written {manifest.created or '?'}.")
    check_archive(path, manifest, console)
    smoke_test = smoke_test or functools.partial(verify.smoke_test, api)
    existed = set(api.api.images(quiet=True, all=True))  # what load adds is what a failure removes again
    before = tag_state(api)
    try:
        loaded = load_images(api, path, manifest, console)
    except BaseException:
        restore_tags(api, before)
        remove_new(api, manifest, existed)
        raise
    moved = restore_tags(api, before)  # none, as the archive's names were removed; an engine may add its own
    if moved:
        remove_new(api, manifest, existed)
        raise BundleRefused(f"loading {path.name} tagged {', '.join(sorted(moved)[:3])}: its archive names images; "
                            "every tag was put back and nothing was tagged", "make the bundle again with `inv bundle`")
    _remove_unlisted(api, manifest, loaded, existed)
    checks = smoke_all(check_loaded(api, manifest), smoke_test, console)
    write_json(settings.output_path / "reports" / "unbundle-latest.json", checks, {"bundle": str(path)})
    bad = [check for check in checks if check.failed]
    if bad:
        remove_new(api, manifest, existed)
        for check in bad:
            console.print(f"{escape(check.name)}: {check.status.styled(check.detail)}")
        raise FactoryError(f"{len(bad)} of {len(checks)} image(s) in {path.name} failed their checks "
                           f"({', '.join(check.name for check in bad)}); nothing was tagged",
                           "the images are not what the bundle's manifest says; make the bundle again")
    for image in manifest.images:
        move_tags(api, image.image_id, image.repository, list(image.tags))
        console.print(f"  {image.repository}:{image.tags[0]}  {image.image_id[:19]}  verified, tagged "
                      f"{', '.join(image.tags)}", markup=False)
    console.print(f"Unbundled {len(manifest.images)} image(s), every one checked and smoke-tested "
                  f"({time.monotonic() - started:.1f}s).")


def _remove_unlisted(api, manifest: BundleManifest, loaded: list[str], existed: set[str]) -> None:
    """An image in the archive that the manifest does not list is never tagged, so it would only take space."""
    listed = {image.image_id for image in manifest.images}
    for image_id in loaded:
        if image_id not in listed and image_id not in existed:
            try:
                if not api.api.inspect_image(image_id).get("RepoTags"):
                    api.api.remove_image(image_id)
            except Exception:  # in use, or gone already: leave it
                pass


ATTESTATION_ONLY = "attestation only (the bundle has no signatures)"


def _prove(pusher, api, image: BundledImage, result, proof, signer) -> None:
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
                DockerImageStore(api).inspect(image.image_id).labels, trust.sbom_digest(api, image.image_id))
            signed = trust.sign(client, signer, result.repository, result.digest, record)
            result.signed[result.digest] = "signed" if "signed" in (signed.signature, signed.attestation) \
                else result.signed.get(result.digest, "present")
            pusher.say(f"{result.repository}@{result.digest}: signature {signed.signature}, "
                        f"attestation {signed.attestation}")
    except FactoryError as exc:
        result.result, result.reason = FAILED, pusher.redact(f"signing: {exc.message}")
        pusher.say(f"[bold red]{escape(result.repository)}: signing failed[/] {escape(result.reason)}", markup=True)


def _push_setup(settings: Settings, registry: str, username: str | None, password_file: str | None):
    """Credentials for the mirror, read before anything is loaded (a bad password file is exit 2 up front)."""
    # FACTORY_REGISTRY_* are for the factory's own registry: a mirror named here gets the flags' credentials.
    return read_credentials(registry.strip(), username=username, password_file=password_file, home=settings.registry)


def _push_mirror(settings: Settings, api, manifest: BundleManifest, registry: str, credentials, console, *,
                 proofs: dict | None = None, signer=None) -> None:
    """Every image to the mirror with the same tags (and its cache tag), through push.py's pusher; then each
    pushed digest gets the bundle's proofs of its image and, with a signing key, a signature made here."""
    target = registry.strip()
    pusher = connect(api, target, credentials, console)
    proofs = proofs or {}

    def where(image: BundledImage) -> tuple[str, str, list[str]]:
        tags = list(image.tags) + ([cache_tag(image.input_hash)] if _is_sha256(image.input_hash) else [])
        return f"{image.repository}:{image.tags[0]}", repository_on(target, image.repository), tags

    def push_one(image: BundledImage) -> PushResult:
        ref, repository, tags = where(image)
        result = pusher.push_id(image.name, ref, image.image_id, repository, tags)
        if result.result in (PUSHED, PRESENT) and result.digest:
            _prove(pusher, api, image, result, proofs.get(image.image_id), signer)
        return result

    def not_pushed(image: BundledImage, why: str) -> PushResult:
        ref, repository, tags = where(image)
        return PushResult(image.name, ref, repository, NOT_PUSHED, tags=tags, image_id=image.image_id, reason=why,
                          tag_results=[TagResult(tag, f"{repository}:{tag}", NOT_PUSHED) for tag in tags])

    results = push_in_turn(manifest.images, push_one, not_pushed)
    unproven = [r.name for r in results if r.result in (PUSHED, PRESENT)
                and set(r.signed.values()) <= {ATTESTATION_ONLY}]
    if unproven:
        console.print(f"[bold yellow]warning: {escape(', '.join(unproven))} on {escape(target)} carry no signature "
                      "(the bundle has none and factory.signing_key is not set): `inv verify` and --cache-from "
                      "with trusted_keys will refuse them[/]")
    console.print(push_table(results, f"Pushed to the mirror {target}"))
    report = write_json(settings.output_path / "reports" / "push-latest.json", results, {"registry": target,
                                                                                        "from_bundle": True})
    bad = [r for r in results if r.result in (FAILED, NOT_PUSHED)]
    if bad:
        raise FactoryError(f"{len(bad)} of {len(results)} image(s) not pushed to {target}: "
                           f"{bad[0].name}: {bad[0].reason}", f"the images are tagged here; details in {report}")
