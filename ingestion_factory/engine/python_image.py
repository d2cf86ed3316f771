"""The Python runtime image built from Debian packages, exactly those of images/python/debian.lock.

`inv python-image --refresh` resolves the package set (engine/debian_resolve.py) from the verified
Packages indexes of the suite, its -updates and its -security suite, and writes it to the lock with each
.deb's SHA-256. `inv python-image` downloads exactly those .debs through the same verified indexes,
checks each against the lock, and installs them with mmdebstrap from a local repository holding only
them. The root filesystem becomes one layer tar with every time clamped to the lock's SOURCE_DATE_EPOCH,
and `docker load` takes it with an image configuration written here (its `created` is that epoch too):
the image ID is the SHA-256 of that configuration, so the same lock gives the same image ID, on any
machine, as long as the archive serves the locked versions. The image's apt sources name the three
suites, so the Dockerfiles' apt-get steps see the fixes too.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from .. import platforms
from ..errors import ConfigError, FactoryError
from ..files import write_atomically
from ..model import debian_lock
from ..model.debian_lock import DebianLock, LockedPackage, PackageSet
from ..model.names import python_image_ref
from ..model.plan import ImageInfo
from ..platforms import Platform
from ..settings import Settings
from . import debian_archive, debian_resolve
from .docker_engine import ContainerFailed, DockerEngine, Engine

# No python3-pip (nor the setuptools and wheel it pulls in): no image can install packages at run time.
# python3-venv stays here for build stages and the bench's seed build (ensurepip); every base purges it
# with the pip wheel it brings (images/base/Dockerfile).
PACKAGES = ("python3", "python3-venv", "ca-certificates", "debian-archive-keyring")
# dpkg's path filters, as Docker Hub's Debian slim images and Ubuntu minimal have them: documentation,
# manual pages, translations and leap-second time zones (tzdata's right/) are never unpacked, now or by a
# later apt-get in a build (a connector's os_packages); each package's copyright notice stays. dpkg still
# lists the files as the package's, so its database (and the SBOM read from it) stays truthful.
# The last rule a path matches decides; `*` matches `/` too.
PATH_FILTERS = (
    ("exclude", "/usr/share/doc/*"),
    ("include", "/usr/share/doc/*/copyright"),
    ("exclude", "/usr/share/man/*"),
    ("exclude", "/usr/share/info/*"),
    ("exclude", "/usr/share/groff/*"),
    ("exclude", "/usr/share/lintian/*"),
    ("exclude", "/usr/share/linda/*"),
    ("exclude", "/usr/share/locale/*"),
    ("exclude", "/usr/share/zoneinfo/right/*"),
)
DPKG_FILTERS = "etc/dpkg/dpkg.cfg.d/ingestion-factory-excludes"
# Merged /usr as debootstrap and Docker Hub's Debian images make it: directory symlinks (/bin -> usr/bin)
# set up before the first package, and usr-is-merged, which only checks them. Without it apt satisfies
# init-system-helpers' `usrmerge | usr-is-merged` with usrmerge, which converts the system at install
# time and brings perl (8 more packages, 48 MB).
MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh"
MERGED_USR = ("usr-is-merged",)
# Left out of the image too: apt's downloads and indexes, the previous copies dpkg and debconf keep of
# their databases, the logs of the build itself, and what mmdebstrap copies from the machine it runs on
# (Docker provides a container's resolv.conf and hostname; the build's own apt source is replaced).
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists")
LEFTOVERS = ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/log/*.log", "var/log/apt/*",
             "var/cache/ldconfig/aux-cache", "etc/resolv.conf", "etc/hostname", "etc/apt/sources.list")
LABEL_BUILT_BY = "io.ingestion-factory.python-image"
# What the image was made from. An image this tool built from another recipe is rebuilt by the next
# `inv python-image` (and the set-up scripts), so a machine never keeps, say, pip after the recipe dropped it.
LABEL_RECIPE = "io.ingestion-factory.python-image-recipe"
# The digest of the lock's package set the image holds (PackageSet.digest): another set is rebuilt.
LABEL_DEBIAN_LOCK = "io.ingestion-factory.debian-lock"
LABEL_EPOCH = "io.ingestion-factory.source-date-epoch"
# Bump when the build changes what goes into the image (PACKAGES, the filters, what is pruned and the
# suite are part of the recipe already).
RECIPE_REVISION = 4
SOURCES = "etc/apt/sources.list.d/debian.sources"
DPKG_STATUS = "/var/lib/dpkg/status"
MMDEBSTRAP_TIMEOUT_S = 1800  # under QEMU, installing ~130 packages takes minutes
DOWNLOAD_JOBS = 4
REFRESH_COMMAND = "inv python-image --refresh"
ENV = ("LANG=C.UTF-8", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")

Echo = Callable[[str], object]  # where progress lines go; the cli passes its own


def _silent(line: str) -> None:
    """The default echo: the library never prints."""


def recipe(settings: Settings) -> str:
    """A short digest of what `inv python-image` puts into the image, besides the locked packages."""
    text = json.dumps({"revision": RECIPE_REVISION, "packages": PACKAGES, "path_filters": PATH_FILTERS,
                       "prune": PRUNE, "leftovers": LEFTOVERS, "suite": settings.debian_suite}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lock_inputs(settings: Settings) -> str:
    """What the lock's package sets are resolved from: another suite or package list makes it stale."""
    text = json.dumps({"suite": settings.debian_suite, "packages": PACKAGES, "roots": "minbase",
                       "merged_usr": MERGED_USR}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lock_path(settings: Settings) -> Path:
    return settings.root / debian_lock.LOCK_PATH


# --- the lock ---------------------------------------------------------------------------------------


def locked_set(settings: Settings, platform: Platform, lock: DebianLock | None = None) -> PackageSet:
    """The package set the lock holds for this platform; ConfigError (exit 2) when it has none or is stale."""
    lock = lock or debian_lock.read(lock_path(settings))
    if lock is None:
        raise ConfigError(f"{debian_lock.LOCK_PATH} is missing: the Python image's Debian packages are not locked",
                          f"write it: {REFRESH_COMMAND} (then commit it)")
    if lock.inputs != lock_inputs(settings):
        raise ConfigError(f"{debian_lock.LOCK_PATH} was resolved for other packages or another suite than "
                          f"{settings.debian_suite} with {', '.join(PACKAGES)}",
                          f"rewrite it: {REFRESH_COMMAND} (then commit it)")
    package_set = lock.for_architecture(platform.debian)
    if package_set is None:
        raise ConfigError(f"{debian_lock.LOCK_PATH} has no packages for {platform.debian}",
                          f"add them: {REFRESH_COMMAND} --platform {platform.name}")
    return package_set


def resolve_set(settings: Settings, archive: debian_archive.Archive, architecture: str) -> PackageSet:
    """The package set the suites give today; its SOURCE_DATE_EPOCH is the newest of their Release dates."""
    binaries = archive.binary_packages(architecture)
    roots = [*debian_resolve.minbase_roots(binaries, settings.debian_suite), *MERGED_USR, *PACKAGES]
    resolved = debian_resolve.resolve(binaries, roots, architecture)
    epoch = max(archive.release_date(suite) for suite in archive.suites)
    return PackageSet(architecture, epoch, tuple(LockedPackage(p.name, p.version, p.architecture, p.suite, p.sha256)
                                                  for p in resolved))


def lock_header(settings: Settings) -> tuple[str, ...]:
    names = [suite.name for suite in debian_archive.suites(settings)]
    return ("The Debian packages of the Python image: `inv python-image` installs exactly these.",
            f"Written by `{REFRESH_COMMAND}` from the verified Packages indexes of {', '.join(names)}",
            f"(every Essential and Priority: required package of {settings.debian_suite}, apt, "
            f"{', '.join(MERGED_USR + PACKAGES)}, and their dependencies).",
            "Each line: name version architecture suite sha256 (of the .deb, checked by the build).",
            "source-date-epoch: every time in the image (the newest Release date when the set was resolved).")


def changes(old: PackageSet | None, new: PackageSet) -> list[str]:
    """What a refresh moves, one entry per package: `libc6 2.36-9+deb12u9 -> 2.36-9+deb12u10`, `+ x 1`, `- y 2`."""
    before = {p.name: p for p in old.packages} if old else {}
    after = {p.name: p for p in new.packages}
    moved = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            moved.append(f"+ {name} {after[name].version}")
        elif name not in after:
            moved.append(f"- {name} {before[name].version}")
        elif before[name] != after[name]:
            moved.append(f"{name} {before[name].version} -> {after[name].version}")
    return moved


class NotServed(FactoryError):
    """The archive no longer has a locked version (the suites moved on): refresh the lock."""


def served(package_set: PackageSet, archive: debian_archive.Archive) -> list[debian_archive.BinaryPackage]:
    """The archive's entry for every locked package, its SHA-256 the lock's (from the verified indexes)."""
    binaries = archive.binary_packages(package_set.architecture)
    found, missing = [], []
    for locked in package_set.packages:
        entry = next((p for p in binaries.get(locked.name, ())
                      if p.version == locked.version and p.architecture == locked.architecture), None)
        if entry is None:
            missing.append(locked)
        elif entry.sha256 != locked.sha256:
            raise debian_archive.ArchiveUnverified(
                f"{locked} has SHA-256 {entry.sha256[:16]}... in {entry.suite}'s verified index, but "
                f"{locked.sha256[:16]}... in {debian_lock.LOCK_PATH}",
                "the archive republished the same version with other contents: check the mirror, then "
                f"{REFRESH_COMMAND}")
        else:
            found.append(entry)
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        suites = ", ".join(s.name for s in archive.suites)
        raise NotServed(f"{len(missing)} locked Debian package version(s) are no longer served by {suites}: {shown}",
                        f"lock the versions the suites serve now: {REFRESH_COMMAND} (then commit "
                        f"{debian_lock.LOCK_PATH})")
    return found


def fetch_debs(packages: list[debian_archive.BinaryPackage], archive: debian_archive.Archive,
               cache_dir: Path) -> list[Path]:
    """Each .deb from the pool, checked against its SHA-256; kept in cache_dir by that hash."""
    cache_dir.mkdir(parents=True, exist_ok=True)

    def one(package: debian_archive.BinaryPackage) -> Path:
        path = cache_dir / f"{package.sha256}.deb"
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == package.sha256:
            return path
        url = archive.package_url(package)
        data = archive.fetch(url)
        digest = hashlib.sha256(data).hexdigest()
        if digest != package.sha256 or len(data) != package.size:
            raise debian_archive.ArchiveUnverified(
                f"{url} does not match its verified index (sha256 {digest[:16]}..., expected "
                f"{package.sha256[:16]}...)", "the mirror is being updated or was tampered with; try again later")
        write_atomically(path, data)
        return path

    with ThreadPoolExecutor(max_workers=DOWNLOAD_JOBS, thread_name_prefix="deb") as pool:
        return list(pool.map(one, packages))


def write_repository(directory: Path, packages: list[debian_archive.BinaryPackage], files: list[Path]) -> None:
    """A flat apt repository (Packages beside the .debs) holding exactly these packages: the only source
    mmdebstrap installs from. Each paragraph is the .deb's own control file plus where and what it is."""
    directory.mkdir(parents=True)
    paragraphs = []
    for package, source in zip(packages, files, strict=True):
        name = f"{package.name}_{package.version.replace(':', '%3a')}_{package.architecture}.deb"
        try:
            os.link(source, directory / name)
        except OSError:  # another filesystem than the cache's
            shutil.copyfile(source, directory / name)
        control = subprocess.run(["dpkg-deb", "--field", str(directory / name)], capture_output=True, text=True,
                                 check=True).stdout.rstrip("\n")
        paragraphs.append(f"{control}\nFilename: ./{name}\nSize: {package.size}\nSHA256: {package.sha256}\n")
    (directory / "Packages").write_text("\n".join(paragraphs))


# --- the image --------------------------------------------------------------------------------------


def stale_reason(labels: dict[str, str], settings: Settings, package_set: PackageSet | None = None) -> str | None:
    """Why an existing Python image must be rebuilt, or None. An image this tool did not build (pulled,
    or the user's own) is never replaced."""
    if LABEL_BUILT_BY not in labels:
        return None
    if labels.get(LABEL_RECIPE) != recipe(settings):
        return "it was built by an earlier recipe of `inv python-image`"
    if package_set is not None and labels.get(LABEL_DEBIAN_LOCK) != package_set.digest:
        return f"it was built from other packages than {debian_lock.LOCK_PATH} holds for {package_set.architecture}"
    return None


def status(settings: Settings, platform: Platform = platforms.DEFAULT, store: Engine | None = None) -> str:
    """"missing", "stale: <why>" or "ok": what the set-up scripts ask before they build."""
    existing = (store or DockerEngine()).inspect(python_image_ref(settings, platform))
    if existing is None:
        return "missing"
    if LABEL_BUILT_BY not in existing.labels:
        return "ok"  # pulled, or the user's own: never replaced
    try:
        package_set = locked_set(settings, platform)
    except ConfigError as error:  # `inv python-image` then says what to do about the lock
        return f"stale: {error.message}"
    reason = stale_reason(existing.labels, settings, package_set)
    return f"stale: {reason}" if reason else "ok"


def _kept(existing: ImageInfo | None, ref: str, settings: Settings, package_set: PackageSet, force: bool,
          echo: Echo) -> bool:
    """Whether the existing image stays (and says so), or why it is rebuilt."""
    if existing is None or force:
        return False
    reason = stale_reason(existing.labels, settings, package_set)
    if reason is None:
        echo(f"{ref} is already present ({existing.id[7:19]}); use --force to rebuild it.")
        return True
    echo(f"{ref} ({existing.id[7:19]}): {reason}; rebuilding it.")
    return False


def build_all(settings: Settings, *, force: bool = False, echo: Echo = _silent) -> list[str]:
    """The Python image of every configured platform (`inv python-image --platform ...`)."""
    targets = settings.target_platforms
    platforms.require_emulation(targets)
    return [build(settings, force=force, echo=echo, platform=target) for target in targets]


def refresh_all(settings: Settings, *, echo: Echo = _silent, archive: debian_archive.Archive | None = None,
                rebuild: Callable[..., str] | None = None) -> list[str]:
    """`inv python-image --refresh`: resolve the package sets from the suites as they are now, rewrite the
    lock when they moved (every architecture it holds, and the target platforms'), then build each target
    platform's image from the lock (a no-op when it is current)."""
    targets = settings.target_platforms
    platforms.require_emulation(targets)
    archive = archive or debian_archive.Archive(settings)
    rebuild = rebuild or build
    path = lock_path(settings)
    lock = debian_lock.read(path)
    inputs = lock_inputs(settings)
    current = lock if lock is not None and lock.inputs == inputs else None
    # Every architecture the lock holds, even one resolved from other inputs: a refresh never drops one.
    architectures = sorted({t.debian for t in targets} | {s.architecture for s in (lock.sets if lock else ())})
    updated = current or DebianLock(inputs, (), lock_header(settings))
    suites = ", ".join(s.name for s in archive.suites)
    for architecture in architectures:
        old = lock.for_architecture(architecture) if lock else None  # what the changes are shown against
        new = resolve_set(settings, archive, architecture)
        if current is not None and old is not None and old.packages == new.packages:
            echo(f"{debian_lock.LOCK_PATH} [{architecture}] is current with {suites} "
                 f"({len(old.packages)} packages).")
            continue
        moved = changes(old, new)
        shown = "; ".join(moved[:8]) + (f" and {len(moved) - 8} more" if len(moved) > 8 else "")
        echo(f"{debian_lock.LOCK_PATH} [{architecture}]: {len(moved)} change(s): {shown}")
        updated = updated.with_set(new, inputs)
    if updated != lock:
        updated = DebianLock(updated.inputs, updated.sets, lock_header(settings))
        write_atomically(path, updated.render())
        echo(f"wrote {debian_lock.LOCK_PATH}: commit it.")
    return [rebuild(settings, echo=echo, platform=target, archive=archive) for target in targets]


def build(settings: Settings, *, force: bool = False, echo: Echo = _silent, platform: Platform = platforms.DEFAULT,
          archive: debian_archive.Archive | None = None) -> str:
    """Build and tag the Python image of the lock's packages unless it exists; returns its image ID."""
    ref = python_image_ref(settings, platform)
    store = DockerEngine()
    existing = store.inspect(ref)
    if existing is not None and not force and LABEL_BUILT_BY not in existing.labels:
        echo(f"{ref} is already present ({existing.id[7:19]}); use --force to rebuild it.")
        return existing.id
    package_set = locked_set(settings, platform)
    if existing is not None and _kept(existing, ref, settings, package_set, force, echo):
        return existing.id
    if not platform.is_default:
        platforms.require_emulation([platform])
    mmdebstrap = _require_mmdebstrap()
    if not platform.is_default and not shutil.which("arch-test"):  # mmdebstrap checks QEMU with it
        raise ConfigError(f"mmdebstrap needs arch-test to lay out a {platform.debian} root file system here",
                          "install it: `apt-get install arch-test` (scripts/provision.sh does)")
    started = time.monotonic()
    archive = archive or debian_archive.Archive(settings)
    packages = served(package_set, archive)
    echo(f"downloading {len(packages)} Debian packages of {debian_lock.LOCK_PATH} [{package_set.architecture}]...")
    files = fetch_debs(packages, archive, archive.cache_dir / "debs")
    with tempfile.TemporaryDirectory(prefix="factory-python-", dir=os.environ.get("FACTORY_TMPDIR")) as scratch_dir:
        scratch = Path(scratch_dir)
        write_repository(scratch / "repo", packages, files)
        rootfs = scratch / "rootfs"
        slow = " (under QEMU: several minutes)" if not platform.is_default else " (about 40 s)"
        echo(f"mmdebstrap {len(packages)} packages for {platform.debian}{slow}...")
        _mmdebstrap(settings, platform, package_set, scratch, rootfs, mmdebstrap)
        _finish_rootfs(settings, rootfs)
        layer = scratch / "layer.tar"
        layer_tar(rootfs, layer, package_set.source_date_epoch)
        shutil.rmtree(rootfs, ignore_errors=True)
        config = image_config(settings, platform, package_set, _sha256_file(layer))
        echo(f"loading it, then checking that it runs Python, before it is tagged {ref}...")
        image_id = _load(store, scratch / "image.tar", config, layer)
    image = store.inspect(image_id)
    if image is None:
        raise FactoryError(f"the engine did not keep the loaded image {image_id[7:19]}")
    version = _python_version(store, image.id)  # untagged until it runs: a broken build leaves the old tag alone
    repository, _, tag = ref.rpartition(":")
    store.tag(image.id, repository, tag)
    echo(f"{ref}: Python {version} ({platform.name}), {image.id[7:19]}, {image.size / 1e6:.0f} MB, "
         f"{time.monotonic() - started:.0f}s")
    return image.id


def _require_mmdebstrap() -> str:
    mmdebstrap = shutil.which("mmdebstrap")
    if not mmdebstrap:
        raise ConfigError("mmdebstrap is not installed", "install it: `apt-get install mmdebstrap`")
    if not Path(MERGED_USR_HOOK).is_file():
        raise ConfigError(f"mmdebstrap has no {MERGED_USR_HOOK} (it came with mmdebstrap 1.0)",
                          "install mmdebstrap 1.0 or newer (Debian bookworm has 1.3.5)")
    if os.geteuid() != 0:
        raise ConfigError("mmdebstrap needs root here", "run `sudo inv python-image`")
    return mmdebstrap


def mmdebstrap_command(settings: Settings, platform: Platform, package_set: PackageSet, repository: Path,
                       filters: Path, rootfs: Path, mmdebstrap: str = "mmdebstrap") -> list[str]:
    """Exactly the locked packages (the `custom` variant installs what --include names and nothing else),
    from a repository that holds only them, with dpkg's path filters in place before the first unpack."""
    return [mmdebstrap, "--mode=root", "--variant=custom", "--format=directory", f"--architectures={platform.debian}",
            "--include=" + ",".join(p.name for p in package_set.packages),
            f"--setup-hook={MERGED_USR_HOOK}",
            '--setup-hook=mkdir -p "$1/etc/dpkg/dpkg.cfg.d"',
            f"--setup-hook=upload {filters} /{DPKG_FILTERS}",
            settings.debian_suite, str(rootfs), f"deb [trusted=yes] copy://{repository} ./"]


def _mmdebstrap(settings: Settings, platform: Platform, package_set: PackageSet, scratch: Path, rootfs: Path, mmdebstrap: str) -> None:
    filters = scratch / "dpkg-filters"
    filters.write_text(dpkg_filters())
    # The repository is trusted because every .deb in it was checked against the lock and the verified index.
    command = mmdebstrap_command(settings, platform, package_set, scratch / "repo", filters, rootfs, mmdebstrap)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(package_set.source_date_epoch), "TMPDIR": str(scratch)}
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=MMDEBSTRAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FactoryError(f"mmdebstrap for {platform.debian} did not finish within {MMDEBSTRAP_TIMEOUT_S} s") from None
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-12:])
        emulation = "" if platform.is_default else f"; check that QEMU works ({platforms.EMULATION_HINT})"
        raise FactoryError(f"mmdebstrap for {platform.debian} failed (exit {completed.returncode}):\n{tail}",
                           f"the locked set does not install{emulation}: rewrite the lock ({REFRESH_COMMAND})")


