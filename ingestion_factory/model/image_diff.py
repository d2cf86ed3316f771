"""Two images compared as `docker save` wrote them, like diffoci: what makes a rebuilt image not bit-for-bit equal.

An image's ID is the sha256 of its config's bytes, and the config names every layer by its diff_id (the
sha256 of the uncompressed layer tar), so two images with one ID are identical. When the IDs differ,
the record says where: the config keys whose values differ (`created`, `history`, one label), and per
layer (by index) whether its diff_id is the same; for a layer that differs, the paths whose type, link
target, content, mode, owner, mtime or extended attributes differ, and the paths only one side has.

The archive is docker-archive: `manifest.json` lists each image's config member and its layer members,
in the legacy layout (`<id>.json`, `<v1 id>/layer.tar`, a layer stored once and symlinked for each further
copy) or the OCI one (`blobs/sha256/<hex>`, a layer possibly gzip-compressed). manifest.json comes last in
the legacy layout, so the archive must be a seekable file (engine.docker_engine.spool_save writes one); its
member index is read once, and each layer is then read once as a stream where it lies, its files hashed in
chunks. Only one layer of each side is summarized in memory at a time, and a layer whose diff_id is the
same on both sides is not read at all.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, Protocol

from ..documents import DocumentError, MiB, check_size, load_json, size_text
from ..errors import FactoryError

MANIFEST_MEMBER = "manifest.json"
MAX_PATHS_SHOWN = 20
CHUNK = 1024 * 1024
ABSENT = "(absent)"
SHORT_VALUE = 72  # characters of a config value shown before it is cut
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# rootfs.diff_ids are the layers, compared one by one below; listing them as a config key says nothing more.
CONFIG_KEYS_SKIPPED = ("rootfs",)

_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char device",
          tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}
XATTR_PREFIX = "SCHILY.xattr."


class ImageArchiveError(FactoryError):
    """The archive is no docker-archive this module reads, or a part of it is over a bound."""


@dataclass(frozen=True)
class ArchiveLimits:
    """What is read into memory from an archive, at most."""

    max_json_bytes: int = 4 * MiB  # manifest.json and each config, read whole (ours are a few KB)
    max_layer_paths: int = 1_000_000  # paths of one layer summarized at once (a Python image has ~30k)


DEFAULT_LIMITS = ArchiveLimits()


# --- what a layer holds ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathEntry:
    """One path of a layer tar, as the comparison sees it."""

    kind: str  # file, dir, symlink, hardlink, char device, block device, fifo
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    mtime: float
    size: int
    sha256: str  # of a file's content; "" for anything else
    linkname: str  # a symlink's target as written; a hard link's target as an absolute path; else ""
    xattrs: tuple[tuple[str, str], ...] = ()  # sorted (name, value): file capabilities, for one


# Each attribute the comparison looks at, in the order a change lists them: the name, and what is compared.
ATTRIBUTES: tuple[tuple[str, Callable[[PathEntry], object]], ...] = (
    ("type", lambda entry: entry.kind),
    ("link", lambda entry: entry.linkname),
    ("content", lambda entry: (entry.size, entry.sha256)),
    ("mode", lambda entry: entry.mode),
    ("owner", lambda entry: (entry.uid, entry.gid)),
    ("mtime", lambda entry: entry.mtime),
    ("xattrs", lambda entry: entry.xattrs),
)


def differing_attributes(before: PathEntry, after: PathEntry) -> tuple[str, ...]:
    """The names of the attributes (ATTRIBUTES) whose values differ between two entries of one path."""
    return tuple(name for name, value in ATTRIBUTES if value(before) != value(after))


# --- the record ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigChange:
    """A config key whose value differs. `at` is where inside the value the first difference is
    (`[3].created` of `history`; "" for a plain value); before/after are that place's values, short."""

    key: str  # `created`, `history`, `config.Labels.<label>`, `config.Env.<variable>`, `config.<Key>`
    at: str
    before: str  # JSON, cut at SHORT_VALUE characters; ABSENT when that side has no such key
    after: str

    def line(self) -> str:
        return f"{self.key}{self.at}: {self.before} -> {self.after}"


