"""images/python/debian.lock: resolving the set from the suites, the file, refresh, and what the build checks."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from ingestion_factory import platforms
from ingestion_factory import settings as settings_mod
from ingestion_factory.engine import debian_archive, debian_resolve, python_image
from ingestion_factory.engine.debian_archive import ArchiveUnverified, BinaryPackage, Suite
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import debian_lock
from ingestion_factory.model.debian_lock import DebianLock, LockedPackage, PackageSet


def deb(name, version, arch="amd64", suite="bookworm", **fields) -> BinaryPackage:
    data = f"{name} {version} {arch}".encode()
    return BinaryPackage(name, version, arch, suite, f"pool/main/{name}_{version}_{arch}.deb",
                         hashlib.sha256(data).hexdigest(), len(data), **fields)


def index(*packages: BinaryPackage) -> dict[str, list[BinaryPackage]]:
    found: dict[str, list[BinaryPackage]] = {}
    for package in packages:
        found.setdefault(package.name, []).append(package)
    return found


# A small bookworm: essential and required packages, alternatives, a virtual package, a newer security upload.
SUITE = index(
    deb("base-files", "12.4", essential=True, priority="required"),
    deb("dpkg", "1.21.22", essential=True, priority="required", pre_depends="libc6 (>= 2.34), tar (>= 1.28)"),
    deb("tar", "1.34", essential=True, priority="required", pre_depends="libc6 (>= 2.34)"),
    deb("libc6", "2.36-9+deb12u9", depends="libgcc-s1"),
    deb("libc6", "2.36-9+deb12u10", suite="bookworm-security", depends="libgcc-s1"),
    deb("libgcc-s1", "12.2.0", depends="gcc-12-base (= 12.2.0), libc6 (>= 2.35)"),
    deb("gcc-12-base", "12.2.0"),
    deb("apt", "2.6.1", priority="required", depends="gpgv | gpgv2, adduser"),
    deb("gpgv", "2.2.40"),
    deb("gpgv2", "2.2.40"),
    deb("adduser", "3.134", "all", depends="passwd"),
    deb("shadow-passwd", "1:4.13", provides="passwd"),
    deb("python3", "3.11.2", depends="python3.11 (>= 3.11.2), media-types | mime-support"),
    deb("python3.11", "3.11.2", depends="libc6 (>= 2.36)"),
    deb("mime-support", "3.66", "all"),
    deb("recommended-only", "1"),
    deb("optional-unused", "1", priority="optional"),
    deb("required-in-updates-only", "1", suite="bookworm-updates", priority="required"),
    deb("init-system-helpers", "1.65", "all", priority="required", depends="usrmerge | usr-is-merged"),
    deb("usrmerge", "37", "all", depends="perl"),
    deb("perl", "5.36.0"),
    deb("usr-is-merged", "37", "all"),
)


def names(packages) -> list[str]:
    return [p.name for p in packages]


def test_the_set_is_minbase_plus_the_packages_asked_for_and_their_dependencies_at_their_newest():
    roots = debian_resolve.minbase_roots(SUITE, "bookworm")
    # Priority: required of -updates does not count
    assert roots == ["apt", "base-files", "dpkg", "init-system-helpers", "tar"]
    resolved = debian_resolve.resolve(SUITE, [*roots, "python3"], "amd64")
    assert names(resolved) == ["adduser", "apt", "base-files", "dpkg", "gcc-12-base", "gpgv", "init-system-helpers",
                               "libc6", "libgcc-s1", "mime-support", "perl", "python3", "python3.11",
                               "shadow-passwd", "tar", "usrmerge"]
    libc6 = next(p for p in resolved if p.name == "libc6")
    assert (libc6.version, libc6.suite) == ("2.36-9+deb12u10", "bookworm-security")


def test_an_alternative_already_chosen_wins_over_the_first_one():
    resolved = debian_resolve.resolve(SUITE, ["gpgv2", "apt"], "amd64")
    assert "gpgv2" in names(resolved) and "gpgv" not in names(resolved)


def test_a_dependency_nothing_meets_is_named():
    broken = {**SUITE, "python3": [deb("python3", "3.11.2", depends="python3.11 (>= 3.12)")]}
    with pytest.raises(debian_resolve.Unresolvable, match=r"python3 3.11.2 depends on python3.11 \(>= 3.12\)"):
        debian_resolve.resolve(broken, ["python3"], "amd64")
    with pytest.raises(debian_resolve.Unresolvable, match="no suite has a package named nosuch for amd64"):
        debian_resolve.resolve(SUITE, ["nosuch"], "amd64")


def test_relations_keep_versions_and_drop_architecture_qualifiers():
    assert debian_resolve.relations("python3:any (>= 3.11~), a | b (<< 2)") == [
        [debian_resolve.Relation("python3", ">=", "3.11~")],
        [debian_resolve.Relation("a"), debian_resolve.Relation("b", "<<", "2")]]
    assert debian_resolve.Relation("x", ">=", "1:1.0").accepts("1:1.0") and \
        not debian_resolve.Relation("x", ">>", "1:1.0").accepts("1.5")


# --- the file -----------------------------------------------------------------------------------


def locked(name, version, arch="amd64", suite="bookworm"):
    return LockedPackage(name, version, arch, suite, hashlib.sha256(f"{name} {version} {arch}".encode()).hexdigest())


def test_the_lock_reads_back_what_was_written_and_its_digest_follows_every_package():
    amd64 = PackageSet("amd64", 1796525669, (locked("libc6", "2.36-9+deb12u10"), locked("adduser", "3.134", "all")))
    lock = DebianLock("0123456789abcdef", (amd64,), ("a header line",))
    text = lock.render()
    assert text.splitlines()[:4] == ["# a header line", "# inputs: 0123456789abcdef", "", "[amd64]"]
    again = debian_lock.parse(text)
    assert again.inputs == lock.inputs and again.for_architecture("amd64").packages == tuple(
        sorted(amd64.packages, key=lambda p: p.name))
    assert debian_lock.parse(again.render()).render() == text
    moved = PackageSet("amd64", 1796525669, (locked("libc6", "2.36-9+deb12u11"), locked("adduser", "3.134", "all")))
    assert moved.digest != amd64.digest


def test_a_damaged_lock_line_is_bad_input_with_the_refresh_command():
    with pytest.raises(ConfigError, match=r"debian.lock:3: not `name version architecture suite sha256`") as error:
        debian_lock.parse("# inputs: x\n[amd64]\nlibc6 2.36\n")
    assert "inv python-image --refresh" in error.value.hint


@pytest.fixture
def settings(project):
    return settings_mod.load(settings_mod.pyproject_defaults(project), project)


def test_a_missing_stale_or_partial_lock_is_bad_input_naming_the_command(settings):
    with pytest.raises(ConfigError, match="debian.lock is missing") as error:
        python_image.locked_set(settings, platforms.AMD64)
    assert error.value.exit_code == 2 and "inv python-image --refresh" in error.value.hint
    other = DebianLock("0" * 16, (PackageSet("amd64", 1, ()),))
    with pytest.raises(ConfigError, match="resolved for other packages or another suite"):
        python_image.locked_set(settings, platforms.AMD64, other)
    amd64_only = DebianLock(python_image.lock_inputs(settings), (PackageSet("amd64", 1, ()),))
    with pytest.raises(ConfigError, match="has no packages for arm64") as error:
        python_image.locked_set(settings, platforms.ARM64, amd64_only)
    assert error.value.hint == "add them: inv python-image --refresh --platform linux/arm64"


# --- refresh and the archive --------------------------------------------------------------------


class FakeArchive:
    """The suites as given: architecture -> name -> versions; .deb bytes by URL."""

    def __init__(self, binaries, dates=(100, 300, 200), debs=None, cache_dir=None):
        self.binaries = binaries
        self.suites = (Suite("bookworm", "http://m/debian"), Suite("bookworm-updates", "http://m/debian"),
                       Suite("bookworm-security", "http://m/debian-security"))
        self.dates = dict(zip((s.name for s in self.suites), dates, strict=True))
        self.debs = debs or {}
        self.cache_dir = cache_dir
        self.fetched = []

    def binary_packages(self, architecture):
        return self.binaries[architecture]

    def release_date(self, suite):
        return self.dates[suite.name]

    def package_url(self, package):
        return debian_archive.Archive.package_url(self, package)

    def fetch(self, url):
        self.fetched.append(url)
        return self.debs[url]


def refresh(settings, archive):
    built, lines = [], []

    def rebuild(settings, **kwargs):
        built.append(kwargs["platform"])
        return "sha256:image"

    python_image.refresh_all(settings, archive=archive, rebuild=rebuild, echo=lines.append)
    return built, lines


def test_refresh_writes_the_lock_then_leaves_it_alone_until_the_suites_move(settings, monkeypatch):
    monkeypatch.setattr(python_image, "PACKAGES", ("python3",))
    archive = FakeArchive({"amd64": SUITE})
    built, lines = refresh(settings, archive)
    path = python_image.lock_path(settings)
    lock = debian_lock.read(path)
    amd64 = lock.for_architecture("amd64")
    assert amd64.source_date_epoch == 300  # the newest Release date of the three suites
    assert ("libc6", "2.36-9+deb12u10", "bookworm-security") in [(p.name, p.version, p.suite) for p in amd64.packages]
    assert built == [platforms.AMD64] and lines[-1] == "wrote images/python/debian.lock: commit it."
    written = path.read_bytes()

    archive.dates = {name: date + 1000 for name, date in archive.dates.items()}  # new Release files, same packages
    built, lines = refresh(settings, archive)
    assert path.read_bytes() == written and "[amd64] is current with bookworm" in lines[0]
    assert built == [platforms.AMD64]  # the build itself is a no-op when the image is current

    newer = {**SUITE, "libc6": [*SUITE["libc6"], deb("libc6", "2.36-9+deb12u11", suite="bookworm-security",
                                                    depends="libgcc-s1")]}
    archive.binaries = {"amd64": newer}
    built, lines = refresh(settings, archive)
    assert lines[0] == "images/python/debian.lock [amd64]: 1 change(s): libc6 2.36-9+deb12u10 -> 2.36-9+deb12u11"
    assert debian_lock.read(path).for_architecture("amd64").source_date_epoch == 1300


def test_merged_usr_comes_from_directory_symlinks_and_usr_is_merged_not_usrmerge_and_perl(settings, monkeypatch):
    monkeypatch.setattr(python_image, "PACKAGES", ("python3",))
    refresh(settings, FakeArchive({"amd64": SUITE}))
    locked_names = names(debian_lock.read(python_image.lock_path(settings)).for_architecture("amd64").packages)
    assert "usr-is-merged" in locked_names and "usrmerge" not in locked_names and "perl" not in locked_names
    command = python_image.mmdebstrap_command(settings, platforms.AMD64, PackageSet("amd64", 1, ()),
                                              Path("/s/repo"), Path("/s/filters"), Path("/s/rootfs"))
    assert f"--setup-hook={python_image.MERGED_USR_HOOK}" in command  # the symlinks before the first package


def test_refresh_keeps_every_architecture_the_lock_has(settings, monkeypatch):
    monkeypatch.setattr(python_image, "PACKAGES", ("python3",))
    arm64 = {name: [p.__class__(**{**p.__dict__, "architecture": "arm64" if p.architecture == "amd64" else "all"})
                    for p in versions] for name, versions in SUITE.items()}
    archive = FakeArchive({"amd64": SUITE, "arm64": arm64})
    settings = settings.with_overrides(platforms=("linux/amd64", "linux/arm64"))
    monkeypatch.setattr(platforms, "require_emulation", lambda targets: None)
    built, _ = refresh(settings, archive)
    assert built == [platforms.AMD64, platforms.ARM64]
    built, lines = refresh(settings.with_overrides(platforms=("linux/amd64",)), archive)
    assert built == [platforms.AMD64] and any("[arm64] is current" in line for line in lines)
    assert [s.architecture for s in debian_lock.read(python_image.lock_path(settings)).sets] == ["amd64", "arm64"]
    monkeypatch.setattr(python_image, "PACKAGES", ("python3", "mime-support"))  # other inputs: every set again
    refresh(settings.with_overrides(platforms=("linux/amd64",)), archive)
    lock = debian_lock.read(python_image.lock_path(settings))
    assert [s.architecture for s in lock.sets] == ["amd64", "arm64"] and lock.inputs == python_image.lock_inputs(settings)


def test_a_locked_version_the_archive_no_longer_serves_fails_naming_it_and_the_refresh(settings):
    package_set = PackageSet("amd64", 1, (locked("libc6", "2.36-9+deb12u9"), locked("libc6-gone", "1")))
    with pytest.raises(python_image.NotServed) as error:
        python_image.served(package_set, FakeArchive({"amd64": SUITE}))
    assert error.value.exit_code == 1
    assert error.value.message == ("1 locked Debian package version(s) are no longer served by bookworm, "
                                   "bookworm-updates, bookworm-security: libc6-gone 1 (amd64)")
    assert error.value.hint.startswith("lock the versions the suites serve now: inv python-image --refresh")


def test_a_locked_hash_the_index_contradicts_is_refused(settings):
    tampered = PackageSet("amd64", 1, (LockedPackage("tar", "1.34", "amd64", "bookworm", "f" * 64),))
    with pytest.raises(ArchiveUnverified, match="tar 1.34 .amd64. has SHA-256"):
        python_image.served(tampered, FakeArchive({"amd64": SUITE}))


def test_each_deb_is_checked_against_its_hash_and_kept_by_it(tmp_path):
    good, bad = SUITE["tar"][0], SUITE["gpgv"][0]
    archive = FakeArchive({}, debs={"http://m/debian/" + good.filename: b"tar 1.34 amd64",
                                    "http://m/debian/" + bad.filename: b"evil"})
    [path] = python_image.fetch_debs([good], archive, tmp_path)
    assert path.read_bytes() == b"tar 1.34 amd64"
    archive.fetched.clear()
    python_image.fetch_debs([good], archive, tmp_path)
    assert archive.fetched == []  # from the cache, checked again
    with pytest.raises(ArchiveUnverified, match="does not match its verified index"):
        python_image.fetch_debs([bad], archive, tmp_path)


# --- the image's bytes -------------------------------------------------------------------------------


def test_the_image_configuration_depends_on_the_lock_only(settings):
    package_set = PackageSet("amd64", 1796525669, (locked("libc6", "2.36-9+deb12u10"),))
    first = python_image.image_config(settings, platforms.AMD64, package_set, "a" * 64)
    assert first == python_image.image_config(settings, platforms.AMD64, package_set, "a" * 64)
    config = json.loads(first)
    assert config["created"] == "2026-12-06T02:54:29Z" == config["history"][0]["created"]
    assert config["config"]["Labels"][python_image.LABEL_EPOCH] == "1796525669"
    assert config["config"]["Labels"][python_image.LABEL_DEBIAN_LOCK] == package_set.digest
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}
    arm64 = json.loads(python_image.image_config(settings, platforms.ARM64, package_set, "a" * 64))
    assert (arm64["architecture"], arm64["variant"]) == ("arm64", "v8")


def test_the_layer_tar_does_not_depend_on_when_or_in_what_order_files_were_written(tmp_path):
    epoch = 1796525669
    tars = []
    for attempt, order in enumerate((["b", "a/x"], ["a/x", "b"])):
        rootfs = tmp_path / f"rootfs{attempt}"
        for name in order:
            path = rootfs / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)  # written now: newer than the epoch, so clamped to it
        target = tmp_path / f"layer{attempt}.tar"
        python_image.layer_tar(rootfs, target, epoch)
        tars.append(target.read_bytes())
    assert tars[0] == tars[1]
    with tarfile.open(tmp_path / "layer0.tar") as layer:
        assert [(m.name, m.mtime) for m in layer.getmembers()] == [(".", epoch), ("./a", epoch), ("./a/x", epoch),
                                                                   ("./b", epoch)]
