"""The Python runtime image built from Debian packages, for machines that cannot reach Docker Hub.

debootstrap installs a minimal Debian with python3 and venv (no pip) into a directory, checking the
suite's Release signature against the archive keyring; apt inside it then upgrades to the suite's
-updates and -security suites, which its sources keep naming (so the Dockerfiles' apt-get steps see
the fixes too). The directory is imported as an image tagged with exactly the name the base
Dockerfile starts FROM. `--refresh` rebuilds it only when the archive has newer packages.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .. import platforms
from ..errors import ConfigError, FactoryError
from ..model.names import python_image_ref
from ..model.plan import ImageInfo
from ..platforms import Platform
from ..settings import Settings
from . import buildkit, debian_archive
from .docker_engine import DockerEngine, Engine
from .verify import DockerClient

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
# Left out of the image too: apt's downloads and indexes, the previous copies dpkg and debconf keep of
# their databases, and the logs of the build itself.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists")
LEFTOVERS = ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/log/*.log", "var/log/apt/*")
LABEL_BUILT_BY = "io.ingestion-factory.python-image"
# What the image was made from. An image this tool built from another recipe is rebuilt by the next
# `inv python-image` (and the set-up scripts), so a machine never keeps, say, pip after the recipe dropped it.
LABEL_RECIPE = "io.ingestion-factory.python-image-recipe"
# Bump when _debootstrap or _prune_and_link change what goes into the image (PACKAGES, the filters, what
# is pruned and the suite are part of the recipe already).
RECIPE_REVISION = 2
SOURCES = "etc/apt/sources.list.d/debian.sources"
DPKG_STATUS = "/var/lib/dpkg/status"
APT_TIMEOUT_S = 1800  # under QEMU an upgrade of a few dozen packages takes minutes

Echo = Callable[[str], object]  # where progress lines go; the cli passes its own


def _silent(line: str) -> None:
    """The default echo: the library never prints."""


def recipe(settings: Settings) -> str:
    """A short digest of what `inv python-image` puts into the image."""
    text = json.dumps({"revision": RECIPE_REVISION, "packages": PACKAGES, "path_filters": PATH_FILTERS,
                       "prune": PRUNE, "leftovers": LEFTOVERS, "suite": settings.debian_suite}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stale_reason(labels: dict[str, str], settings: Settings) -> str | None:
    """Why an existing Python image must be rebuilt, or None. An image this tool did not build (pulled,
    or the user's own) is never replaced."""
    if LABEL_BUILT_BY not in labels:
        return None
    if labels.get(LABEL_RECIPE) != recipe(settings):
        return "it was built by an earlier recipe of `inv python-image`"
    return None


def status(settings: Settings, platform: Platform = platforms.DEFAULT, store: Engine | None = None) -> str:
    """"missing", "stale: <why>" or "ok": what the set-up scripts ask before they build."""
    existing = (store or DockerEngine()).inspect(python_image_ref(settings, platform))
    if existing is None:
        return "missing"
    reason = stale_reason(existing.labels, settings)
    return f"stale: {reason}" if reason else "ok"


def _kept(existing: ImageInfo, ref: str, settings: Settings, force: bool, echo: Echo) -> bool:
    """Whether the existing image stays (and says so), or why it is rebuilt."""
    if force:
        return False
    reason = stale_reason(existing.labels, settings)
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
                store: Engine | None = None,
                installed: Callable[[Engine, str], dict[str, tuple[str, str]]] | None = None,
                rebuild: Callable[..., str] | None = None) -> list[str]:
    """`inv python-image --refresh`: rebuild each platform's Python image only when the archive has newer
    versions of its Debian packages (or it is missing); otherwise change nothing."""
    targets = settings.target_platforms
    platforms.require_emulation(targets)
    archive = archive or debian_archive.Archive(settings)
    store = store or DockerEngine()
    installed = installed or installed_packages  # (engine, image) -> name -> (version, architecture)
    rebuild = rebuild or build
    built: list[str] = []
    for target in targets:
        ref = python_image_ref(settings, target)
        existing = store.inspect(ref)
        if existing is None:
            echo(f"{ref} is missing: building it.")
            built.append(rebuild(settings, echo=echo, platform=target))
            continue
        reason = stale_reason(existing.labels, settings)
        if reason:
            echo(f"{ref} ({existing.id[7:19]}): {reason}; rebuilding it.")
            built.append(rebuild(settings, force=True, echo=echo, platform=target))
            continue
        updates = pending_updates(installed(store, existing.id), target, archive)
        if not updates:
            echo(f"{ref} is up to date with {', '.join(s.name for s in archive.suites)} ({existing.id[7:19]}).")
            built.append(existing.id)
            continue
        shown = ", ".join(f"{u.name} {u.installed} -> {u.fixed}" for u in updates[:5])
        more = f" and {len(updates) - 5} more" if len(updates) > 5 else ""
        echo(f"{ref}: {len(updates)} Debian package(s) have updates ({shown}{more}): rebuilding it.")
        built.append(rebuild(settings, force=True, echo=echo, platform=target))
    return built