@dataclass(frozen=True)
class PathChange:
    """A path of one layer that differs: in one side only (before or after is None), or in `attributes`."""

    path: str  # absolute, as in the image: /usr/lib/python3.11/site-packages/x.py
    before: PathEntry | None
    after: PathEntry | None
    attributes: tuple[str, ...]  # names from ATTRIBUTES; () when the path is in one side only

    @property
    def status(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"

    def line(self) -> str:
        if self.before is None or self.after is None:
            sign, entry = ("+", self.after) if self.before is None else ("-", self.before)
            assert entry is not None
            return f"{sign} {self.path} ({entry.kind}, only {'after' if sign == '+' else 'before'})"
        details = [f"{name} {_attribute_text(name, self.before)} -> {_attribute_text(name, self.after)}"
                   for name in self.attributes]
        return f"~ {self.path}: " + "; ".join(details)


@dataclass(frozen=True)
class LayerDiff:
    """The layers at one index. A side with no layer there has diff_id None (its paths all count as
    only in the other side). `changes` are the first `max_paths` differing paths in path order;
    `total_changes` counts them all."""

    index: int
    before_diff_id: str | None
    after_diff_id: str | None
    changes: tuple[PathChange, ...] = ()
    total_changes: int = 0
    # When the same entries come in another order: the first two paths the sides order differently.
    reordered: tuple[str, str] | None = None

    @property
    def same(self) -> bool:
        return self.before_diff_id == self.after_diff_id

    @property
    def omitted(self) -> int:
        """Differing paths not listed in `changes` (over the cap)."""
        return self.total_changes - len(self.changes)

    def lines(self) -> list[str]:
        if self.same:
            return [f"layer {self.index}: same ({_short_digest(self.before_diff_id)})"]
        if self.before_diff_id is None or self.after_diff_id is None:
            side = "after" if self.before_diff_id is None else "before"
            head = f"layer {self.index}: only {side} ({_short_digest(self.after_diff_id or self.before_diff_id)})"
        else:
            head = (f"layer {self.index}: differs ({_short_digest(self.before_diff_id)} -> "
                    f"{_short_digest(self.after_diff_id)})")
        if not self.total_changes:
            one_side = self.before_diff_id is None or self.after_diff_id is None
            if one_side:
                head += ", an empty layer"
            elif self.reordered:
                head += (", the same entries in another order: {} comes before {} in one and after it in the "
                         "other".format(*self.reordered))
            else:
                head += ", no path differs (the tars do: a header field not compared)"
        else:
            head += f", {self.total_changes} path{'' if self.total_changes == 1 else 's'} differ"
        lines = [head] + [f"    {change.line()}" for change in self.changes]
        if self.omitted:
            lines.append(f"    ... and {self.omitted} more path{'' if self.omitted == 1 else 's'}")
        return lines


@dataclass(frozen=True)
class ImageDiff:
    """Two images compared: identical (one ID), or their config changes and their layers side by side."""

    before_id: str
    after_id: str
    config_changes: tuple[ConfigChange, ...] = ()
    layers: tuple[LayerDiff, ...] = ()

    @property
    def identical(self) -> bool:
        return self.before_id == self.after_id

    @property
    def before_layers(self) -> int:
        return sum(layer.before_diff_id is not None for layer in self.layers)

    @property
    def after_layers(self) -> int:
        return sum(layer.after_diff_id is not None for layer in self.layers)

    @property
    def differing_layers(self) -> tuple[LayerDiff, ...]:
        return tuple(layer for layer in self.layers if not layer.same)

    def lines(self) -> list[str]:
        """A short human diff: the verdict, the config keys, then each layer and its differing paths."""
        if self.identical:
            return [f"identical: {self.before_id}"]
        lines = [f"images differ: {self.before_id} (before) vs {self.after_id} (after)"]
        if self.config_changes:
            lines.append(f"config: {len(self.config_changes)} key{'' if len(self.config_changes) == 1 else 's'} "
                         "differ")
            lines += [f"  {change.line()}" for change in self.config_changes]
        else:
            lines.append("config: the same keys and values")
        count = (f"{self.before_layers}" if self.before_layers == self.after_layers
                 else f"{self.before_layers} before, {self.after_layers} after")
        lines.append(f"layers: {count}, {len(self.differing_layers)} differ")
        for layer in self.layers:
            lines += [f"  {line}" for line in layer.lines()]
        return lines


# --- reading an archive ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedImage:
    """One image of an archive: its ID (sha256 of the config bytes), its config, its layers in order."""

    image_id: str
    config: dict[str, Any]
    config_bytes: bytes
    diff_ids: tuple[str, ...]
    layer_members: tuple[str, ...]  # the archive member of each layer, as manifest.json names it


class ImageArchive:
    """A docker-archive (`docker save`) read from a seekable binary file; the file stays the caller's.

    Opening reads the member index, manifest.json and every config (each bounded by `limits`); layers are
    read when `layer_paths` asks for one. ImageArchiveError for anything that is no docker-archive.
    """

    def __init__(self, file: IO[bytes], *, limits: ArchiveLimits = DEFAULT_LIMITS, name: str = "the image archive"):
        self.name, self.limits = name, limits
        if not file.seekable():  # manifest.json may come last: the layers are found through it
            raise self._error("is not a seekable file", "spool the save to a file first (docker_engine.spool_save)")
        try:
            self._tar = tarfile.open(fileobj=file, mode="r:")
            # The index only: the reader seeks over each member's data.
            self._members = {_member_name(member.name): member for member in self._tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise self._error(f"cannot be read as a tar ({type(exc).__name__}: {exc})") from None
        self.images = self._read_images()

    def close(self) -> None:
        self._tar.close()  # the file was given: tarfile leaves it open

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def image_ids(self) -> tuple[str, ...]:
        return tuple(image.image_id for image in self.images)

    def image(self, image_id: str | None = None) -> SavedImage:
        """The image with this ID (`sha256:<hex>`, bare hex, or a unique prefix of either); None: the only one."""
        if image_id is None:
            if len(self.images) != 1:
                raise self._error(f"holds {len(self.images)} images; name the one to compare")
            return self.images[0]
        wanted = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
        found = [image for image in self.images if image.image_id.startswith(wanted)]
        if len(found) != 1:
            held = ", ".join(self.image_ids) or "none"
            raise self._error(f"holds {'no' if not found else 'more than one'} image {image_id} (it holds {held})")
        return found[0]

    def layer_paths(self, image: SavedImage, index: int) -> dict[str, PathEntry]:
        """Every path of the image's layer `index`, read in one pass; its bytes are checked against the
        layer's diff_id, so the summary is of the layer the config names."""
        member_name, diff_id = image.layer_members[index], image.diff_ids[index]
        what = f"layer {index} ({member_name}) of {image.image_id}"
        member = self._layer_member(member_name, what)
        raw = self._tar.extractfile(member)
        if raw is None:
            raise self._error(f"has no data for {what}")
        try:
            head = raw.read(len(ZSTD_MAGIC))
            raw.seek(0)
            if head.startswith(ZSTD_MAGIC):
                raise self._error(f"has {what} compressed with zstd, which is not read here",
                                  "save the images from an engine that stores layers uncompressed or gzipped")
            stream: _Readable = gzip.GzipFile(fileobj=raw, mode="rb") if head.startswith(GZIP_MAGIC) else raw
            hashing = _Hashing(stream)
            paths = _summarize_layer(hashing, self.limits.max_layer_paths, what)
            while hashing.read(CHUNK):  # past the end-of-archive blocks: the digest covers the whole tar
                pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise self._error(f"has {what} that cannot be read ({type(exc).__name__}: {exc})") from None
        if hashing.digest() != diff_id:
            raise self._error(f"has {what} whose content is {hashing.digest()}, not its diff_id {diff_id}")
        return paths

    def _error(self, reason: str, hint: str | None = None) -> ImageArchiveError:
        return ImageArchiveError(f"{self.name} {reason}", hint)

    def _small_member(self, name: str, what: str) -> bytes:
        member = self._members.get(_member_name(name))
        if member is None or not member.isfile():
            raise self._error(f"has no {what} ({name!r})")
        try:
            check_size(member.size, what=what, limit=self.limits.max_json_bytes)
        except DocumentError as exc:
            raise self._error(f"has {exc}") from None
        try:
            file = self._tar.extractfile(member)
            assert file is not None  # a regular file has data
            return file.read()
        except (tarfile.TarError, OSError, EOFError) as exc:  # the archive ends inside the member
            raise self._error(f"has {what} that cannot be read ({type(exc).__name__}: {exc})") from None

    def _json_member(self, name: str, what: str) -> Any:
        try:
            return load_json(self._small_member(name, what), what=what, limit=self.limits.max_json_bytes)
        except DocumentError as exc:
            raise self._error(f"has {exc}") from None

    def _read_images(self) -> tuple[SavedImage, ...]:
        manifest = self._json_member(MANIFEST_MEMBER, MANIFEST_MEMBER)
        if not isinstance(manifest, list):
            raise self._error(f"has a {MANIFEST_MEMBER} that is no list")
        images: dict[str, SavedImage] = {}
        for entry in manifest:
            config_name = entry.get("Config") if isinstance(entry, dict) else None
            layers = entry.get("Layers") if isinstance(entry, dict) else None
            if not isinstance(config_name, str) or not isinstance(layers, list) \
                    or not all(isinstance(layer, str) for layer in layers):
                raise self._error(f"has a {MANIFEST_MEMBER} entry without a Config name and a list of Layers")
            config_bytes = self._small_member(config_name, f"the config {config_name}")
            image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
            try:
                config = load_json(config_bytes, what=f"the config {config_name}", limit=self.limits.max_json_bytes)
            except DocumentError as exc:
                raise self._error(f"has {exc}") from None
            rootfs = config.get("rootfs") if isinstance(config, dict) else None
            diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
            if not isinstance(diff_ids, list) or not all(isinstance(diff_id, str) for diff_id in diff_ids):
                raise self._error(f"has the config {config_name} without rootfs.diff_ids")
            if len(diff_ids) != len(layers):
                raise self._error(f"lists {len(layers)} layers for {image_id}, its config {len(diff_ids)}")
            assert isinstance(config, dict)
            images[image_id] = SavedImage(image_id, config, config_bytes, tuple(diff_ids), tuple(layers))
        return tuple(images.values())

    def _layer_member(self, name: str, what: str) -> tarfile.TarInfo:
        # The legacy layout links a layer stored twice: `<v1 id>/layer.tar -> ../<v1 id>/layer.tar`.
        member = self._members.get(_member_name(name))
        for _ in range(8):
            if member is None or not (member.issym() or member.islnk()):
                break
            base = posixpath.dirname(member.name) if member.issym() else ""
            member = self._members.get(_member_name(posixpath.join(base, member.linkname)))
        if member is None or not member.isfile():
            raise self._error(f"has no file for {what}")
        return member


def _member_name(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")) if name else "."


def _image_path(name: str) -> str:
    """A layer member's name as the path it has in the image: `./usr/bin/` is /usr/bin."""
    return posixpath.normpath("/" + name.lstrip("/"))


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Hashing:
    """A binary stream that hashes what is read through it."""

    def __init__(self, source: _Readable):
        self.source = source
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.sha256.update(chunk)
        return chunk

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def _summarize_layer(stream: _Hashing, max_paths: int, what: str) -> dict[str, PathEntry]:
    paths: dict[str, PathEntry] = {}
    with tarfile.open(fileobj=stream, mode="r|") as layer:  # type: ignore[call-overload]  # any .read() will do
        for member in layer:
            path = _image_path(member.name)
            # A path written twice in one layer: the later entry is what applying the layer leaves.
            paths[path] = _entry(layer, member)
            if len(paths) > max_paths:
                raise ImageArchiveError(f"{what} has more than {max_paths:,} paths, the most compared at once")
    return paths


def _entry(layer: tarfile.TarFile, member: tarfile.TarInfo) -> PathEntry:
    digest, linkname = "", ""
    if member.isfile():
        content = hashlib.sha256()
        data = layer.extractfile(member)
        assert data is not None  # a regular file has data
        while chunk := data.read(CHUNK):
            content.update(chunk)
        digest = "sha256:" + content.hexdigest()
    elif member.issym():
        linkname = member.linkname
    elif member.islnk():
        linkname = _image_path(member.linkname)
    xattrs = tuple(sorted((key.removeprefix(XATTR_PREFIX), value) for key, value in member.pax_headers.items()
                          if key.startswith(XATTR_PREFIX)))
    return PathEntry(kind=_KINDS.get(member.type, f"tar type {member.type!r}"), mode=member.mode & 0o7777,
                     uid=member.uid, gid=member.gid, mtime=member.mtime,
                     size=member.size if member.isfile() else 0, sha256=digest, linkname=linkname, xattrs=xattrs)


# --- comparing -------------------------------------------------------------------------------------


def diff_images(before: ImageArchive, after: ImageArchive, *, before_id: str | None = None,
                after_id: str | None = None, max_paths: int = MAX_PATHS_SHOWN) -> ImageDiff:
    """Compare an image of `before` with one of `after` (the same archive may be both, e.g. one
    `docker save` of the original and the rebuild). An ID may be left out when its archive holds one image.

    A layer is read only where the diff_ids differ, one layer of each side at a time.
    """
    old, new = before.image(before_id), after.image(after_id)
    if old.image_id == new.image_id:
        return ImageDiff(old.image_id, new.image_id)
    layers = []
    for index in range(max(len(old.diff_ids), len(new.diff_ids))):
        old_diff_id = old.diff_ids[index] if index < len(old.diff_ids) else None
        new_diff_id = new.diff_ids[index] if index < len(new.diff_ids) else None
        if old_diff_id == new_diff_id:
            layers.append(LayerDiff(index, old_diff_id, new_diff_id))
            continue
        old_paths = before.layer_paths(old, index) if old_diff_id is not None else {}
        new_paths = after.layer_paths(new, index) if new_diff_id is not None else {}
        changes = list(_path_changes(old_paths, new_paths))
        layers.append(LayerDiff(index, old_diff_id, new_diff_id, tuple(changes[:max_paths]), len(changes),
                                None if changes else _first_reordering(list(old_paths), list(new_paths))))
    config_changes = config_differences(old.config, new.config)
    if not config_changes and all(layer.same for layer in layers):
        # One ID from equal values: the config's JSON is written differently (key order, spacing).
        config_changes = (ConfigChange("(config bytes)", "", f"{len(old.config_bytes)} bytes",
                                       f"{len(new.config_bytes)} bytes, the same values written differently"),)
    return ImageDiff(old.image_id, new.image_id, config_changes, tuple(layers))


def diff_saved_images(file: IO[bytes], before_id: str, after_id: str, *, limits: ArchiveLimits = DEFAULT_LIMITS,
                      max_paths: int = MAX_PATHS_SHOWN) -> ImageDiff:
    """Compare two images of one `docker save` archive (shared layers stored once), given as a seekable file."""
    with ImageArchive(file, limits=limits) as archive:
        return diff_images(archive, archive, before_id=before_id, after_id=after_id, max_paths=max_paths)


def _first_reordering(before: list[str], after: list[str]) -> tuple[str, str] | None:
    """The first pair of paths the two member orders disagree on (the paths as the tars list them)."""
    for old, new in zip(before, after, strict=False):
        if old != new:
            return old, new
    return None


def _path_changes(before: Mapping[str, PathEntry], after: Mapping[str, PathEntry]) -> Iterator[PathChange]:
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old is None or new is None:
            yield PathChange(path, old, new, ())
        elif attributes := differing_attributes(old, new):
            yield PathChange(path, old, new, attributes)


def config_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[ConfigChange, ...]:
    """The top-level config keys whose values differ, the `config` object's keys one by one (each label and
    each environment variable on its own); rootfs left to the layers."""
    changes = [_change(key, before.get(key, _ABSENT), after.get(key, _ABSENT))
               for key in _keys(before, after) if key not in CONFIG_KEYS_SKIPPED and key != "config"]
    old_config, new_config = before.get("config", _ABSENT), after.get("config", _ABSENT)
    if not (isinstance(old_config, dict) and isinstance(new_config, dict)):
        changes.append(_change("config", old_config, new_config))
    else:
        for key in _keys(old_config, new_config):
            old, new = old_config.get(key, _ABSENT), new_config.get(key, _ABSENT)
            if old == new:
                continue
            if key == "Env" and isinstance(old, list) and isinstance(new, list):
                old, new = _environment(old), _environment(new)
            if isinstance(old, dict) and isinstance(new, dict) and key in ("Labels", "Env"):
                by_name = [_change(f"config.{key}.{name}", old.get(name, _ABSENT), new.get(name, _ABSENT))
                           for name in _keys(old, new)]
                # Equal by name yet unequal as written: the order of the variables.
                changes += [change for change in by_name if change] or [
                    _change(f"config.{key}", old_config[key], new_config[key])]
            else:
                changes.append(_change(f"config.{key}", old, new))
    return tuple(change for change in changes if change is not None)


class _Absent:
    def __repr__(self) -> str:
        return ABSENT


_ABSENT: Any = _Absent()


def _keys(*objects: Mapping[str, Any]) -> list[str]:
    """The keys of every object, each once, in the order first seen."""
    return list(dict.fromkeys(key for value in objects for key in value))


def _environment(variables: list[Any]) -> dict[str, Any] | list[Any]:
    if not all(isinstance(variable, str) for variable in variables):
        return variables
    return {name: value for name, _, value in (variable.partition("=") for variable in variables)}


def _change(key: str, before: Any, after: Any) -> ConfigChange | None:
    if before == after:
        return None
    at, old, new = _first_difference(before, after)
    return ConfigChange(key, at, _short(old), _short(new))


def _first_difference(before: Any, after: Any, at: str = "") -> tuple[str, Any, Any]:
    """Where inside two unequal values they first differ (`[3].created`), and the values there."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in _keys(before, after):
            old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
            if old != new:
                return _first_difference(old, new, f"{at}.{key}")
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            old = before[index] if index < len(before) else _ABSENT
            new = after[index] if index < len(after) else _ABSENT
            if old != new:
                return _first_difference(old, new, f"{at}[{index}]")
    return at, before, after


def _short(value: Any) -> str:
    if value is _ABSENT:
        return ABSENT
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= SHORT_VALUE else text[:SHORT_VALUE - 3] + "..."


def _short_digest(digest: str | None) -> str:
    return "none" if digest is None else digest[:len("sha256:") + 12]


def _attribute_text(name: str, entry: PathEntry) -> str:
    if name == "type":
        return entry.kind
    if name == "link":
        return entry.linkname or "(none)"
    if name == "content":
        digest = _short_digest(entry.sha256) if entry.sha256 else "(no content)"
        return f"{digest} ({size_text(entry.size)})"
    if name == "mode":
        return f"{entry.mode:04o}"
    if name == "owner":
        return f"{entry.uid}:{entry.gid}"
    if name == "mtime":
        return _time_text(entry.mtime)
    return ", ".join(f"{key}={value}" for key, value in entry.xattrs) or "(none)"


def _time_text(mtime: float) -> str:
    try:
        moment = datetime.fromtimestamp(mtime, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(mtime)
    text = moment.isoformat(timespec="microseconds" if mtime % 1 else "seconds")
    return text.replace("+00:00", "Z")
