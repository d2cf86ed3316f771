"""The Python runtime image built from Debian packages, for machines that cannot reach Docker Hub.

debootstrap installs a minimal Debian with python3, venv and pip into a
directory; the directory is imported as an image tagged with exactly the name
the base Dockerfile starts FROM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .. import platforms
from ..errors import ConfigError, FactoryError
from ..model.names import python_image_ref
from ..platforms import Platform
from ..settings import Settings
from . import buildkit
from .daemon import DockerImageStore

PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Left out of the image: documentation and caches no container reads.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt/archives",
         "var/lib/apt/lists")
LABEL_BUILT_BY = "io.ingestion-factory.python-image"


def build_all(settings: Settings, *, force: bool = False, echo=print) -> list[str]:
    """The Python image of every configured platform (`inv python-image --platform ...`)."""
    targets = settings.target_platforms
    platforms.require_emulation(targets)
    return [build(settings, force=force, echo=echo, platform=target) for target in targets]


def build(settings: Settings, *, force: bool = False, echo=print, platform: Platform = platforms.DEFAULT) -> str:
    """Build and tag the Python image unless it exists; returns its image ID."""
    if not platform.is_default:
        return _build_foreign(settings, platform, force=force, echo=echo)
    store = DockerImageStore()
    existing = store.inspect(settings.python_image)
    if existing and not force:
        echo(f"{settings.python_image} is already present ({existing.id[7:19]}); use --force to rebuild it.")
        return existing.id
    debootstrap = _require_debootstrap()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="factory-python-", dir=os.environ.get("FACTORY_TMPDIR")) as scratch:
        rootfs = Path(scratch) / "rootfs"
        echo(f"debootstrap {settings.debian_suite} with {', '.join(PACKAGES)} (about a minute)...")
        command = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
                   settings.debian_suite, str(rootfs), settings.debian_mirror]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-10:])
            raise FactoryError(f"debootstrap failed (exit {completed.returncode}):\n{tail}",
                               f"check that {settings.debian_mirror} is reachable, or set factory.debian_mirror")
        for relative in PRUNE:
            shutil.rmtree(rootfs / relative, ignore_errors=True)
            (rootfs / relative).mkdir(parents=True, exist_ok=True)
        python = rootfs / "usr/bin/python3"
        if not python.exists():
            raise FactoryError("debootstrap finished but usr/bin/python3 is missing from the root filesystem")
        # Official python images answer to `python` too; keep that promise.
        (rootfs / "usr/local/bin").mkdir(parents=True, exist_ok=True)
        link = rootfs / "usr/local/bin/python"
        if not link.exists():
            link.symlink_to("/usr/bin/python3")
        echo(f"importing as {settings.python_image}...")
        changes = [
            "ENV LANG=C.UTF-8",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {LABEL_BUILT_BY}=debootstrap-{settings.debian_suite}",
            'CMD ["python3"]',
        ]
        repository, _, tag = settings.python_image.rpartition(":")
        if not repository or "/" in tag:  # "name" or "host:5000/name": no tag given
            repository, tag = settings.python_image, "latest"
        # The root filesystem streams from tar straight into the engine; nothing is staged on disk.
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            store.api.api.import_image(src=tar.stdout, repository=repository, tag=tag, changes=changes,
                                       stream_src=True)
        except Exception as exc:
            raise FactoryError(f"importing the root filesystem failed: {exc}") from None
        finally:
            tar.stdout.close()
            tar.wait()
    image = store.inspect(settings.python_image)
    if image is None:
        raise FactoryError(f"the engine did not keep the imported image {settings.python_image}")
    version = _python_version(store.api, image.id)
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


def _build_foreign(settings: Settings, platform: Platform, *, force: bool, echo) -> str:
    """The same Debian packages for another architecture: debootstrap runs its second stage under QEMU.

    `docker import --platform` records the host's architecture on this engine, so the root filesystem
    goes in through a BuildKit build FROM scratch, which records the platform it was asked for.
    """
    ref = python_image_ref(settings, platform)
    store = DockerImageStore()
    existing = store.inspect(ref)
    if existing and not force:
        echo(f"{ref} is already present ({existing.id[7:19]}); use --force to rebuild it.")
        return existing.id
    platforms.require_emulation([platform])
    debootstrap = _require_debootstrap()
    cli = buildkit.find_cli()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="factory-python-", dir=os.environ.get("FACTORY_TMPDIR")) as scratch:
        rootfs = Path(scratch) / "rootfs"
        echo(f"debootstrap {settings.debian_suite} for {platform.debian} with {', '.join(PACKAGES)} "
             f"(under QEMU: about 5 minutes)...")
        command = [debootstrap, f"--arch={platform.debian}", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                   settings.debian_suite, str(rootfs), settings.debian_mirror]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-10:])
            raise FactoryError(f"debootstrap --arch={platform.debian} failed (exit {completed.returncode}):\n{tail}",
                               f"check that {settings.debian_mirror} is reachable and QEMU works "
                               f"({platforms.EMULATION_HINT})")
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
    version = _python_version(store.api, image.id)
    echo(f"{ref}: Python {version} ({platform.name}), {image.size / 1e6:.0f} MB, "
         f"{time.monotonic() - started:.0f}s")
    return image.id


def _prune_and_link(rootfs: Path) -> None:
    for relative in PRUNE:
        shutil.rmtree(rootfs / relative, ignore_errors=True)
        (rootfs / relative).mkdir(parents=True, exist_ok=True)
    if not (rootfs / "usr/bin/python3").exists():
        raise FactoryError("debootstrap finished but usr/bin/python3 is missing from the root filesystem")
    (rootfs / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    link = rootfs / "usr/local/bin/python"
    if not link.exists():
        link.symlink_to("/usr/bin/python3")


def _python_version(api, image_id: str) -> str:
    """Prove the image runs Python with venv and pip's bootstrap, as the base Dockerfile needs."""
    container = api.containers.create(image_id, ["python3", "-c",
                                                 "import sys, venv, ensurepip; print(sys.version.split()[0])"],
                                      network_disabled=True)
    try:
        container.start()
        status = container.wait(timeout=60)
        output = container.logs().decode(errors="replace").strip()
    finally:
        container.remove(force=True)
    if status.get("StatusCode") != 0:
        raise FactoryError(f"the new Python image does not run Python: {output}")
    return output