def pending_updates(installed: dict[str, tuple[str, str]], platform: Platform,
                    archive: debian_archive.Archive) -> list[debian_archive.DebianUpdate]:
    """The installed Debian packages (name -> (version, architecture)) the archive has newer versions of."""
    grouped = debian_archive.by_architecture(((name, version, arch) for name, (version, arch) in installed.items()),
                                             platform.debian)
    return [update for arch, packages in grouped.items() for update in archive.updates(packages, arch)]


def installed_packages(engine: Engine, image: str) -> dict[str, tuple[str, str]]:
    """The image's installed Debian packages, name -> (version, architecture), from its dpkg database."""
    status = engine.read_files(image, [DPKG_STATUS])[DPKG_STATUS]
    if status is None:
        raise FactoryError(f"{image} has no {DPKG_STATUS}: it is not a Debian image")
    return debian_archive.dpkg_status(status.decode("utf-8", errors="replace"))


def build(settings: Settings, *, force: bool = False, echo: Echo = _silent, platform: Platform = platforms.DEFAULT) -> str:
    """Build and tag the Python image unless it exists; returns its image ID."""
    if not platform.is_default:
        return _build_foreign(settings, platform, force=force, echo=echo)
    store = DockerEngine()
    existing = store.inspect(settings.python_image)
    if existing is not None and _kept(existing, settings.python_image, settings, force, echo):
        return existing.id
    debootstrap = _require_debootstrap()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="factory-python-", dir=os.environ.get("FACTORY_TMPDIR")) as scratch:
        rootfs = Path(scratch) / "rootfs"
        _debootstrap(settings, platforms.DEFAULT, rootfs, debootstrap, echo)
        _prune_and_link(rootfs)
        echo(f"importing as {settings.python_image}...")
        changes = [
            "ENV LANG=C.UTF-8",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {LABEL_BUILT_BY}=debootstrap-{settings.debian_suite}",
            f"LABEL {LABEL_RECIPE}={recipe(settings)}",
            'CMD ["python3"]',
        ]
        repository, _, tag = settings.python_image.rpartition(":")
        if not repository or "/" in tag:  # "name" or "host:5000/name": no tag given
            repository, tag = settings.python_image, "latest"
        # The root filesystem streams from tar straight into the engine; nothing is staged on disk.
        # Leaving the Popen closes tar's stdout and waits for it, whether the import worked or not.
        with subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                              stdout=subprocess.PIPE) as tar:
            try:
                store.low.import_image(src=tar.stdout, repository=repository, tag=tag, changes=changes,
                                       stream_src=True)
            except Exception as exc:
                raise FactoryError(f"importing the root filesystem failed: {exc}") from None
    image = store.inspect(settings.python_image)
    if image is None:
        raise FactoryError(f"the engine did not keep the imported image {settings.python_image}")
    version = _python_version(store.sdk, image.id)
    echo(f"{settings.python_image}: Python {version}, {image.size / 1e6:.0f} MB, "
         f"{time.monotonic() - started:.0f}s")
    return image.id


def _require_debootstrap() -> str:
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise ConfigError("debootstrap is not installed", "install it: `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise ConfigError("debootstrap needs root", "run `sudo inv python-image`")
    return debootstrap


def _build_foreign(settings: Settings, platform: Platform, *, force: bool, echo: Echo) -> str:
    """The same Debian packages for another architecture: debootstrap runs its second stage under QEMU.

    `docker import --platform` records the host's architecture on this engine, so the root filesystem
    goes in through a BuildKit build FROM scratch, which records the platform it was asked for.
    """
    ref = python_image_ref(settings, platform)
    store = DockerEngine()
    existing = store.inspect(ref)
    if existing is not None and _kept(existing, ref, settings, force, echo):
        return existing.id
    platforms.require_emulation([platform])
    debootstrap = _require_debootstrap()
    cli = buildkit.find_cli()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="factory-python-", dir=os.environ.get("FACTORY_TMPDIR")) as scratch:
        rootfs = Path(scratch) / "rootfs"
        _debootstrap(settings, platform, rootfs, debootstrap, echo)
        _prune_and_link(rootfs)
        context = Path(scratch) / "context"
        context.mkdir()
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(context / "rootfs.tar"), "."],
                       check=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        (context / "Dockerfile").write_text("\n".join([
            "FROM scratch",
            "ADD rootfs.tar /",
            "ENV LANG=C.UTF-8",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {LABEL_BUILT_BY}=debootstrap-{settings.debian_suite}",
            f"LABEL {LABEL_RECIPE}={recipe(settings)}",
            'CMD ["python3"]',
        ]) + "\n")
        echo(f"importing as {ref} ({platform.name})...")
        done = subprocess.run([*cli.build_command(), "--platform", platform.name, "--tag", ref, str(context)],
                              capture_output=True, text=True, env=dict(os.environ, DOCKER_BUILDKIT="1"))
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
            raise FactoryError(f"importing the {platform.name} root filesystem failed:\n{tail}")
    image = store.inspect(ref)
    if image is None:
        raise FactoryError(f"the engine did not keep the imported image {ref}")
    if image.architecture and image.architecture != platform.architecture:
        raise FactoryError(f"{ref} was recorded as {image.architecture}, not {platform.architecture}")
    version = _python_version(store.sdk, image.id)
    echo(f"{ref}: Python {version} ({platform.name}), {image.size / 1e6:.0f} MB, "
         f"{time.monotonic() - started:.0f}s")
    return image.id


