"""model/image_diff.py over docker-archives built in memory: what two images differ in, and what is refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field

import pytest
from fake_engine import FakeEngine, image_id

from ingestion_factory.engine.docker_engine import spool_save
from ingestion_factory.model.image_diff import (
    ArchiveLimits,
    ImageArchive,
    ImageArchiveError,
    diff_images,
    diff_saved_images,
)

T0 = 1_700_000_000


# --- building archives ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar."""

    path: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = T0
    linkname: str = ""
    xattrs: dict = field(default_factory=dict)

    def add_to(self, tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(self.path)
        info.type, info.mode, info.uid, info.gid, info.mtime = self.kind, self.mode, self.uid, self.gid, self.mtime
        info.linkname = self.linkname
        info.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in self.xattrs.items()}
        info.size = len(self.data) if self.kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(self.data) if self.kind == tarfile.REGTYPE else None)


def directory(path: str, **attributes) -> Entry:
    return Entry(path, kind=tarfile.DIRTYPE, mode=0o755, **attributes)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, kind=tarfile.SYMTYPE, mode=0o777, linkname=target)


def layer(*entries: Entry) -> bytes:
    """A layer tar, as docker writes one (members relative, no leading slash)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            entry.add_to(tar)
    return buffer.getvalue()


BASE = layer(directory("etc"), Entry("etc/os-release", b"ID=debian\n"), directory("usr"),
             Entry("usr/bin/tool", b"#!/bin/sh\n", mode=0o755))


@dataclass(frozen=True)
class Image:
    layers: tuple[bytes, ...]  # uncompressed layer tars
    config: bytes
    gzipped: bool = False  # layers stored gzip-compressed (OCI layout only)

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def image(*layers: bytes, created: str = "2024-01-01T00:00:00Z", labels: dict | None = None,
          config: dict | None = None, gzipped: bool = False) -> Image:
    diff_ids = ["sha256:" + hashlib.sha256(tar).hexdigest() for tar in layers]
    document = {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/usr/bin", "LANG=C.UTF-8"], "Cmd": ["python"],
                   "Labels": labels if labels is not None else {"org.opencontainers.image.version": "1.0"}},
        "history": [{"created": created, "created_by": f"step {index}"} for index in range(len(layers))],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        **(config or {}),
    }
    return Image(tuple(layers), json.dumps(document, sort_keys=True).encode(), gzipped)


def archive_bytes(*images: Image, oci: bool = False) -> bytes:
    """A docker save of the images: the legacy layout (engines before 25: each layer in its own directory,
    one stored twice linked to the first copy, manifest.json last) or the OCI one (blobs by digest)."""
    buffer = io.BytesIO()
    manifest, written = [], {}
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for saved in images:
            names = []
            for tar_bytes in saved.layers:
                stored = gzip.compress(tar_bytes, mtime=0) if saved.gzipped else tar_bytes
                digest = hashlib.sha256(stored).hexdigest()
                name = f"blobs/sha256/{digest}" if oci else f"{hashlib.sha256(digest.encode()).hexdigest()}/layer.tar"
                if stored in written and not oci:  # docker links a layer it already wrote
                    name = f"{hashlib.sha256(name.encode()).hexdigest()}/layer.tar"
                    link = tarfile.TarInfo(name)
                    link.type, link.linkname = tarfile.SYMTYPE, f"../{written[stored]}"
                    tar.addfile(link)
                elif stored not in written:
                    add(name, stored)
                    written[stored] = name
                else:
                    name = written[stored]
                names.append(name)
            config_name = f"blobs/sha256/{saved.id[7:]}" if oci else f"{saved.id[7:]}.json"
            if config_name not in {entry["Config"] for entry in manifest}:
                add(config_name, saved.config)
            manifest.append({"Config": config_name, "RepoTags": None, "Layers": names})
        add("manifest.json", json.dumps(manifest).encode())
    return buffer.getvalue()


def compare(before: Image, after: Image, **options):
    """The diff of two images saved in one archive, as `inv rebuild` saves the original and the rebuild."""
    return diff_saved_images(io.BytesIO(archive_bytes(before, after)), before.id, after.id, **options)


def one_change(diff, index: int = 1):
    assert [layer.index for layer in diff.differing_layers] == [index]
    (change,) = diff.layers[index].changes
    return change


# --- what differs --------------------------------------------------------------------------------------


def test_one_image_is_identical_to_itself_and_no_layer_is_read(monkeypatch):
    original = image(BASE, layer(Entry("app.py", b"print(1)\n")))
    monkeypatch.setattr(ImageArchive, "layer_paths", lambda *_: pytest.fail("an identical image's layers were read"))
    diff = compare(original, original)
    assert diff.identical and diff.before_id == diff.after_id == original.id
    assert diff.config_changes == () and diff.layers == ()
    assert diff.lines() == [f"identical: {original.id}"]


def test_a_different_creation_time_is_a_config_difference_only(monkeypatch):
    before = image(BASE, created="2024-01-01T00:00:00Z")
    after = image(BASE, created="2024-06-01T12:00:00Z")
    monkeypatch.setattr(ImageArchive, "layer_paths", lambda *_: pytest.fail("a layer with one diff_id was read"))
    diff = compare(before, after)
    assert not diff.identical
    assert [(change.key, change.at, change.before, change.after) for change in diff.config_changes] == [
        ("created", "", '"2024-01-01T00:00:00Z"', '"2024-06-01T12:00:00Z"'),
        ("history", "[0].created", '"2024-01-01T00:00:00Z"', '"2024-06-01T12:00:00Z"'),
    ]
    assert [layer.same for layer in diff.layers] == [True]
    text = "\n".join(diff.lines())
    assert 'created: "2024-01-01T00:00:00Z" -> "2024-06-01T12:00:00Z"' in text
    assert "history[0].created:" in text
    assert "layers: 1, 0 differ" in text and "layer 0: same (sha256:" in text


def test_labels_and_environment_variables_are_compared_one_by_one():
    before = image(BASE, labels={"a": "1", "b": "2"})
    after = image(BASE, labels={"a": "1", "b": "3", "c": "4"},
                  config={"config": {"Env": ["PATH=/usr/bin", "LANG=C"], "Cmd": ["python"],
                                     "Labels": {"a": "1", "b": "3", "c": "4"}}})
    keys = {change.key: (change.before, change.after) for change in compare(before, after).config_changes}
    assert keys == {"config.Labels.b": ('"2"', '"3"'), "config.Labels.c": ("(absent)", '"4"'),
                    "config.Env.LANG": ('"C.UTF-8"', '"C"')}


def test_the_same_config_values_written_differently_are_said_to_be_so():
    before = image(BASE)
    after = Image(before.layers, json.dumps(json.loads(before.config), indent=1).encode())
    diff = compare(before, after)
    assert [(change.key, change.after) for change in diff.config_changes] == [
        ("(config bytes)", f"{len(after.config)} bytes, the same values written differently")]


def test_an_added_file():
    before = image(BASE, layer(directory("app"), Entry("app/main.py", b"print(1)\n")))
    after = image(BASE, layer(directory("app"), Entry("app/main.py", b"print(1)\n"), Entry("app/extra.py", b"x")))
    change = one_change(compare(before, after))
    assert (change.path, change.status, change.before, change.attributes) == ("/app/extra.py", "added", None, ())
    assert change.after.kind == "file" and change.after.sha256 == "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert change.line() == "+ /app/extra.py (file, only after)"


def test_a_removed_file():
    before = image(BASE, layer(Entry("gone.txt", b"x"), Entry("kept.txt")))
    after = image(BASE, layer(Entry("kept.txt")))
    change = one_change(compare(before, after))
    assert (change.path, change.status, change.after) == ("/gone.txt", "removed", None)
    assert change.line() == "- /gone.txt (file, only before)"


def test_changed_content():
    before = image(BASE, layer(Entry("app/main.py", b"print(1)\n")))
    after = image(BASE, layer(Entry("app/main.py", b"print(22)\n")))
    diff = compare(before, after)
    change = one_change(diff)
    assert (change.path, change.status, change.attributes) == ("/app/main.py", "changed", ("content",))
    assert change.before.size == 9 and change.after.size == 10
    assert change.line().startswith("~ /app/main.py: content sha256:")
    assert "(9 bytes) -> sha256:" in change.line() and change.line().endswith("(10 bytes)")
    layer_line = next(line for line in diff.lines() if "layer 1" in line)
    assert layer_line == (f"  layer 1: differs ({diff.layers[1].before_diff_id[:19]} -> "
                          f"{diff.layers[1].after_diff_id[:19]}), 1 path differ")


def test_a_mode_change():
    before = image(BASE, layer(Entry("run.sh", b"echo\n", mode=0o644)))
    after = image(BASE, layer(Entry("run.sh", b"echo\n", mode=0o4755)))
    change = one_change(compare(before, after))
    assert change.attributes == ("mode",)
    assert change.line() == "~ /run.sh: mode 0644 -> 4755"


def test_an_mtime_change():
    before = image(BASE, layer(directory("app", mtime=T0), Entry("app/a", b"a")))
    after = image(BASE, layer(directory("app", mtime=T0 + 60), Entry("app/a", b"a")))
    change = one_change(compare(before, after))
    assert (change.path, change.attributes) == ("/app", ("mtime",))
    assert change.line() == "~ /app: mtime 2023-11-14T22:13:20Z -> 2023-11-14T22:14:20Z"


def test_an_owner_change():
    before = image(BASE, layer(Entry("home/data", b"d", uid=0, gid=0)))
    after = image(BASE, layer(Entry("home/data", b"d", uid=1000, gid=100)))
    change = one_change(compare(before, after))
    assert change.attributes == ("owner",)
    assert change.line() == "~ /home/data: owner 0:0 -> 1000:100"


def test_a_symlink_target_change():
    before = image(BASE, layer(symlink("usr/bin/python", "python3.11")))
    after = image(BASE, layer(symlink("usr/bin/python", "python3.12")))
    change = one_change(compare(before, after))
    assert change.attributes == ("link",)
    assert change.line() == "~ /usr/bin/python: link python3.11 -> python3.12"


def test_a_type_change_and_several_attributes_at_once():
    before = image(BASE, layer(Entry("lib", b"x", mode=0o644)))
    after = image(BASE, layer(symlink("lib", "usr/lib")))
    change = one_change(compare(before, after))
    assert change.attributes == ("type", "link", "content", "mode")
    assert change.line().startswith("~ /lib: type file -> symlink; link (none) -> usr/lib; content sha256:")


def test_an_extended_attribute_change():
    before = image(BASE, layer(Entry("usr/bin/ping", b"elf", xattrs={"security.capability": "a"})))
    after = image(BASE, layer(Entry("usr/bin/ping", b"elf")))
    change = one_change(compare(before, after))
    assert change.attributes == ("xattrs",)
    assert change.line() == "~ /usr/bin/ping: xattrs security.capability=a -> (none)"


def test_the_same_paths_in_another_member_order():
    before = image(BASE, layer(Entry("a", b"1"), Entry("b", b"2")))
    after = image(BASE, layer(Entry("b", b"2"), Entry("a", b"1")))
    diff = compare(before, after)
    assert [layer.same for layer in diff.layers] == [True, False] and diff.layers[1].total_changes == 0
    assert "the same entries in another order: /a comes before /b" in diff.layers[1].lines()[0]


def test_a_layer_count_mismatch():
    before = image(BASE)
    after = image(BASE, layer(directory("app"), Entry("app/main.py", b"x")), layer())
    diff = compare(before, after)
    assert (diff.before_layers, diff.after_layers) == (1, 3)
    assert [(layer.before_diff_id is None, layer.same) for layer in diff.layers] == [
        (False, True), (True, False), (True, False)]
    added = diff.layers[1]
    assert [(change.path, change.status) for change in added.changes] == [("/app", "added"), ("/app/main.py", "added")]
    text = diff.lines()
    assert "layers: 1 before, 3 after, 2 differ" in text
    assert any(line.startswith("  layer 1: only after (sha256:") and line.endswith("2 paths differ") for line in text)
    assert any(line.startswith("  layer 2: only after") and line.endswith("an empty layer") for line in text)
    # and the other way round: the paths of a layer only the original has are removed
    reverse = compare(after, before)
    assert [change.status for change in reverse.layers[1].changes] == ["removed", "removed"]
    assert "layers: 3 before, 1 after, 2 differ" in reverse.lines()


def test_the_listed_paths_are_capped():
    files = [Entry(f"data/{number:02}.txt", b"x") for number in range(25)]
    before, after = image(BASE, layer()), image(BASE, layer(*files))
    diff = compare(before, after)
    changed = diff.layers[1]
    assert (len(changed.changes), changed.total_changes, changed.omitted) == (20, 25, 5)
    assert [change.path for change in changed.changes] == [f"/data/{number:02}.txt" for number in range(20)]
    assert diff.lines()[-1] == "      ... and 5 more paths"
    fewer = compare(before, after, max_paths=3).layers[1]
    assert (len(fewer.changes), fewer.omitted) == (3, 22)


def test_two_archives_and_the_oci_layout_with_gzipped_layers():
    app = layer(Entry("app.py", b"v1"))
    before = image(BASE, app)
    after = image(BASE, layer(Entry("app.py", b"v2")), gzipped=True)
    with ImageArchive(io.BytesIO(archive_bytes(before))) as old, \
            ImageArchive(io.BytesIO(archive_bytes(after, oci=True))) as new:
        assert new.image_ids == (after.id,)
        diff = diff_images(old, new)  # each archive holds one image: no ID needed
    assert [layer.same for layer in diff.layers] == [True, False]
    assert one_change(diff).attributes == ("content",)


def test_a_layer_docker_saved_as_a_link_is_read_through_it():
    shared = layer(Entry("same.txt", b"same"))
    before = image(BASE, shared, layer(Entry("x", b"1")))
    after = image(BASE, layer(Entry("y", b"2")), shared)  # the second copy of `shared` is a symlink
    diff = compare(before, after)
    assert [change.path for change in diff.layers[2].changes] == ["/same.txt", "/x"]


def test_images_are_found_by_short_id_and_an_archive_of_several_needs_one():
    before, after = image(BASE, created="a"), image(BASE, created="b")
    with ImageArchive(io.BytesIO(archive_bytes(before, after))) as archive:
        assert archive.image(after.id[7:19]).image_id == after.id
        with pytest.raises(ImageArchiveError, match="holds 2 images; name the one"):
            archive.image()
        with pytest.raises(ImageArchiveError, match="holds no image sha256:0000"):
            archive.image("sha256:0000")


# --- what is refused -----------------------------------------------------------------------------------


def test_an_oversized_config_or_manifest_is_refused():
    big = image(BASE, labels={"padding": "x" * 5000})
    with pytest.raises(ImageArchiveError, match=r"the config .*\.json is larger than 4,096 bytes"):
        ImageArchive(io.BytesIO(archive_bytes(big)), limits=ArchiveLimits(max_json_bytes=4096))
    many = [image(BASE, created=str(number)) for number in range(40)]
    with pytest.raises(ImageArchiveError, match="manifest.json is larger than 4,096 bytes"):
        ImageArchive(io.BytesIO(archive_bytes(*many)), limits=ArchiveLimits(max_json_bytes=4096))


def test_a_layer_of_too_many_paths_is_refused():
    before = image(BASE, layer(Entry("a")))
    after = image(BASE, layer(*[Entry(f"f{number}") for number in range(11)]))
    with pytest.raises(ImageArchiveError, match="layer 1 .* has more than 10 paths"):
        compare(before, after, limits=ArchiveLimits(max_layer_paths=10))


def test_a_layer_that_is_not_its_diff_id_is_refused():
    honest = image(BASE, layer(Entry("a", b"1")))
    claimed = image(BASE, layer(Entry("a", b"3")))  # its config names a layer the archive does not hold
    forged = Image((BASE, layer(Entry("a", b"2"))), claimed.config)
    with pytest.raises(ImageArchiveError, match="whose content is sha256:.*, not its diff_id"):
        compare(honest, forged)


def cut_inside(data: bytes, member: str) -> bytes:
    """The archive cut a few bytes into a member's data."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return data[:tar.getmember(member).offset_data + 5]


