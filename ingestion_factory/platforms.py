"""Target platforms: which CPU architectures images are built for, and what each one needs of the host.

linux/amd64 is the default and keeps today's names. Every other platform gets its own local tags
(`<tag>-arm64`), so both variants of one image can sit in one engine; `inv push` joins them under
the plain tags as one manifest list.
"""

from __future__ import annotations

import platform as host_platform
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
EMULATION_HINT = ("apt-get install qemu-user-static binfmt-support (and, in a container, "
                  "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)")


@dataclass(frozen=True)
class Platform:
    """One OCI platform with the names each tool spells it by."""

    os: str
    architecture: str  # OCI/Docker: amd64, arm64
    variant: str = ""  # OCI: v8 for arm64
    machine: str = ""  # uname -m / manylinux: x86_64, aarch64
    debian: str = ""  # dpkg architecture

    @property
    def name(self) -> str:
        return f"{self.os}/{self.architecture}"

    @property
    def is_default(self) -> bool:
        """The platform whose images keep today's tags (no suffix)."""
        return self == DEFAULT

    @property
    def suffix(self) -> str:
        return "" if self.is_default else f"-{self.architecture}"

    def tag(self, tag: str) -> str:
        """The local tag of this platform's variant: `1.7.0.17` -> `1.7.0.17-arm64`."""
        return tag + self.suffix

    def ref(self, reference: str) -> str:
        """repository[:tag] with this platform's tag: `python:3.11-slim` -> `python:3.11-slim-arm64`."""
        repository, tag = split_ref(reference)
        return f"{repository}:{self.tag(tag)}"

    def wheel_platform(self, lock_platform: str) -> str:
        """uv's --python-platform for this architecture, keeping the lock's glibc: x86_64-manylinux_2_36 ->
        aarch64-manylinux_2_36."""
        _, _, libc = lock_platform.partition("-")
        return f"{self.machine}-{libc or 'manylinux_2_36'}"

    def index_entry(self) -> dict:
        """The `platform` object of a manifest list entry."""
        entry = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            entry["variant"] = self.variant
        return entry

    def __str__(self) -> str:
        return self.name


AMD64 = Platform("linux", "amd64", machine="x86_64", debian="amd64")
ARM64 = Platform("linux", "arm64", variant="v8", machine="aarch64", debian="arm64")
DEFAULT = AMD64
KNOWN = (AMD64, ARM64)
# What people type: docker's names, uname's, with or without `linux/` and arm64's `/v8`.
ALIASES = {
    "linux/amd64": AMD64, "amd64": AMD64, "x86_64": AMD64, "linux/x86_64": AMD64,
    "linux/arm64": ARM64, "linux/arm64/v8": ARM64, "arm64": ARM64, "aarch64": ARM64, "linux/aarch64": ARM64,
}


def parse(value: str) -> Platform:
    key = str(value).strip().lower()
    try:
        return ALIASES[key]
    except KeyError:
        raise ConfigError(f"unknown platform {value!r}",
                          f"supported platforms: {', '.join(p.name for p in KNOWN)}") from None


def parse_all(values) -> tuple[Platform, ...]:
    """Platforms in the order given, without repeats; a comma-separated string counts as several."""
    if isinstance(values, str):
        values = values.split(",")
    found: list[Platform] = []
    for value in values or ():
        for part in str(value).split(","):
            if part.strip():
                chosen = parse(part)
                if chosen not in found:
                    found.append(chosen)
    if not found:
        raise ConfigError("no platform given", f"give at least one, e.g. --platform {DEFAULT.name}")
    return tuple(found)


def split_ref(reference: str) -> tuple[str, str]:
    """`host:5000/name:tag` -> (`host:5000/name`, `tag`); no tag means `latest`."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return reference, "latest"
    return repository, tag


def host() -> Platform:
    machine = host_platform.machine().lower()
    return ALIASES.get(machine, AMD64)


def is_native(target: Platform) -> bool:
    return target.architecture == host().architecture


def emulation_problem(target: Platform, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Why this host cannot run the platform's binaries, or None when it can (natively or by QEMU)."""
    if is_native(target):
        return None
    entry = binfmt_dir / f"qemu-{target.machine}"
    try:
        state = entry.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return f"binfmt for {target.machine} is not registered"
    if state != "enabled":
        return f"binfmt for {target.machine} is registered but {state}"
    return None


def require_emulation(targets, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Before anything is built: every foreign platform must run under QEMU here (ConfigError, exit 2)."""
    for target in targets:
        problem = emulation_problem(target, binfmt_dir)
        if problem:
            raise ConfigError(f"{problem}: cannot build or smoke-test {target.name} images on this "
                              f"{host().name} host", EMULATION_HINT)