def debootstrap_command(settings: Settings, platform: Platform, rootfs: Path, debootstrap: str = "debootstrap",
                        keyring: Path | None = None) -> list[str]:
    """The suite from debian_mirror, its Release signature checked against the keyring (a bad one fails)."""
    return [debootstrap, *([f"--arch={platform.debian}"] if not platform.is_default else []),
            f"--keyring={keyring or settings.debian_keyring}", "--variant=minbase",
            f"--include={','.join(PACKAGES)}", settings.debian_suite, str(rootfs), settings.debian_mirror]


UPGRADE_SCRIPT = (
    # --error-on=any: a suite that fails its signature check (or cannot be read) stops the build.
    "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update --error-on=any; "
    "apt-get -y -o Dpkg::Options::=--force-confold upgrade; apt-get clean"
)


def _debootstrap(settings: Settings, platform: Platform, rootfs: Path, debootstrap: str, echo: Echo) -> None:
    """debootstrap the suite, then upgrade from all three suites with the image's own apt (under QEMU abroad)."""
    keyring = debian_archive.require_keyring(settings)
    arch = f" for {platform.debian}" if not platform.is_default else ""
    slow = " (under QEMU: about 5 minutes)" if not platform.is_default else " (about a minute)"
    echo(f"debootstrap {settings.debian_suite}{arch} with {', '.join(PACKAGES)}{slow}...")
    completed = subprocess.run(debootstrap_command(settings, platform, rootfs, debootstrap, keyring),
                               capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-10:])
        emulation = "" if platform.is_default else f" and QEMU works ({platforms.EMULATION_HINT})"
        raise FactoryError(f"debootstrap{arch} failed (exit {completed.returncode}):\n{tail}",
                           f"check that {settings.debian_mirror} is reachable, is signed by a key in "
                           f"{keyring}{emulation}, or set factory.debian_mirror / factory.debian_keyring")
    # Before the upgrade, so that the packages it installs honour the filters too.
    filters = rootfs / DPKG_FILTERS
    filters.parent.mkdir(parents=True, exist_ok=True)
    filters.write_text(dpkg_filters())
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    sources = rootfs / SOURCES
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(debian_archive.apt_sources(settings))
    echo(f"apt-get upgrade from {', '.join(s.name for s in debian_archive.suites(settings))}...")
    resolv = rootfs / "etc/resolv.conf"
    had_resolv = resolv.exists() or resolv.is_symlink()
    if not had_resolv and Path("/etc/resolv.conf").is_file():
        shutil.copy("/etc/resolv.conf", resolv)  # name resolution inside the chroot; not kept in the image
    try:
        completed = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", UPGRADE_SCRIPT], capture_output=True,
                                   text=True, timeout=APT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FactoryError(f"apt-get upgrade{arch} did not finish within {APT_TIMEOUT_S} s") from None
    finally:
        if not had_resolv:
            resolv.unlink(missing_ok=True)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-10:])
        raise FactoryError(f"apt-get update/upgrade from the -updates and -security suites failed "
                           f"(exit {completed.returncode}):\n{tail}",
                           f"check that {settings.debian_mirror} and {settings.debian_security_mirror} are "
                           f"reachable and signed by a key in the archive keyring")


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
    """Remove what debootstrap unpacked before the filters existed; returns the bytes freed."""
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


def _prune_and_link(rootfs: Path) -> None:
    prune_filtered(rootfs)
    for relative in PRUNE:
        shutil.rmtree(rootfs / relative, ignore_errors=True)
        (rootfs / relative).mkdir(parents=True, exist_ok=True)
    for pattern in LEFTOVERS:
        for leftover in rootfs.glob(pattern):
            if leftover.is_file() or leftover.is_symlink():
                leftover.unlink()
    if not (rootfs / "usr/bin/python3").exists():
        raise FactoryError("debootstrap finished but usr/bin/python3 is missing from the root filesystem")
    (rootfs / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    link = rootfs / "usr/local/bin/python"
    if not link.exists():
        link.symlink_to("/usr/bin/python3")


def _python_version(api: DockerClient, image_id: str) -> str:
    """Prove the image runs Python with venv and pip's bootstrap, as the base Dockerfile needs."""
    container = api.containers.create(image_id, ["python3", "-c",
                                                 "import sys, venv, ensurepip; print(sys.version.split()[0])"],
                                      network_disabled=True)
    try:
        container.start()
        status = container.wait(timeout=60)
        output: str = container.logs().decode(errors="replace").strip()
    finally:
        container.remove(force=True)
    if status.get("StatusCode") != 0:
        raise FactoryError(f"the new Python image does not run Python: {output}")
    return output
