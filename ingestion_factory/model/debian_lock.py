"""images/python/debian.lock: the exact Debian packages of the Python image, per architecture.

`inv python-image --refresh` writes it from the verified Packages indexes of the three suites;
`inv python-image` installs exactly that set, and `inv audit` reads it. One line per package, so a
refresh reads as a diff:

    # inputs: 3f9c0e4b1a2d5e6f
    [amd64]
    source-date-epoch: 1796525669
    apt 2.6.1 amd64 bookworm 3bd5e...

Each package line is `name version architecture suite sha256`: the suite it was resolved from, and the
SHA-256 of its .deb, which the build checks. `source-date-epoch` is the image's SOURCE_DATE_EPOCH (every
file time, the image's `created`): the newest Release date of the suites when the set was resolved, so
the same lock gives the same image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

LOCK_PATH = "images/python/debian.lock"


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    architecture: str  # the .deb's: "amd64", "arm64" or "all"
    suite: str
    sha256: str

    def line(self) -> str:
        return f"{self.name} {self.version} {self.architecture} {self.suite} {self.sha256}"

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.architecture})"


@dataclass(frozen=True)
class PackageSet:
    """The packages of one architecture's Python image."""

    architecture: str  # dpkg's name of the image's architecture
    source_date_epoch: int
    packages: tuple[LockedPackage, ...]

    @property
    def digest(self) -> str:
        """What the image label records: a different set (or epoch) is a different image."""
        text = f"{self.architecture} {self.source_date_epoch}\n" + "".join(p.line() + "\n" for p in self.packages)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def versions(self) -> dict[str, tuple[str, str]]:
        """name -> (version, architecture), as a dpkg database lists them."""
        return {p.name: (p.version, p.architecture) for p in self.packages}


@dataclass(frozen=True)
class DebianLock:
    inputs: str  # digest of what the set is resolved from (suite, packages): another one makes the lock stale
    sets: tuple[PackageSet, ...]
    header: tuple[str, ...] = ()  # the explanatory comment lines written above `inputs`

    def for_architecture(self, architecture: str) -> PackageSet | None:
        return next((s for s in self.sets if s.architecture == architecture), None)

    def with_set(self, package_set: PackageSet, inputs: str) -> DebianLock:
        """This lock with one architecture's set replaced (or added); the others stay only under the same inputs."""
        kept = [s for s in self.sets if s.architecture != package_set.architecture] if inputs == self.inputs else []
        return DebianLock(inputs, tuple(sorted([*kept, package_set], key=lambda s: s.architecture)), self.header)

    def render(self) -> str:
        lines = [*(f"# {line}" if line else "#" for line in self.header), f"# inputs: {self.inputs}"]
        for package_set in self.sets:
            lines += ["", f"[{package_set.architecture}]", f"source-date-epoch: {package_set.source_date_epoch}"]
            lines += [p.line() for p in sorted(package_set.packages, key=lambda p: (p.name, p.architecture))]
        return "\n".join(lines) + "\n"


def parse(text: str, *, source: str = LOCK_PATH) -> DebianLock:
    inputs = ""
    header: list[str] = []
    sets: list[PackageSet] = []
    architecture: str | None = None
    epoch: int | None = None
    packages: list[LockedPackage] = []

    def close() -> None:
        if architecture is not None:
            if epoch is None:
                raise ConfigError(f"{source}: [{architecture}] has no source-date-epoch line",
                                  "rewrite it: inv python-image --refresh")
            sets.append(PackageSet(architecture, epoch, tuple(packages)))

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            comment = line[1:].strip()
            if comment.startswith("inputs:"):
                inputs = comment.partition(":")[2].strip()
            elif architecture is None:
                header.append(comment)
        elif not line:
            continue
        elif line.startswith("[") and line.endswith("]"):
            close()
            architecture, epoch, packages = line[1:-1], None, []
        elif line.startswith("source-date-epoch:") and architecture is not None:
            epoch = int(line.partition(":")[2])
        else:
            fields = line.split()
            if architecture is None or len(fields) != 5 or len(fields[4]) != 64:
                raise ConfigError(f"{source}:{number}: not `name version architecture suite sha256`: {line}",
                                  "rewrite it: inv python-image --refresh")
            packages.append(LockedPackage(*fields))
    close()
    if not inputs:
        raise ConfigError(f"{source} has no `# inputs:` line", "rewrite it: inv python-image --refresh")
    return DebianLock(inputs, tuple(sets), tuple(header))


def read(path: Path) -> DebianLock | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse(text, source=str(path))