SAVED = archive_bytes(image(BASE))


@pytest.mark.parametrize(("data", "says"), [
    (b"not a tar at all" * 100, "cannot be read as a tar"),
    (layer(Entry("repositories", b"{}")), "has no manifest.json"),
    (cut_inside(SAVED, "manifest.json"), "cannot be read as a tar .*unexpected end of data"),
])
def test_what_is_no_docker_archive_is_refused(data, says):
    with pytest.raises(ImageArchiveError, match=says):
        ImageArchive(io.BytesIO(data))


def test_a_manifest_without_layers_or_a_config_without_diff_ids_is_refused():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("c.json", b'{"rootfs": {}}'), ("manifest.json", b'[{"Config": "c.json", "Layers": []}]')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImageArchiveError, match="config c.json without rootfs.diff_ids"):
        ImageArchive(io.BytesIO(buffer.getvalue()))


def test_a_stream_that_cannot_seek_is_refused():
    class Pipe(io.RawIOBase):
        def seekable(self):
            return False

    with pytest.raises(ImageArchiveError, match="is not a seekable file") as refused:
        ImageArchive(Pipe())
    assert "spool_save" in refused.value.hint


# --- the engine's save, spooled ------------------------------------------------------------------------


def test_spool_save_writes_one_save_of_the_images_to_a_rewound_file(tmp_path):
    engine, a = FakeEngine(), image_id("a")
    engine.add(a)
    with spool_save(engine, [a], str(tmp_path)) as spooled:
        assert json.loads(spooled.read()) == {"names": [a]}  # the fake's save, byte for byte
        assert list(tmp_path.iterdir()) == []  # unnamed: nothing to clean up
    assert engine.saved == [[a]]


def test_the_same_entries_in_another_order_are_named_as_such():
    """What overlay2 does to one layer on this engine: its upper-dir walk (`agate/...` first) and its naive
    diff (full-path order, `agate-1.9.1.dist-info` first) list the same entries in two orders."""
    package, dist_info = directory("site/agate"), directory("site/agate-1.9.1.dist-info")
    init = Entry("site/agate/__init__.py", b"x = 1\n")
    walked = image(BASE, layer(directory("site"), package, init, dist_info))
    full_path = image(BASE, layer(directory("site"), package, dist_info, init))
    diff = compare(walked, full_path)
    (changed,) = diff.differing_layers
    assert changed.total_changes == 0
    assert changed.reordered == ("/site/agate/__init__.py", "/site/agate-1.9.1.dist-info")
    assert "the same entries in another order: /site/agate/__init__.py comes before " \
           "/site/agate-1.9.1.dist-info in one and after it in the other" in "\n".join(diff.lines())
