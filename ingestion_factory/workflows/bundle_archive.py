"""The bundle as an archive: writing it, and reading it so that what is checked is what is loaded.

The bundle is read through one open file from the first check to the load (a file renamed over it
meanwhile is never read), images.tar is hashed again as it streams into the engine (a file written to
meanwhile is refused), and in both archives every member is checked by MemberRules before it is read or
passed on (no links, devices, absolute, `..` or repeated names), so no reader takes one member for
another. The archive's own names (`RepoTags` in its manifest.json, its `repositories` and index.json
names) are removed while it streams into the engine (UntaggedArchive), so loading it tags nothing.
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from ..documents import DocumentError, load_json
from ..engine.docker_engine import Engine, describe
from ..engine.streams import stream_error
from ..errors import ConfigError, FactoryError
from ..model.bundle_format import (
    IMAGES_MEMBER,
    MANIFEST_MEMBER,
    MAX_MANIFEST_BYTES,
    TRUST_MEMBER,
    BundledImage,
    BundleManifest,
    BundleRefused,
)
from ..progress import Progress

CHUNK = 1024 * 1024
LOADED_ID = re.compile(r"Loaded image ID: (sha256:[0-9a-f]{64})")


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
            if sign is not None:  # signing_key set: trust.json, over bundle.json's exact bytes (trust_bundle.py)
                signed = sign(text)
                info = tarfile.TarInfo(TRUST_MEMBER)
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
                if name in (MANIFEST_MEMBER, TRUST_MEMBER):
                    # A byte over the bound at most: load_json then says it is too large.
                    small[name] = tar.extractfile(member).read(MAX_MANIFEST_BYTES + 1)
                elif name == IMAGES_MEMBER:
                    images = member
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"{path} cannot be read as a bundle ({type(exc).__name__}: {exc})") from None
    if MANIFEST_MEMBER not in small:
        raise BundleRefused(f"{path} is not a bundle: it does not start with {MANIFEST_MEMBER}")
    return OpenBundle(path, file, small[MANIFEST_MEMBER], BundleManifest.from_json(small[MANIFEST_MEMBER]),
                      small.get(TRUST_MEMBER), images.offset_data if images else None,
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
