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
    from .buildkit import find_cli

    cli = find_cli().path
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
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        args = [cli, "import"] + [x for change in changes for x in ("--change", change)] + ["-", settings.python_image]
        imported = subprocess.run(args, stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise FactoryError(f"docker import failed: {imported.stderr.strip()}")
    image = store.inspect(settings.python_image)
    assert image is not None
    check = subprocess.run([cli, "run", "--rm", "--network=none", image.id, "python3", "-c",
                            "import sys, venv, ensurepip; print(sys.version.split()[0])"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise FactoryError(f"the new Python image does not run Python: {check.stderr.strip()}")
    echo(f"{settings.python_image}: Python {check.stdout.strip()}, {image.size / 1e6:.0f} MB, "
         f"{time.monotonic() - started:.0f}s")
    return image.id