def _finish_rootfs(settings: Settings, rootfs: Path) -> None:
    _prune_and_link(rootfs)
    sources = rootfs / SOURCES
    _directory(sources.parent)
    sources.write_text(debian_archive.apt_sources(settings))
    sources.chmod(0o644)  # not the builder's umask: the mode is in the layer, and so in the image ID
    for device in (rootfs / "dev").iterdir():  # the engine gives containers their own /dev
        device.unlink() if not device.is_dir() or device.is_symlink() else shutil.rmtree(device)


def layer_tar(rootfs: Path, target: Path, epoch: int) -> None:
    """The root filesystem as one tar whose bytes depend on its contents only: names sorted, owners by
    number, no times but modification times, each clamped to `epoch` (files written at build time)."""
    completed = subprocess.run(["tar", "--sort=name", "--format=gnu", "--numeric-owner", f"--mtime=@{epoch}",
                                "--clamp-mtime", "-C", str(rootfs), "-cf", str(target), "."],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise FactoryError(f"packing the root filesystem failed: {completed.stderr.strip()}")


def image_config(settings: Settings, platform: Platform, package_set: PackageSet, layer_digest: str) -> bytes:
    """The image configuration, every time in it the lock's epoch: its SHA-256 is the image ID."""
    created = datetime.fromtimestamp(package_set.source_date_epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {LABEL_BUILT_BY: f"mmdebstrap-{settings.debian_suite}", LABEL_RECIPE: recipe(settings),
              LABEL_DEBIAN_LOCK: package_set.digest, LABEL_EPOCH: str(package_set.source_date_epoch),
              "org.opencontainers.image.created": created}
    config = {
        "architecture": platform.architecture, "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "created": created,
        "config": {"Env": list(ENV), "Cmd": ["python3"], "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": created, "created_by": f"inv python-image: {debian_lock.LOCK_PATH} "
                                                      f"[{package_set.architecture}] by mmdebstrap"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load(store: Engine, archive: Path, config: bytes, layer: Path) -> str:
    """`docker load` of a one-layer image archive, untagged; returns the image ID, sha256 of `config`."""
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_digest}.json", "RepoTags": None,
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as bundle:
        for name, data in ((f"{config_digest}.json", config), ("manifest.json", manifest)):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            bundle.addfile(member, io.BytesIO(data))
        bundle.add(layer, "layer/layer.tar")
    layer.unlink()
    try:
        with archive.open("rb") as stream:
            chunks = iter(lambda: stream.read(1 << 20), b"")
            problems = [event["error"] for event in store.load(chunks)
                        if isinstance(event, dict) and event.get("error")]
    except Exception as exc:
        problems = [str(exc)]
    if problems:
        raise FactoryError(f"loading the image into the engine failed: {problems[0]}")
    return f"sha256:{config_digest}"


def installed_packages(engine: Engine, image: str) -> dict[str, tuple[str, str]]:
    """The image's installed Debian packages, name -> (version, architecture), from its dpkg database."""
    status = engine.read_files(image, [DPKG_STATUS])[DPKG_STATUS]
    if status is None:
        raise FactoryError(f"{image} has no {DPKG_STATUS}: it is not a Debian image")
    return debian_archive.dpkg_status(status.decode("utf-8", errors="replace"))


def dpkg_filters() -> str:
    """PATH_FILTERS as a dpkg configuration file (/etc/dpkg/dpkg.cfg.d/)."""
    return "".join(f"path-{kind}={pattern}\n" for kind, pattern in PATH_FILTERS)


def filtered_out(path: str) -> bool:
    """Whether dpkg leaves out this absolute path under PATH_FILTERS (the last matching rule decides)."""
    verdict = False
    for kind, pattern in PATH_FILTERS:
        if fnmatch.fnmatchcase(path, pattern):
            verdict = kind == "exclude"
    return verdict


def prune_filtered(rootfs: Path) -> int:
    """Remove what mmdebstrap unpacked before the filters applied (it extracts the packages itself before
    dpkg installs them); returns the bytes freed."""
    freed = 0
    roots = {pattern.split("*", 1)[0].rstrip("/") for kind, pattern in PATH_FILTERS if kind == "exclude"}
    for root in sorted(roots):
        top = rootfs / root.lstrip("/")
        for directory, dirs, files in os.walk(top, topdown=False):
            for name in files:
                path = Path(directory) / name
                if filtered_out("/" + str(path.relative_to(rootfs))):
                    freed += path.lstat().st_size
                    path.unlink()
            for name in dirs:
                path = Path(directory) / name
                if path.is_symlink():
                    if filtered_out("/" + str(path.relative_to(rootfs))):
                        path.unlink()
                elif not any(path.iterdir()):
                    path.rmdir()
    return freed


def _directory(path: Path) -> None:
    """A directory of the image, made with mode 0755 whatever the builder's umask (its parents too)."""
    if not path.is_dir():
        _directory(path.parent)
        path.mkdir()
    path.chmod(0o755)


def _prune_and_link(rootfs: Path) -> None:
    prune_filtered(rootfs)
    for relative in PRUNE:
        shutil.rmtree(rootfs / relative, ignore_errors=True)
        _directory(rootfs / relative)
    for pattern in LEFTOVERS:
        for leftover in rootfs.glob(pattern):
            if leftover.is_file() or leftover.is_symlink():
                leftover.unlink()
    if not (rootfs / "usr/bin/python3").exists():
        raise FactoryError("mmdebstrap finished but usr/bin/python3 is missing from the root filesystem")
    _directory(rootfs / "usr/local/bin")
    link = rootfs / "usr/local/bin/python"
    if not link.exists():
        link.symlink_to("/usr/bin/python3")


def _python_version(engine: Engine, image_id: str) -> str:
    """Prove the image runs Python with venv and pip's bootstrap, as the base Dockerfile needs."""
    try:
        output = engine.run_output(image_id, ["python3", "-c",
                                              "import sys, venv, ensurepip; print(sys.version.split()[0])"])
    except ContainerFailed as failure:
        said = failure.stderr.decode(errors="replace").strip() or failure.message
        raise FactoryError(f"the new Python image does not run Python: {said}") from None
    return output.decode(errors="replace").strip()
