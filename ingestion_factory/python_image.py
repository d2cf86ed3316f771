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

from .errors import ConfigError, FactoryError
from .settings import Settings

PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Left out of the image: documentation and caches no container reads.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt/archives",
         "var/lib/apt/lists")
LABEL_BUILT_BY = "io.ingestion-factory.python-image"


def build(settings: Settings, *, force: bool = False, echo=print) -> str:
    """Build and tag the Python image unless it exists; returns its image ID."""
    from .engine import DockerImageStore

    store = DockerImageStore()
    existing = store.inspect(settings.python_image)
    if existing and not force:
        echo(f"{settings.python_image} is already present ({existing.id[7:19]}); use --force to rebuild it.")
        return existing.id
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise ConfigError("debootstrap is not installed", "install it: `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise ConfigError("debootstrap needs root", "run `sudo inv python-image`")
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
