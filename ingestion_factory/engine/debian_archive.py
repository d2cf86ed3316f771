"""The Debian archive the images come from: the suite, <suite>-updates and <suite>-security.

What the newest version of each binary package is, read the way apt reads it: a suite's InRelease must
carry a good signature from the archive keyring (gpgv), and each Packages index must have the size and
SHA-256 that the verified Release file names. Parsed indexes are cached under build/cache/debian/ by
that hash, so a warm run downloads only the three small InRelease files.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from debian import deb822
from debian.debian_support import Version

from ..errors import ConfigError, FactoryError
from ..files import write_atomically
from ..settings import Settings

COMPONENT = "main"  # all the images install from
HTTP_TIMEOUT_S = 60
CACHE_FORMAT = "2"  # bump when the cached JSON changes shape
RECORDS_FORMAT = "1"  # the same for the cached package records (<sha256>.records.json)
# The fields of a Packages paragraph the Python image's lock and build read.
RECORD_FIELDS = ("Package", "Version", "Architecture", "Priority", "Essential", "Pre-Depends", "Depends",
                 "Provides", "Filename", "Size", "SHA256")

# url -> its bytes; injectable so tests need no mirror.
Fetcher = Callable[[str], bytes]


class ArchiveUnverified(FactoryError):
    """A mirror whose Release signature or index hash does not check out: never used, never a warning."""


@dataclass(frozen=True)
class Suite:
    name: str  # "bookworm-security"
    mirror: str  # "http://deb.debian.org/debian-security"

    def url(self, path: str) -> str:
        return f"{self.mirror.rstrip('/')}/dists/{self.name}/{path}"


@dataclass(frozen=True)
class DebianUpdate:
    """An installed package the archive has a newer version of."""

    name: str
    installed: str
    fixed: str
    suite: str  # where the newer version is


@dataclass(frozen=True)
class BinaryPackage:
    """One .deb as a verified Packages index lists it."""

    name: str
    version: str
    architecture: str  # "amd64", or "all"
    suite: str
    filename: str  # its path under the suite's mirror (pool/...)
    sha256: str
    size: int
    priority: str = ""
    essential: bool = False
    pre_depends: str = ""
    depends: str = ""
    provides: str = ""

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], suite: str) -> BinaryPackage:
        return cls(fields["Package"], fields["Version"], fields.get("Architecture", ""), suite, fields["Filename"],
                   fields["SHA256"], int(fields.get("Size", "0")), fields.get("Priority", ""),
                   fields.get("Essential", "") == "yes", fields.get("Pre-Depends", ""), fields.get("Depends", ""),
                   fields.get("Provides", ""))


def suites(settings: Settings) -> tuple[Suite, ...]:
    """The suite and its -updates from debian_mirror, its -security from debian_security_mirror."""
    suite = settings.debian_suite
    return (Suite(suite, settings.debian_mirror), Suite(f"{suite}-updates", settings.debian_mirror),
            Suite(f"{suite}-security", settings.debian_security_mirror))


def apt_sources(settings: Settings) -> str:
    """The image's /etc/apt/sources.list.d/debian.sources (deb822): all three suites, signed by the keyring
    the image's own debian-archive-keyring package installs."""
    stanzas = []
    by_mirror: dict[str, list[str]] = {}
    for suite in suites(settings):
        by_mirror.setdefault(suite.mirror, []).append(suite.name)
    for mirror, names in by_mirror.items():
        stanzas.append(f"Types: deb\nURIs: {mirror}\nSuites: {' '.join(names)}\nComponents: {COMPONENT}\n"
                       f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    return "\n".join(stanzas)


def require_keyring(settings: Settings) -> Path:
    keyring = Path(settings.debian_keyring)
    if not keyring.is_file():
        raise ConfigError(f"the Debian archive keyring {keyring} is missing: nothing could verify the mirror",
                          "install it (`apt-get install debian-archive-keyring`), or point factory.debian_keyring "
                          "at the keyring that signs your mirror")
    return keyring


def http_get(url: str) -> bytes:
    if url.startswith("file://"):  # a mirror on disk (air-gapped sites)
        return Path(url.removeprefix("file://")).read_bytes()
    import requests  # only when the archive is read: `provision.sh` asks the Python image's status on every run

    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as exc:
        raise FactoryError(f"cannot read {url}: {exc}", "check the mirror settings (factory.debian_mirror, "
                           "factory.debian_security_mirror)") from None
    if response.status_code != 200:
        raise FactoryError(f"{url} answered HTTP {response.status_code}",
                           "check factory.debian_suite and the mirror settings")
    return response.content


def verify_release(signed: bytes, keyring: Path, *, source: str = "InRelease") -> bytes:
    """The content of a clear-signed InRelease that gpgv vouches for (only that part is trusted)."""
    gpgv = shutil.which("gpgv")
    if not gpgv:
        raise ConfigError("gpgv is not installed: the Debian archive's signatures cannot be checked",
                          "install it: `apt-get install gpgv`")
    with tempfile.TemporaryDirectory(prefix="factory-release-") as scratch:
        signed_path, payload_path = Path(scratch) / "InRelease", Path(scratch) / "Release"
        signed_path.write_bytes(signed)
        completed = subprocess.run([gpgv, "--keyring", str(keyring), "--output", str(payload_path), str(signed_path)],
                                   capture_output=True, text=True)
        if completed.returncode != 0 or not payload_path.is_file():
            reason = (completed.stderr.strip().splitlines() or ["no good signature"])[-1]
            raise ArchiveUnverified(f"{source} does not verify against {keyring}: {reason}",
                                    "the mirror is not the Debian archive, or it is signed with another key "
                                    "(set factory.debian_keyring to that key's keyring)")
        return payload_path.read_bytes()


@dataclass(frozen=True)
class IndexEntry:
    path: str
    sha256: str
    size: int


def release_entries(payload: bytes, *, source: str, now: datetime | None = None) -> dict[str, IndexEntry]:
    """The SHA-256 list of a verified Release file; a Release past its Valid-Until is refused (a replay)."""
    release = deb822.Release(payload.decode("utf-8", errors="replace"))
    valid_until = release.get("Valid-Until")
    if valid_until:
        expiry = parsedate_to_datetime(valid_until)
        if expiry < (now or datetime.now(timezone.utc)):
            raise ArchiveUnverified(f"{source} expired on {valid_until}: the mirror serves an old copy",
                                    "check that the mirror is being updated")
    entries = {}
    for line in release.get("SHA256", []):
        entries[line["name"]] = IndexEntry(line["name"], line["sha256"], int(line["size"]))
    if not entries:
        raise ArchiveUnverified(f"{source} lists no SHA256 hashes")
    return entries


def check_index(data: bytes, entry: IndexEntry, *, source: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.size or digest != entry.sha256:
        raise ArchiveUnverified(f"{source} does not match its Release file (size {len(data)}, sha256 {digest[:16]}...; "
                                f"expected {entry.size}, {entry.sha256[:16]}...)",
                                "the mirror is being updated or was tampered with; try again later")


def parse_packages(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """A Packages index as binary package -> its newest version there, and binary -> its source package
    (where the names differ: advisories name source packages)."""
    newest: dict[str, str] = {}
    sources: dict[str, str] = {}
    for paragraph in deb822.Packages.iter_paragraphs(io.StringIO(text), use_apt_pkg=False):
        name, version = paragraph.get("Package"), paragraph.get("Version")
        if not name or not version:
            continue
        if name not in newest or Version(version) > Version(newest[name]):
            newest[name] = version
            source = paragraph.get("Source", "").split(" ")[0]
            if source and source != name:
                sources[name] = source
    return newest, sources


def paragraphs(text: str) -> Iterable[dict[str, str]]:
    """A Packages index's paragraphs, with the one-line fields of RECORD_FIELDS (continuation lines, which
    only descriptions have among them, are skipped). Much faster than deb822 over 60,000 paragraphs."""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if not line or line[0] in " \t":
                continue
            key, _, value = line.partition(":")
            if key in RECORD_FIELDS:
                fields[key] = value.strip()
        if "Package" in fields and "Version" in fields and "Filename" in fields and "SHA256" in fields:
            yield fields


class Archive:
    """The configured suites' package indexes for one architecture, verified and cached."""

    def __init__(self, settings: Settings, *, cache_dir: Path | None = None, fetch: Fetcher = http_get,
                 verify: Callable[..., bytes] = verify_release):
        self.settings = settings
        self.suites = suites(settings)
        self.cache_dir = cache_dir or settings.output_path / "cache" / "debian"
        self.fetch = fetch
        self.verify = verify  # (signed bytes, keyring, source=url) -> the verified content
        self._indexes: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self._sources: dict[str, dict[str, str]] = {}
        self._releases: dict[str, tuple[dict[str, IndexEntry], int]] = {}  # suite -> (hashes, Date as epoch)
        self._binaries: dict[str, dict[str, list[BinaryPackage]]] = {}

    def indexes(self, architecture: str) -> list[tuple[str, dict[str, str]]]:
        """(suite name, package -> version) for each suite, in the order of `suites`."""
        if architecture not in self._indexes:
            keyring = require_keyring(self.settings)
            indexes, sources = [], {}
            for suite in self.suites:
                packages, suite_sources = self._index(suite, architecture, keyring)
                indexes.append((suite.name, packages))
                sources.update(suite_sources)
            self._indexes[architecture], self._sources[architecture] = indexes, sources
        return self._indexes[architecture]

    def source_of(self, name: str, architecture: str) -> str:
        """The source package a binary package is built from (what Debian advisories name)."""
        self.indexes(architecture)
        return self._sources[architecture].get(name, name)

    def binary_packages(self, architecture: str) -> dict[str, list[BinaryPackage]]:
        """Every package of the three suites for `architecture` (and `all`): name -> its versions there,
        each with the pool path, size and SHA-256 its verified index gives."""
        if architecture not in self._binaries:
            keyring = require_keyring(self.settings)
            found: dict[str, list[BinaryPackage]] = {}
            for suite in self.suites:
                for package in self._records(suite, architecture, keyring):
                    found.setdefault(package.name, []).append(package)
            self._binaries[architecture] = found
        return self._binaries[architecture]

    def release_date(self, suite: Suite) -> int:
        """When the suite's verified Release file was written (its Date), as a Unix time."""
        return self._release(suite, require_keyring(self.settings))[1]

    def package_url(self, package: BinaryPackage) -> str:
        mirror = next(s.mirror for s in self.suites if s.name == package.suite)
        return f"{mirror.rstrip('/')}/{package.filename}"

    def _release(self, suite: Suite, keyring: Path) -> tuple[dict[str, IndexEntry], int]:
        if suite.name not in self._releases:
            release_url = suite.url("InRelease")
            payload = self.verify(self.fetch(release_url), keyring, source=release_url)
            date = deb822.Release(payload.decode("utf-8", errors="replace")).get("Date")
            self._releases[suite.name] = (release_entries(payload, source=release_url),
                                          int(parsedate_to_datetime(date).timestamp()) if date else 0)
        return self._releases[suite.name]

    def _entry(self, suite: Suite, architecture: str, keyring: Path) -> IndexEntry:
        path = f"{COMPONENT}/binary-{architecture}/Packages.xz"
        entry = self._release(suite, keyring)[0].get(path)
        if entry is None:
            raise FactoryError(f"{suite.url('InRelease')} lists no {path}",
                               f"is {architecture} published in {suite.name}?")
        return entry

    def _download_index(self, suite: Suite, entry: IndexEntry) -> str:
        index_url = suite.url(entry.path)
        compressed = self.fetch(index_url)
        check_index(compressed, entry, source=index_url)
        return lzma.decompress(compressed).decode("utf-8", errors="replace")

    def _index(self, suite: Suite, architecture: str, keyring: Path) -> tuple[dict[str, str], dict[str, str]]:
        entry = self._entry(suite, architecture, keyring)
        cached = self.cache_dir / f"{entry.sha256}.json"
        try:
            data = json.loads(cached.read_text())
            if data.get("format") == CACHE_FORMAT:
                return data["packages"], data["sources"]
        except (OSError, ValueError):
            pass
        packages, sources = parse_packages(self._download_index(suite, entry))
        write_atomically(cached, json.dumps({"format": CACHE_FORMAT, "suite": suite.name,
                                             "url": suite.url(entry.path), "packages": packages,
                                             "sources": sources}))
        return packages, sources

    def _records(self, suite: Suite, architecture: str, keyring: Path) -> list[BinaryPackage]:
        entry = self._entry(suite, architecture, keyring)
        cached = self.cache_dir / f"{entry.sha256}.records.json"
        try:
            data = json.loads(cached.read_text())
            if data.get("format") == RECORDS_FORMAT:
                return [BinaryPackage.from_fields(fields, suite.name) for fields in data["records"]]
        except (OSError, ValueError, KeyError):
            pass
        records = list(paragraphs(self._download_index(suite, entry)))
        write_atomically(cached, json.dumps({"format": RECORDS_FORMAT, "suite": suite.name,
                                             "url": suite.url(entry.path), "records": records}))
        return [BinaryPackage.from_fields(fields, suite.name) for fields in records]

    def updates(self, installed: Mapping[str, str], architecture: str) -> list[DebianUpdate]:
        """Installed packages with a newer version in any of the suites, with the newest one and its suite."""
        found = []
        indexes = self.indexes(architecture)
        for name, version in sorted(installed.items()):
            best: tuple[Version, str] | None = None
            for suite, packages in indexes:
                candidate = packages.get(name)
                if candidate and (best is None or Version(candidate) > best[0]):
                    best = (Version(candidate), suite)
            if best is not None and best[0] > Version(version):
                found.append(DebianUpdate(name, version, str(best[0]), best[1]))
        return found


def dpkg_status(text: str) -> dict[str, tuple[str, str]]:
    """/var/lib/dpkg/status as package -> (version, architecture), installed packages only."""
    found = {}
    for paragraph in deb822.Deb822.iter_paragraphs(io.StringIO(text), use_apt_pkg=False):
        if paragraph.get("Status", "").endswith(" installed") and paragraph.get("Package"):
            found[paragraph["Package"]] = (paragraph.get("Version", ""), paragraph.get("Architecture", ""))
    return found


def by_architecture(packages: Iterable[tuple[str, str, str]], default: str) -> dict[str, dict[str, str]]:
    """(name, version, architecture) as architecture -> name -> version, `all` counted as `default`."""
    grouped: dict[str, dict[str, str]] = {}
    for name, version, architecture in packages:
        grouped.setdefault(default if architecture in ("", "all") else architecture, {})[name] = version
    return grouped
